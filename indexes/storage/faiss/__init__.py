"""FAISS dense indexes: built from a factory string, searched by FAISS, a compiled CPU loop or torch on CUDA."""
