"""Learned-sparse impacts searched in memory."""
