"""FAISS dense indexes: built from a factory string, on the GPU when one is present, saved for the CPU.

Vectors are L2-normalized by the encoder and every index uses inner product, so a hit's score is
its cosine similarity (exactly for ``Flat`` and ``HNSW``; approximately for quantized indexes).
Every index is wrapped in ``IDMap2``: a vector's id is its document version's ``docno``, stable across
adds and removals, and stored in the index file itself.

Live writes append vectors; deleted or replaced versions stay in the index as tombstones that
searches filter out (an ``IDSelectorBitmap`` where the index type supports selectors, else
over-fetching and filtering), until :meth:`FaissIndex.compact` removes them: with ``remove_ids``
(Flat, IVF, IVF-PQ, PQ) or, for types that cannot remove (HNSW), by re-adding the live vectors to an
emptied copy of the index.
"""

from __future__ import annotations

import math
import os
import re
import time
from pathlib import Path

import numpy as np

from indexes.storage.docstore.layout import fsync_path
from indexes.storage.faiss import flat_kernel
from indexes.storage.faiss.flat_kernel import FlatKernel
from indexes.storage.faiss.locks import ReadWriteLock
from indexes.storage.faiss.torch_flat import TorchFlat
from retrieval.core.errors import HybridError, UnavailableError

FILE = "index.faiss"


def exact_scan_limit(total: int, ef_search: int) -> int:
    """Up to how many filter matches an exact scan beats a graph search with a selector.

    A scan costs one distance per match, ``s * N`` for a filter keeping a share ``s`` of ``N`` vectors; a
    filtered HNSW search visits about ``efSearch / s`` vectors to find ``efSearch`` matches. They cross at
    ``s * N = sqrt(efSearch * N)`` matches: 5,060 at 100k vectors and efSearch 256, 16,000 at 1M (measured
    in ``eval/bench/filters.py``). Never below 1,000, where a scan takes well under a millisecond.
    """
    return max(1000, math.isqrt(max(total, 1) * max(ef_search, 1)))


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


def save(index: object, folder: Path) -> Path:
    """Write atomically (temporary file, fsync, rename): a crash leaves the old file or the new one."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / FILE
    tmp = folder / (FILE + ".tmp")
    try:
        _faiss().write_index(_to_cpu(index), str(tmp))
        fsync_path(tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a half-written file (a full disk) would only hold on to the space
        raise
    os.replace(tmp, path)
    return path


def _flat_contents(index) -> tuple[np.ndarray, np.ndarray]:  # type: ignore[no-untyped-def]
    """An ID-mapped flat index's vectors and docnos, in row order."""
    faiss = _faiss()
    inner = faiss.downcast_index(index.index)
    return inner.reconstruct_n(0, inner.ntotal), faiss.vector_to_array(index.id_map).astype(np.int64)


def _flat_searcher(index, device: str, flat: str, dtype: str) -> TorchFlat | FlatKernel | None:  # type: ignore[no-untyped-def]
    """What searches a flat index under ``flat`` (see :class:`FaissIndex`) instead of FAISS, or None."""
    faiss = _faiss()
    if flat not in FLAT_ENGINES:
        raise ValueError(f"unknown dense flat search engine {flat!r}; use one of {', '.join(FLAT_ENGINES)}")
    inner = faiss.downcast_index(index.index)
    if flat == "faiss" or not isinstance(inner, faiss.IndexFlat) or inner.metric_type != faiss.METRIC_INNER_PRODUCT:
        return None
    cuda = device == "cuda" and _torch_cuda()
    if flat == "auto":  # torch on CUDA; on the CPU a compiled loop reads the rows faster than FAISS (flat_kernel.py)
        if not cuda and not flat_kernel.available():
            return None
        flat = "torch" if cuda else "numba"
    if flat == "numba":
        return FlatKernel(index)
    vectors, docnos = _flat_contents(index)
    return TorchFlat(vectors, docnos, "cuda" if cuda else "cpu", dtype)


