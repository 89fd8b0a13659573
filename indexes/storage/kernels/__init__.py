"""Compiled helpers the in-memory searches share: the top-k of a score array, per-row flags."""
