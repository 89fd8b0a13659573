"""Pre-encoded document vectors on disk (hybrid encode, build --vectors)."""
