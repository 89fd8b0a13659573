"""Building FAISS indexes from factory strings: checked before any encoding, trained and filled in one place.

Every index is ``IDMap2`` over an inner-product index of the factory string (``backend.py`` says why); a build runs
on the GPU when one is asked for and present, and the result comes back to the CPU to be saved.
"""

from __future__ import annotations

import re
import time

import numpy as np

from retrieval.core.errors import HybridError, UnavailableError


class FaissBuildError(HybridError, ValueError):
    """The factory string or its training needs cannot be met; the message says what to change."""


class FaissMissingError(UnavailableError, RuntimeError):
    """FAISS is an extra (CPU or GPU build), so a plain install has none."""


def require_faiss():  # type: ignore[no-untyped-def]
    """The faiss module, or one line saying which extra installs it."""
    try:
        import faiss
    except ImportError as exc:
        why = "is not installed" if isinstance(exc, ModuleNotFoundError) else f"cannot be loaded ({exc})"
        raise FaissMissingError(
            f"dense retrievers need FAISS, which {why}: pip install 'hybrid-retrieval[cpu]' "
            "(or 'hybrid-retrieval[gpu]' on a CUDA 12 machine)"
        ) from None
    return faiss


_faiss = require_faiss


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


def _with_ids(factory: str) -> str:
    return factory if factory.startswith("IDMap") else f"IDMap2,{factory}"


def _new_index(factory: str, dimension: int):  # type: ignore[no-untyped-def]
    """An empty ID-mapped inner-product index of ``factory`` (FAISS raises RuntimeError for a bad string)."""
    faiss = _faiss()
    return faiss.index_factory(dimension, _with_ids(factory), faiss.METRIC_INNER_PRODUCT)


def needs_training(factory: str, dimension: int) -> bool:
    return not _new_index(factory, dimension).is_trained


def check_factory(factory: str, dimension: int, count: int) -> None:
    """Reject impossible set-ups before hours of encoding are spent."""
    try:
        probe = _new_index(factory, dimension)
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
    """Vector ``i`` gets id (docno) ``i``."""
    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    check_factory(factory, vectors.shape[1], vectors.shape[0])
    index = _to_gpu(_new_index(factory, vectors.shape[1]), device)
    if not index.is_trained:
        index.train(vectors)
    index.add_with_ids(vectors, np.arange(len(vectors), dtype=np.int64))
    return _to_cpu(index)


class IndexBuilder:
    """Vectors in docno order, a chunk at a time, for a build that encodes as it goes (issue 12, item 2).

    A flat index takes each chunk as it arrives, so a build holds every vector once (in the index) rather than twice
    (the chunks, then their concatenation) and finishes with nothing left to add. An index with no training and no
    graph (``Flat``) comes out the same whether it is given its vectors at once or in chunks. Any other type keeps the
    chunks until :meth:`finish`: training then sees every vector, and an HNSW graph is built in one ``add``, as a
    one-shot :func:`build` does, so the index is the same as before.
    """

    def __init__(self, factory: str, dimension: int, device: str = "cpu") -> None:
        self.factory, self.dimension, self.device = factory, dimension, device
        self.count = 0
        self.seconds = 0.0  # spent adding and finishing: the build's indexing time, apart from encoding
        self._parts: list[np.ndarray] = []
        self._index = _to_gpu(_new_index(factory, dimension), device) if factory.strip() == "Flat" else None

    @property
    def streams(self) -> bool:
        """Whether chunks go into the index as they come (a flat index) rather than at :meth:`finish`."""
        return self._index is not None

    def add(self, vectors: np.ndarray) -> None:
        started = time.perf_counter()
        vectors = np.ascontiguousarray(vectors, dtype=np.float32).reshape(-1, self.dimension)
        if self._index is not None:
            self._index.add_with_ids(vectors, np.arange(self.count, self.count + len(vectors), dtype=np.int64))  # type: ignore[attr-defined]
        else:
            self._parts.append(vectors)
        self.count += len(vectors)
        self.seconds += time.perf_counter() - started

    def finish(self) -> object:
        started = time.perf_counter()
        if self._index is not None:
            index = _to_cpu(self._index)
        else:
            vectors = np.concatenate(self._parts) if self._parts else np.zeros((0, self.dimension), np.float32)
            self._parts = []
            index = build(vectors, self.factory, self.device)
        self.seconds += time.perf_counter() - started
        return index


def empty(factory: str, dimension: int) -> object:
    """An index with no vectors, for an index created empty; only types that need no training."""
    check_factory(factory, dimension, 1 << 30)
    if needs_training(factory, dimension):
        raise FaissBuildError(f"{factory!r} must be trained on vectors: create the index from a corpus, or use 'Flat' or 'HNSW32'")
    return _new_index(factory, dimension)
