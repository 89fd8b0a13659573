"""FAISS dense indexes: built from a factory string, on the GPU when one is present, saved for the CPU.

Vectors are L2-normalized by the encoder and every index uses inner product, so a hit's score is
its cosine similarity (exactly for ``Flat`` and ``HNSW``; approximately for quantized indexes).
Row ``i`` of the index is the document with ``docno == i`` in the document store.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

FILE = "index.faiss"


class FaissBuildError(ValueError):
    """The factory string or its training needs cannot be met; the message says what to change."""


def _faiss():  # type: ignore[no-untyped-def]
    import faiss

    return faiss


def gpu_count() -> int:
    faiss = _faiss()
    return int(faiss.get_num_gpus()) if hasattr(faiss, "get_num_gpus") else 0


def _to_gpu(index, device: str):  # type: ignore[no-untyped-def]
    """Move to all GPUs when asked for and possible; types without GPU support stay on the CPU."""
    if device == "cpu" or gpu_count() == 0:
        return index
    faiss = _faiss()
    try:
        return faiss.index_cpu_to_all_gpus(index)
    except RuntimeError:
        return index  # e.g. HNSW has no GPU implementation


def _to_cpu(index):  # type: ignore[no-untyped-def]
    faiss = _faiss()
    if hasattr(faiss, "index_gpu_to_cpu") and "Gpu" in type(index).__name__:
        return faiss.index_gpu_to_cpu(index)
    return index


def check_factory(factory: str, dimension: int, count: int) -> None:
    """Reject impossible set-ups before hours of encoding are spent."""
    faiss = _faiss()
    try:
        probe = faiss.index_factory(dimension, factory, faiss.METRIC_INNER_PRODUCT)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else "invalid"
        raise FaissBuildError(f"invalid FAISS factory string {factory!r} for dimension {dimension}: {first}") from None
    ivf = re.search(r"IVF(\d+)", factory)
    if ivf and int(ivf.group(1)) > count:
        raise FaissBuildError(
            f"{factory!r} needs at least {ivf.group(1)} documents to train its {ivf.group(1)} lists; "
            f"the corpus has {count}: use fewer lists (about 4*sqrt(N)) or 'Flat'"
        )
    pq = re.search(r"PQ(\d+)", factory)
    if pq and not probe.is_trained and count < 256:
        raise FaissBuildError(f"{factory!r} needs at least 256 documents to train its product quantizer; use 'Flat'")


def build(vectors: np.ndarray, factory: str, device: str = "cpu") -> object:
    faiss = _faiss()
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    check_factory(factory, vectors.shape[1], vectors.shape[0])
    index = faiss.index_factory(vectors.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
    index = _to_gpu(index, device)
    if not index.is_trained:
        index.train(vectors)
    index.add(vectors)
    return _to_cpu(index)


def save(index: object, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / FILE
    _faiss().write_index(index, str(path))
    return path


class FaissIndex:
    """A loaded index; parameters are fixed at load time because FAISS searches are only thread-safe for reads."""

    def __init__(self, folder: Path, device: str = "cpu", nprobe: int = 32, ef_search: int = 256) -> None:
        faiss = _faiss()
        cpu_index = faiss.read_index(str(folder / FILE))
        self.ntotal = int(cpu_index.ntotal)
        self.dimension = int(cpu_index.d)
        space = faiss.ParameterSpace()
        for name, value in (("nprobe", nprobe), ("efSearch", ef_search)):
            try:
                space.set_index_parameter(cpu_index, name, value)
            except RuntimeError:
                pass  # parameter does not apply to this index type
        self._index = _to_gpu(cpu_index, device)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        k = max(1, min(k, self.ntotal))
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        scores, rows = self._index.search(queries, k)
        return scores, rows
