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
from pathlib import Path

import numpy as np

from indexes.storage.docstore.layout import fsync_path
from indexes.storage.faiss import flat_kernel
from indexes.storage.faiss.factory import (  # noqa: F401 (re-exported: the build side's names, as before)
    FaissBuildError,
    FaissMissingError,
    IndexBuilder,
    _faiss,
    _to_cpu,
    _to_gpu,
    build,
    check_factory,
    empty,
    gpu_count,
    needs_training,
    require_faiss,
)
from indexes.storage.faiss.flat_kernel import FlatKernel
from indexes.storage.faiss.locks import ReadWriteLock
from indexes.storage.faiss.torch_flat import TorchFlat

FILE = "index.faiss"


def exact_scan_limit(total: int, ef_search: int) -> int:
    """Up to how many filter matches an exact scan beats a graph search with a selector.

    A scan costs one distance per match, ``s * N`` for a filter keeping a share ``s`` of ``N`` vectors; a
    filtered HNSW search visits about ``efSearch / s`` vectors to find ``efSearch`` matches. They cross at
    ``s * N = sqrt(efSearch * N)`` matches: 5,060 at 100k vectors and efSearch 256, 16,000 at 1M (measured
    in ``eval/bench/filters.py``). Never below 1,000, where a scan takes well under a millisecond.
    """
    return max(1000, math.isqrt(max(total, 1) * max(ef_search, 1)))


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
ONE_QUERY_ONE_THREAD = True  # FaissIndex.search of a single query on one OpenMP thread (benches may turn it off)
DEFAULT_NPROBE, DEFAULT_EF_SEARCH = 32, 256  # an index opened without tuned values (or tuning them: hybrid index tune)


def _ivf(inner) -> bool:  # type: ignore[no-untyped-def]
    try:
        _faiss().extract_index_ivf(inner)
    except RuntimeError:
        return False
    return True


