"""Lucene through Pyserini and Anserini: BM25 and impact indexes, their writers, direct searches, filters."""