def _torch_cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


FLAT_ENGINES = ("auto", "faiss", "torch", "numba")


class FaissIndex:
    """A loaded index: concurrent searches, serialized appends and compactions.

    Search parameters (nprobe, efSearch) are fixed at load time; a search can be limited to the
    docnos a reader's point-in-time view holds (``bound`` and ``bitmap``).

    A flat inner-product index is searched by something faster than FAISS's flat kernel where there is one:
    ``flat="auto"`` takes a torch mirror of the vectors on CUDA (:mod:`indexes.storage.faiss.torch_flat`; near the
    memory-bandwidth bound, where FAISS's GPU flat kernel is not) and a compiled loop over FAISS's own rows on
    the CPU (:mod:`indexes.storage.faiss.flat_kernel`); ``"torch"`` and ``"numba"`` choose one, ``"faiss"`` neither.
    ``flat_dtype`` is the torch mirror's storage (fp32, fp16, bf16). Other index types (HNSW, IVF, PQ) always go
    through FAISS. The FAISS index then stays on the CPU, as the file's source for saves, ``reconstruct`` and
    compaction.
    """

    def __init__(self, folder: Path, device: str = "cpu", nprobe: int = 32, ef_search: int = 256,
                 flat: str = "auto", flat_dtype: str = "fp32") -> None:
        faiss = _faiss()
        cpu_index = faiss.read_index(str(folder / FILE))
        if not isinstance(cpu_index, faiss.IndexIDMap2):
            raise FaissBuildError(f"{folder / FILE}: not an ID-mapped index (built by an older version); rebuild the index")
        self.dimension = int(cpu_index.d)
        self.nprobe, self.ef_search = nprobe, ef_search
        space = faiss.ParameterSpace()
        for name, value in (("nprobe", nprobe), ("efSearch", ef_search)):
            try:
                space.set_index_parameter(cpu_index, name, value)
            except RuntimeError:
                pass  # parameter does not apply to this index type
        ids = faiss.vector_to_array(cpu_index.id_map)
        self.max_docno = int(ids[-1]) if len(ids) else -1  # ids only ever grow: the last is the largest
        self._mirror = _flat_searcher(cpu_index, device, flat, flat_dtype)
        self._index = cpu_index if self._mirror is not None else _to_gpu(cpu_index, device)
        self._on_gpu = self._index is not cpu_index
        self._selectors = not self._on_gpu  # turned off at the first type that refuses them (e.g. PQ)
        self._reconstructs = True  # turned off at the first type that cannot return stored vectors
        self._lock = ReadWriteLock()

    @property
    def ntotal(self) -> int:
        return int(self._index.ntotal)

    @property
    def engine(self) -> str:
        """What searches run on: ``faiss-cpu``, ``faiss-gpu``, ``numba-cpu`` or ``torch-<dtype>-<device>``."""
        if self._mirror is not None:
            if isinstance(self._mirror, FlatKernel):
                return "numba-cpu"
            return f"torch-{self._mirror.dtype_name}-{self._mirror.device.type}"
        return "faiss-gpu" if self._on_gpu else "faiss-cpu"

    def _params(self, bitmap: np.ndarray):  # type: ignore[no-untyped-def]
        faiss = _faiss()
        selector = faiss.IDSelectorBitmap(len(bitmap), faiss.swig_ptr(bitmap))
        inner = faiss.downcast_index(self._index.index)
        if isinstance(inner, faiss.IndexIVF):
            params = faiss.SearchParametersIVF(sel=selector, nprobe=self.nprobe)
        elif isinstance(inner, faiss.IndexHNSW):
            params = faiss.SearchParametersHNSW(sel=selector, efSearch=self.ef_search)
        else:
            params = faiss.SearchParameters(sel=selector)
        params.keep_alive = (selector, bitmap)  # the C++ side only borrows them
        return params

    def search(self, queries: np.ndarray, k: int, bound: int | None = None,
               bitmap: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` (scores, docnos; -1 pads) among docnos below ``bound`` whose ``bitmap`` bit is set."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        with self._lock.read():
            total = self.ntotal
            k = max(1, min(k, max(total, 1)))
            if total == 0:
                return np.full((len(queries), k), -np.inf, np.float32), np.full((len(queries), k), -1, np.int64)
            if self._mirror is not None:
                return self._mirror.search(queries, k, bound, bitmap)
            if bitmap is None and (bound is None or self.max_docno < bound):
                return self._index.search(queries, k)
            if bitmap is not None and self._selectors:
                try:
                    return self._index.search(queries, k, params=self._params(bitmap))
                except RuntimeError:
                    self._selectors = False
            visible = int(np.unpackbits(bitmap, bitorder="little").sum()) if bitmap is not None else min(bound or total, total)
            fetch = min(total, k + max(0, total - visible))
            scores, docnos = self._index.search(queries, fetch)
        keep = docnos >= 0
        if bound is not None:
            keep &= docnos < bound
        if bitmap is not None:
            bits = np.unpackbits(bitmap, bitorder="little")
            keep &= np.where(docnos < len(bits), bits[np.clip(docnos, 0, len(bits) - 1)], 0).astype(bool)
        out_scores = np.full((len(queries), k), -np.inf, np.float32)
        out_docnos = np.full((len(queries), k), -1, np.int64)
        for q in range(len(queries)):
            kept = np.flatnonzero(keep[q])[:k]
            out_scores[q, : len(kept)] = scores[q, kept]
            out_docnos[q, : len(kept)] = docnos[q, kept]
        return out_scores, out_docnos

    def search_allowed(self, queries: np.ndarray, k: int, allowed: np.ndarray, exact_limit: int | None = None
                       ) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` among the docnos whose ``allowed`` bool is set (a metadata filter's matches in one view).

        Few matches (up to ``exact_limit``) are scored exactly, against their stored vectors, as
        Qdrant and Elasticsearch switch to an exact scan for selective filters: a graph or IVF search with a
        selector finds too few of them. More matches go through the index with a selector (or over-fetching
        where the type has none); if that still returns fewer than ``min(k, matches)`` hits, the matches are
        scanned exactly after all, so a filter never costs hits that exist. Types that cannot return their
        stored vectors go through the index only.
        """
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        if isinstance(self._mirror, FlatKernel):  # exact, reading only the matches' rows
            with self._lock.read():
                return self._mirror.search_allowed(queries, k, allowed)
        if self._mirror is not None:  # exact over the matches already, at any selectivity
            return self.search(queries, k, None, np.packbits(allowed, bitorder="little"))
        docnos = np.flatnonzero(allowed)
        scannable = self._reconstructs
        limit = exact_scan_limit(self.ntotal, self.ef_search) if exact_limit is None else exact_limit
        if scannable and len(docnos) <= limit:
            try:
                return self._scan(queries, k, docnos)
            except FaissBuildError:  # this index type keeps no vectors to return (e.g. PQ on the GPU)
                self._reconstructs = scannable = False
        scores, rows = self.search(queries, k, None, np.packbits(allowed, bitorder="little"))
        if scannable and (rows[:, : min(k, len(docnos))] < 0).any():
            try:
                return self._scan(queries, k, docnos)
            except FaissBuildError:
                self._reconstructs = False
        return scores, rows

    def _scan(self, queries: np.ndarray, k: int, docnos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Exact inner products with the stored vectors of ``docnos``, by FAISS's own brute-force kernel (the flat
        index's arithmetic, so the scores are the ones a flat index gives); -1 pads, as :meth:`search`."""
        out_scores = np.full((len(queries), k), -np.inf, np.float32)
        out_docnos = np.full((len(queries), k), -1, np.int64)
        if not len(docnos):
            return out_scores, out_docnos
        faiss = _faiss()
        width = min(k, len(docnos))
        scores, rows = faiss.knn(queries, self.reconstruct(docnos), width, metric=faiss.METRIC_INNER_PRODUCT)
        for q in range(len(queries)):
            found = rows[q] >= 0
            # Best first; equal scores by docno, as the flat index keeps the first-added.
            order = sorted(range(int(found.sum())), key=lambda i: (-scores[q, i], docnos[rows[q, i]]))
            out_scores[q, : len(order)] = scores[q, order]
            out_docnos[q, : len(order)] = docnos[rows[q, order]]
        return out_scores, out_docnos

    def reconstruct(self, docnos: np.ndarray) -> np.ndarray:
        """The stored vectors of ``docnos`` (decoded: exact for flat and HNSW, approximate for PQ/SQ).

        IVF lists learn where each vector sits only on demand: the first call builds a hash-table
        direct map (which, unlike an array map, survives removals), under the write lock.
        """
        faiss = _faiss()
        keys = np.ascontiguousarray(docnos, dtype=np.int64)
        if not len(keys):
            return np.zeros((0, self.dimension), np.float32)
        with self._lock.read():
            try:
                return np.asarray(self._index.reconstruct_batch(keys), dtype=np.float32)
            except RuntimeError:
                if self._on_gpu:
                    raise FaissBuildError("this FAISS index cannot return stored vectors on the GPU; "
                                          "dense PRF needs a flat or HNSW index there") from None
        try:
            inner = faiss.extract_index_ivf(self._index.index)
        except RuntimeError:
            raise FaissBuildError("this FAISS index type cannot return stored vectors; dense PRF needs "
                                  "a flat, HNSW or IVF index") from None
        with self._lock.write():
            inner.set_direct_map_type(faiss.DirectMap.Hashtable)
        with self._lock.read():
            return np.asarray(self._index.reconstruct_batch(keys), dtype=np.float32)

    def add(self, vectors: np.ndarray, docnos: np.ndarray) -> None:
        """Append vectors with their docnos (each larger than any already present)."""
        if not len(docnos):
            return
        if int(docnos[0]) <= self.max_docno:
            raise ValueError(f"docno {int(docnos[0])} is not above the index's largest, {self.max_docno}")
        with self._lock.write():
            self._index.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), np.ascontiguousarray(docnos, dtype=np.int64))
            self._follow((vectors, docnos))
            self.max_docno = int(docnos[-1])

    def compact(self, dead: np.ndarray) -> bool:
        """Remove the vectors of ``dead`` docnos for good; False if this index type can do neither way."""
        faiss = _faiss()
        dead = np.ascontiguousarray(dead, dtype=np.int64)
        if not len(dead):
            return True
        with self._lock.write():
            try:
                self._index.remove_ids(faiss.IDSelectorBatch(dead))
            except RuntimeError:
                pass
            else:
                self._follow()
                return True
            cpu = _to_cpu(self._index)
            ids = faiss.vector_to_array(cpu.id_map)
            try:
                vectors = cpu.index.reconstruct_n(0, cpu.ntotal)
            except RuntimeError:
                return False
            keep = ~np.isin(ids, dead)
            fresh = faiss.clone_index(cpu)
            fresh.reset()
            fresh.add_with_ids(np.ascontiguousarray(vectors[keep]), np.ascontiguousarray(ids[keep]))
            self._index = _to_gpu(fresh, "cuda") if self._on_gpu else fresh
            self._follow()
            return True

    def _follow(self, appended: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        """Bring the flat searcher up to the FAISS index after an add (``appended``: its vectors and docnos) or a
        compaction, under the write lock: the torch mirror copies the new rows in (or all rows again), the flat
        kernel takes new views of FAISS's memory, which may have moved."""
        if isinstance(self._mirror, TorchFlat):
            if appended is not None:
                self._mirror.append(*appended)
            else:
                self._mirror.rebuild(*_flat_contents(self._index))
        elif self._mirror is not None:
            self._mirror.refresh(self._index)

    def save(self, folder: Path) -> Path:
        with self._lock.read():
            return save(self._index, folder)