class FaissIndex:
    """A loaded index: concurrent searches, serialized appends and compactions.

    Search parameters (nprobe, efSearch) are set at load time (the index's tuned values, issue 37; None: FAISS's
    defaults raised to :data:`DEFAULT_NPROBE`/:data:`DEFAULT_EF_SEARCH`) and changed only by tuning
    (:meth:`set_parameters`); a search can be limited to the docnos a reader's point-in-time view holds (``bound``
    and ``bitmap``). :meth:`search` with ``exact`` scans every stored vector instead of the ANN structure: an HNSW
    graph's own flat storage, read in place by the flat kernel, or an IVF index's vectors, reconstructed once.

    A flat inner-product index is searched by something faster than FAISS's flat kernel where there is one:
    ``flat="auto"`` takes a torch mirror of the vectors on CUDA (:mod:`indexes.storage.faiss.torch_flat`; near the
    memory-bandwidth bound, where FAISS's GPU flat kernel is not) and a compiled loop over FAISS's own rows on
    the CPU (:mod:`indexes.storage.faiss.flat_kernel`); ``"torch"`` and ``"numba"`` choose one, ``"faiss"`` neither.
    ``flat_dtype`` is the torch mirror's storage (fp32, fp16, bf16). Other index types (HNSW, IVF, PQ) always go
    through FAISS. The FAISS index then stays on the CPU, as the file's source for saves, ``reconstruct`` and
    compaction.
    """

    def __init__(self, folder: Path, device: str = "cpu", nprobe: int | None = None, ef_search: int | None = None,
                 flat: str = "auto", flat_dtype: str = "fp32") -> None:
        faiss = _faiss()
        cpu_index = faiss.read_index(str(folder / FILE))
        if not isinstance(cpu_index, faiss.IndexIDMap2):
            raise FaissBuildError(f"{folder / FILE}: not an ID-mapped index (built by an older version); rebuild the index")
        self.dimension = int(cpu_index.d)
        self.nprobe, self.ef_search = nprobe or DEFAULT_NPROBE, ef_search or DEFAULT_EF_SEARCH
        inner = faiss.downcast_index(cpu_index.index)
        # What tuning may change: "ef_search" (HNSW), "nprobe" (IVF), or None (flat, PQ: exact or nothing to tune).
        self.tunable = "ef_search" if isinstance(inner, faiss.IndexHNSW) else "nprobe" if _ivf(inner) else None
        self.nlist = int(faiss.extract_index_ivf(inner).nlist) if self.tunable == "nprobe" else 0
        self._apply(cpu_index)
        self._exact: FlatKernel | None = None  # the exact scan of an ANN index's vectors, made at its first use
        ids = faiss.vector_to_array(cpu_index.id_map)
        self.max_docno = int(ids[-1]) if len(ids) else -1  # ids only ever grow: the last is the largest
        self._mirror = _flat_searcher(cpu_index, device, flat, flat_dtype)
        self._index = cpu_index if self._mirror is not None else _to_gpu(cpu_index, device)
        self._on_gpu = self._index is not cpu_index
        self._selectors = not self._on_gpu  # turned off at the first type that refuses them (e.g. PQ)
        self._reconstructs = True  # turned off at the first type that cannot return stored vectors
        self._lock = ReadWriteLock()

    def _apply(self, index) -> None:  # type: ignore[no-untyped-def]
        faiss = _faiss()
        space = faiss.GpuParameterSpace() if "Gpu" in type(index).__name__ else faiss.ParameterSpace()
        for name, value in (("nprobe", self.nprobe), ("efSearch", self.ef_search)):
            try:
                space.set_index_parameter(index, name, value)
            except RuntimeError:
                pass  # parameter does not apply to this index type

    def set_parameters(self, ef_search: int | None = None, nprobe: int | None = None) -> None:
        """Search with other efSearch/nprobe from now on (tuning tries several on one open index)."""
        with self._lock.write():
            self.ef_search, self.nprobe = ef_search or self.ef_search, nprobe or self.nprobe
            self._apply(self._index)

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

    @property
    def approximate(self) -> bool:
        """Whether :meth:`search` goes through an ANN structure (HNSW, IVF) rather than scanning every vector."""
        return self._mirror is None and self.tunable is not None

    def _exact_kernel(self) -> FlatKernel | None:
        """The flat kernel over this ANN index's stored vectors (made once; None without numba, or where the vectors
        cannot be returned): an HNSW graph's flat storage in place, else a copy of the reconstructed vectors."""
        if self._exact is None and flat_kernel.available():
            cpu = _to_cpu(self._index)
            if flat_kernel.flat_storage(cpu) is not None:
                kernel = FlatKernel(cpu)
            else:
                docnos = _faiss().vector_to_array(cpu.id_map).astype(np.int64)
                try:
                    kernel = FlatKernel(cpu, (self.reconstruct(docnos), docnos))
                except FaissBuildError:
                    return None
            with self._lock.write():
                self._exact = self._exact or kernel
        return self._exact

    def search(self, queries: np.ndarray, k: int, bound: int | None = None,
               bitmap: np.ndarray | None = None, exact: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` (scores, docnos; -1 pads) among docnos below ``bound`` whose ``bitmap`` bit is set; ``exact``:
        every stored vector scored, whatever the index type (as a Flat index over them would).

        One query runs on one OpenMP thread (:data:`ONE_QUERY_ONE_THREAD`): FAISS opens a team for it anyway, and
        on a busy machine the team waits at its barrier for a core that other requests hold (100k HNSW32 at load 5
        on 2 cores: dense p99 20 ms). OpenMP's thread count is the calling thread's own setting, restored after."""
        if not (ONE_QUERY_ONE_THREAD and len(queries) == 1 and not self._on_gpu):
            return self._search(queries, k, bound, bitmap, exact)
        faiss = _faiss()
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        try:
            return self._search(queries, k, bound, bitmap, exact)
        finally:
            faiss.omp_set_num_threads(threads)

    def _search(self, queries: np.ndarray, k: int, bound: int | None, bitmap: np.ndarray | None, exact: bool
                ) -> tuple[np.ndarray, np.ndarray]:
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        kernel = self._exact_kernel() if exact and self.approximate else None
        with self._lock.read():
            total = self.ntotal
            k = max(1, min(k, max(total, 1)))
            if total == 0:
                return np.full((len(queries), k), -np.inf, np.float32), np.full((len(queries), k), -1, np.int64)
            if kernel is not None:
                return kernel.search(queries, k, bound, bitmap)
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

    def search_allowed(self, queries: np.ndarray, k: int, allowed: np.ndarray, exact_limit: int | None = None,
                       exact: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` among the docnos whose ``allowed`` bool is set (a metadata filter's matches in one view).

        Few matches (up to ``exact_limit``) are scored exactly, against their stored vectors, as
        Qdrant and Elasticsearch switch to an exact scan for selective filters: a graph or IVF search with a
        selector finds too few of them. More matches go through the index with a selector (or over-fetching
        where the type has none); if that still returns fewer than ``min(k, matches)`` hits, the matches are
        scanned exactly after all, so a filter never costs hits that exist. Types that cannot return their
        stored vectors go through the index only.
        """
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        kernel = self._exact_kernel() if exact and self.approximate else None
        if kernel is not None:
            with self._lock.read():
                return kernel.search_allowed(queries, k, allowed)
        if isinstance(self._mirror, FlatKernel):  # exact, reading only the matches' rows
            with self._lock.read():
                return self._mirror.search_allowed(queries, k, allowed)
        if self._mirror is not None:  # exact over the matches already, at any selectivity
            return self.search(queries, k, None, np.packbits(allowed, bitorder="little"))
        docnos = np.flatnonzero(allowed)
        scannable = self._reconstructs
        limit = exact_scan_limit(self.ntotal, self.ef_search) if exact_limit is None else exact_limit
        limit = len(allowed) if exact and self.approximate else limit  # no kernel: FAISS's brute force, all matches
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

    def docnos(self) -> np.ndarray:
        """Every stored vector's docno, ascending."""
        with self._lock.read():
            return _faiss().vector_to_array(_to_cpu(self._index).id_map).astype(np.int64)

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
        with self._lock.write():  # made anew: FAISS's hash-table map misses vectors added after it was made
            inner.set_direct_map_type(faiss.DirectMap.NoMap)
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
        if self._exact is not None and flat_kernel.flat_storage(_to_cpu(self._index)) is not None:
            self._exact.refresh(_to_cpu(self._index))
        else:
            self._exact = None  # a copy of reconstructed vectors: made again at the next exact search

    def save(self, folder: Path) -> Path:
        with self._lock.read():
            return save(self._index, folder)
