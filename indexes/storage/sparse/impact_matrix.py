"""Learned-sparse search in memory: the impacts of a SPLADE retriever as a term-by-document matrix.

Why: Lucene cannot prune SPLADE's long, flat posting lists much, so it scores them almost exhaustively
anyway, with a JNI crossing and Java objects per query on top: 0.44 ms a query on Cranfield and 64 ms at a
million documents, where Qdrant Edge took 0.05 and 13 ms (issue 19; eval/bench/README.md, "Qdrant Edge").
Here a query is one pass over its terms' postings, adding ``weight x impact`` into a score per row (a
compiled loop, numba; scipy's column product where numba is missing), then a top-k that looks only at
the rows above a bound taken from block maxima.

The scores are Lucene's exactly: impacts and query weights are integers, so their products and sums are
exact in float32 (below 2**24) whatever the order of the additions. The hits and their order match too:
the caller ranks (score, id) and applies Anserini's tie rounding as the Lucene path does
(:func:`indexes.storage.lucene.direct.tie_adjusted`). The Lucene index stays the index of record;
this matrix is derived from the same vectors, written beside it:

* ``matrix/part-NNNNN.npz``: rows of documents in docno order (``docnos``, CSR ``indptr``, int32 ``terms`` into
  the part's own ``vocab``, integer ``weights``, uint16 where they fit) and the ``seq`` it holds writes up to. A build writes parts of
  about :data:`PART_NNZ` impacts as it streams (its memory stays flat); each live checkpoint appends one part
  with the rows written since. Parts are written once (temporary file, fsync, rename) and never changed.
* ``matrix/removed.npy``: docnos removed by compactions, rewritten atomically at a checkpoint;
* ``matrix/state.json``: the ``seq`` of the last checkpoint (one with no new rows writes no part).

* ``matrix/clusters.npz``: the approximate structure (:mod:`indexes.storage.sparse.clusters`), written by a build
  and when a checkpoint folds enough new rows in; the rows it covers are held in its cluster order.

A crash between Lucene's commit and a part's rename leaves the part missing: :attr:`ImpactMatrix.seq` is then
below Lucene's, the write-ahead log replays the difference, and :meth:`ImpactMatrix.append` skips the docnos it
already holds. Which versions a search may return comes from the view (``bound``, ``bitmap``), as for FAISS.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import weakref
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import sparse

from indexes.storage.docstore.layout import fsync_path
from indexes.storage.kernels.docno_flags import row_flags
from indexes.storage.lucene import anserini_order
from indexes.storage.sparse import clusters as clustering
from indexes.storage.sparse.scoring import (  # noqa: F401
    _NO_MASK,
    _block_top_numpy,
    block_top,
    ranked_block,
)

FOLDER = "matrix"
REMOVED = "removed.npy"
STATE = "state.json"
PART_NNZ = 16_000_000  # impacts per part a build writes (about 200 MB of memory while it fills)
MERGE_BLOCKS = 8  # appended blocks are merged into one past this many
log = logging.getLogger(__name__)


def exists(retriever_folder: Path) -> bool:
    return (retriever_folder / FOLDER).is_dir() and any((retriever_folder / FOLDER).glob("part-*.npz"))


def memory_bytes(retriever_folder: Path) -> int:
    """About what :class:`ImpactMatrix` holds in memory: an int32 row and the weight (uint16 or int32) per impact."""
    total = 0
    for part in sorted((retriever_folder / FOLDER).glob("part-*.npz")):
        with np.load(part) as data:
            total += int(data["indptr"][-1]) * (4 + data["weights"].dtype.itemsize) + len(data["docnos"]) * 12
    return total


def _write_atomically(path: Path, write: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as handle:
        write(handle)
    fsync_path(tmp)
    os.replace(tmp, path)
    fsync_path(path.parent)


def write_part(folder: Path, number: int, docnos: np.ndarray, vectors: Sequence[dict[str, int]], seq: int) -> str:
    """One part file holding ``vectors`` (term -> integer impact) of ``docnos``; returns its name."""
    vocab: dict[str, int] = {}
    indptr = np.zeros(len(vectors) + 1, dtype=np.int64)
    total = sum(len(v) for v in vectors)
    terms = np.empty(total, dtype=np.int32)
    weights = np.empty(total, dtype=np.int32)
    at = 0
    for row, vector in enumerate(vectors):
        n = len(vector)
        terms[at:at + n] = [vocab.setdefault(t, len(vocab)) for t in vector]
        weights[at:at + n] = list(vector.values())
        at += n
        indptr[row + 1] = at
    if total and int(weights.max()) <= np.iinfo(np.uint16).max and int(weights.min()) >= 0:
        weights = weights.astype(np.uint16)  # impacts are small integers: 6 bytes an impact on disk, not 8
    name = f"part-{number:05d}.npz"
    folder.mkdir(parents=True, exist_ok=True)
    names = np.array(list(vocab), dtype=str) if vocab else np.zeros(0, dtype="<U1")
    _write_atomically(folder / name, lambda h: np.savez(h, docnos=np.asarray(docnos, dtype=np.int64), indptr=indptr,
                                                       terms=terms, weights=weights, vocab=names,
                                                       seq=np.asarray([seq], dtype=np.int64)))
    return name


class MatrixWriter:
    """Parts of a batch build, written as documents stream by in docno order (``add``), flushed every
    :data:`PART_NNZ` impacts, so memory does not grow with the corpus."""

    def __init__(self, folder: Path, first_docno: int = 0) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self._next = first_docno
        self._pending: list[dict[str, int]] = []
        self._pending_nnz = 0
        self._start = first_docno
        self._parts = 0

    def add(self, vector: dict[str, int]) -> None:
        self._pending.append(vector)
        self._pending_nnz += len(vector)
        self._next += 1
        if self._pending_nnz >= PART_NNZ:
            self._flush(0)

    def _flush(self, seq: int) -> None:
        write_part(self.folder, self._parts, np.arange(self._start, self._next, dtype=np.int64), self._pending, seq)
        self._parts += 1
        self._start = self._next
        self._pending, self._pending_nnz = [], 0

    def close(self, seq: int = 0) -> None:
        if self._pending or not self._parts:
            self._flush(seq)


class _Vocabulary(dict):  # type: ignore[type-arg]
    """Term -> column; a term no document has is column -1 (so a query's columns come from one C-level ``map``)."""

    def __missing__(self, term: str) -> int:
        return -1


class ImpactMatrix:
    """Every part of a retriever's matrix in memory, searched exactly; appended to by live writes.

    Rows are stored in blocks (scipy CSC, terms as columns): the loaded parts as one block, then one block per
    write batch, the appended ones merged once there are more than :data:`MERGE_BLOCKS`. Searches and writes may run at once: a search reads
    one consistent list of blocks. ``rows=False`` keeps only what writing needs (the docnos held, the seq, the
    removed docnos): a live index whose searches go through Lucene still keeps its matrix current.
    """

    def __init__(self, folder: Path, rows: bool = True) -> None:
        self.folder = folder
        self.searchable = rows
        self._lock = threading.Lock()
        self._vocab: dict[str, int] = _Vocabulary()
        self._blocks: list[tuple[sparse.csc_matrix, np.ndarray]] = []  # (rows x terms, docnos of the rows)
        self._docnos = np.zeros(0, dtype=np.int64)
        self._removed = np.zeros(0, dtype=np.int64)
        self._removed_version = 0
        self._pending: list[tuple[np.ndarray, list[dict[str, int]]]] = []  # appended since the last part
        self._parts = 0
        self._loaded = 0  # blocks from the files (the first), never merged with appended ones
        self.seq = 0
        self._mask: tuple[Any, int | None, int, Any, np.ndarray] | None = None  # cached visibility of the rows
        self._max_docno = -1
        self._layout = 0  # counts re-clusterings: the rows' order changes, so cached masks go
        self.clusters: clustering.Clusters | None = None  # the first block's, when it is held in cluster order
        self._load()
        if rows:  # compile (or load the cached machine code) now, not in a first query: appended blocks hold float32
            for dtype in {np.dtype(np.float32), *(block.data.dtype for block, _ in self._blocks)}:
                tiny = sparse.csc_matrix(np.ones((1, 1), dtype=dtype))
                block_top(tiny, np.zeros(1, dtype=np.int64), np.ones(1, dtype=np.float32), None, 1)
                ranked_block(tiny, np.zeros(1, dtype=np.int64), np.zeros(1, dtype=np.int64),
                             np.ones(1, dtype=np.float32), None, 1)
            if self.clusters is not None:
                self.clusters.top(self._blocks[0][0], np.zeros(0, np.int64), np.zeros(0, np.float32), _NO_MASK, 1, 1)

    # --- loading and writing ---------------------------------------------------------------------------

    def _load(self) -> None:
        folder = self.folder / FOLDER
        parts = sorted(folder.glob("part-*.npz"))
        indptrs, terms, weights, docnos = [], [], [], []
        offset = 0
        stored = clustering.read(folder) if self.searchable and clustering.available() else None
        for path in parts:
            with np.load(path) as data:
                self.seq = max(self.seq, int(data["seq"][0]))
                docnos.append(data["docnos"])
                if not self.searchable:
                    continue
                local = [self._vocab.setdefault(str(t), len(self._vocab)) for t in data["vocab"]]
                mapping = np.asarray(local, dtype=np.int32)
                indptrs.append(data["indptr"][1:] + offset)
                offset += int(data["indptr"][-1])
                terms.append(mapping[data["terms"]] if len(mapping) else data["terms"])
                weights.append(data["weights"])  # uint16 where the impacts fit: 6 bytes an impact in memory
        self._parts = len(parts)
        if (folder / REMOVED).exists():
            self._removed = np.load(folder / REMOVED)
        if (folder / STATE).exists():
            self.seq = max(self.seq, int(json.loads((folder / STATE).read_text())["seq"]))
        if parts and not self.searchable:
            self._docnos = np.concatenate(docnos)
        elif parts:
            rows = np.concatenate(docnos)
            indptr = np.concatenate([np.zeros(1, dtype=np.int64), *indptrs])
            values = np.concatenate(weights) if len({w.dtype for w in weights}) == 1 else \
                np.concatenate([w.astype(np.int32) for w in weights])
            csr = sparse.csr_matrix((values, np.concatenate(terms), indptr),
                                    shape=(len(rows), max(len(self._vocab), 1)))
            covered = sum(len(d) for d in docnos[: stored.parts]) if stored is not None else 0
            if stored is not None and not self._clustered(csr, rows, covered, stored):
                log.warning("%s: %s does not match the matrix parts; searching exactly", folder, clustering.FILE)
            if self.clusters is None and len(rows):
                self._blocks = [(csr.tocsc(), rows)]
            self._docnos = np.concatenate([d for _, d in self._blocks]) if self._blocks else rows
        self._max_docno = int(self._docnos.max()) if len(self._docnos) else -1
        self._loaded = len(self._blocks)

    def _clustered(self, csr: sparse.csr_matrix, rows: np.ndarray, covered: int, stored: clustering.Stored) -> bool:
        """Hold the first ``covered`` rows (the parts ``stored`` covers) in its cluster order with its clusters, the
        rest as a block of their own; False (nothing held) when the file does not match the parts."""
        if covered != len(stored.docnos) or not np.array_equal(np.sort(stored.docnos), rows[:covered]):
            return False
        order = np.searchsorted(rows[:covered], stored.docnos)
        block = csr[:covered][order].tocsc()
        columns = np.fromiter(map(self._vocab.__getitem__, (str(t) for t in stored.vocab)), dtype=np.int64,
                              count=len(stored.vocab))
        cterms = columns[stored.cterms] if len(stored.cterms) else stored.cterms.astype(np.int64)
        if (cterms < 0).any():  # a centroid term no row holds
            return False
        self.clusters = clustering.Clusters(block, stored.starts, stored.cptr, cterms, stored.cweights)
        self._blocks = [(block, stored.docnos)]
        if covered < len(rows):
            self._blocks.append((csr[covered:].tocsc(), rows[covered:]))
        return True

    @property
    def max_docno(self) -> int:
        return self._max_docno

    @property
    def rows(self) -> int:
        return len(self._docnos)

    @property
    def nnz(self) -> int:
        return sum(int(block.nnz) for block, _ in self._blocks)

    def append(self, docnos: Sequence[int], vectors: Sequence[dict[str, int]]) -> None:
        """Rows for new document versions; those at or below the largest docno held are skipped (a replayed
        write is a no-op)."""
        keep = [i for i, d in enumerate(docnos) if d > self.max_docno]
        if not keep:
            return
        new_docnos = np.asarray([docnos[i] for i in keep], dtype=np.int64)
        rows = [vectors[i] for i in keep]
        with self._lock:
            self._pending.append((new_docnos, rows))
            self._max_docno = int(new_docnos[-1])
            if not self.searchable:
                self._docnos = np.concatenate([self._docnos, new_docnos])
                return
            terms = [self._vocab.setdefault(t, len(self._vocab)) for v in rows for t in v]
            weights = np.fromiter((w for v in rows for w in v.values()), dtype=np.float32, count=len(terms))
            indptr = np.concatenate([[0], np.cumsum([len(v) for v in rows])]).astype(np.int64)
            block = sparse.csr_matrix((weights, np.asarray(terms, dtype=np.int32), indptr),
                                      shape=(len(rows), max(len(self._vocab), 1))).tocsc()
            blocks = [*self._blocks, (block, new_docnos)]
            if len(blocks) - self._loaded > MERGE_BLOCKS:  # the loaded block stays as it is: merging it costs O(N)
                blocks = [*blocks[: self._loaded], self._merged(blocks[self._loaded :])]
            self._blocks = blocks
            self._docnos = np.concatenate([self._docnos, new_docnos])

    def _merged(self, blocks: list[tuple[sparse.csc_matrix, np.ndarray]]) -> tuple[sparse.csc_matrix, np.ndarray]:
        width = max(len(self._vocab), 1)
        stacked = [sparse.csc_matrix((b.data, b.indices, b.indptr), shape=b.shape) for b, _ in blocks]
        for b in stacked:
            b.resize((b.shape[0], width))
        return sparse.vstack(stacked, format="csc"), np.concatenate([d for _, d in blocks])

    def remove(self, docnos: Iterable[int]) -> None:
        """Docnos gone for good (a compaction): never returned again, whatever a view says."""
        with self._lock:
            self._removed = np.union1d(self._removed, np.asarray(list(docnos), dtype=np.int64))
            self._removed_version += 1

    def commit(self, seq: int) -> list[str]:
        """Write the rows appended since the last commit as a new part, and the removed docnos; returns every file
        of the matrix (relative to the retriever folder), for the index manifest."""
        folder = self.folder / FOLDER
        with self._lock:
            pending, self._pending = self._pending, []
            removed = self._removed.copy()
        if pending:
            try:
                write_part(folder, self._parts, np.concatenate([d for d, _ in pending]),
                           [v for _, rows in pending for v in rows], seq)
            except BaseException:  # e.g. a full disk: the rows go back, and the next commit writes this part again
                with self._lock:
                    self._pending[:0] = pending
                raise
            self._parts += 1
        if self.clusters is not None:  # checkpoints run under the index's write lock: no rows arrive meanwhile
            clustered = len(self._blocks[0][1])
            if clustering.should_fold(clustered, self.rows - clustered):
                self.cluster()
        if len(removed):
            _write_atomically(folder / REMOVED, lambda h: np.save(h, removed))
        _write_atomically(folder / STATE, lambda h: h.write(json.dumps({"seq": seq}).encode()))
        self.seq = max(self.seq, seq)
        return sorted(f"{FOLDER}/{p.name}" for p in folder.iterdir() if p.suffix in (".npz", ".npy", ".json"))

    def cluster(self) -> str | None:
        """Group every row into clusters for approximate search (:mod:`indexes.storage.sparse.clusters`), write
        ``matrix/clusters.npz`` over the parts, and hold the rows in its order from now on. Every row must be in a
        part (a build's matrix, or right after a commit). Returns the file (relative to the retriever folder), or
        None where approximate search cannot run (no numba, or no rows held in memory)."""
        if not self.searchable or not clustering.available() or not self._blocks or self._pending:
            return None
        with self._lock:
            blocks = self._blocks
        block, docnos = self._merged(blocks) if len(blocks) > 1 else blocks[0]
        order = np.argsort(docnos, kind="stable")
        csr, rows = block.tocsr()[order], docnos[order]
        if csr.dtype != np.uint16 and csr.nnz and 0 <= csr.data.min() and csr.data.max() <= np.iinfo(np.uint16).max:
            csr = csr.astype(np.uint16)  # merged with appended float32 rows: impacts are still small integers
        layout = clustering.build(csr.indptr, csr.indices, csr.data, csr.shape[1])
        clustering.write(self.folder / FOLDER, layout, rows, list(self._vocab), self._parts, _write_atomically)
        held = csr[layout.order].tocsc()
        found = clustering.Clusters(held, layout.starts, layout.cptr, layout.cterms, layout.cweights)
        with self._lock:
            self._blocks, self._docnos, self.clusters = [(held, rows[layout.order])], rows[layout.order], found
            self._loaded, self._layout = 1, self._layout + 1
        return f"{FOLDER}/{clustering.FILE}"

    # --- searching -------------------------------------------------------------------------------------

    def _visible(self, docnos: np.ndarray, bound: int | None, bitmap: np.ndarray | None) -> np.ndarray | None:
        """Which rows a view may return (None: all); the last answer is kept, since a view's bitmap is made once
        and searched many times."""
        if bound is None and bitmap is None and not len(self._removed):
            return None
        cached = self._mask
        if (cached is not None and (cached[0]() if cached[0] is not None else None) is bitmap
                and cached[1:4] == (bound, len(docnos), (self._removed_version, self._layout))):
            return cached[4]
        keep = np.ones(len(docnos), dtype=bool)
        if bound is not None:
            keep &= docnos < bound
        if bitmap is not None:
            keep &= row_flags(docnos, np.unpackbits(bitmap, bitorder="little"))
        if len(self._removed):
            keep &= ~np.isin(docnos, self._removed)
        ref = weakref.ref(bitmap) if bitmap is not None else None
        self._mask = (ref, bound, len(docnos), (self._removed_version, self._layout), keep)
        return keep

    def search(self, vector: dict[str, int], k: int, bound: int | None = None, bitmap: np.ndarray | None = None,
               allowed: np.ndarray | None = None, probes: int | None = None) -> list[tuple[float, int]]:
        """The top ``k`` (score, docno) pairs by score, plus every pair tied with the ``k``-th: the caller orders
        ties by id, as Anserini does. Only documents matching a query term (score above 0) are hits; with
        ``allowed`` (one bool per docno: a metadata filter's matches), only those, ranked before the cut.
        ``probes``: search approximately, scoring the rows of that many clusters (:meth:`approximate`) where the
        matrix has them; None: every row."""
        found, hit_docnos = self.search_arrays(vector, k, bound, bitmap, allowed, probes)
        return list(zip(found.tolist(), hit_docnos.tolist()))

    def search_arrays(self, vector: dict[str, int], k: int, bound: int | None = None, bitmap: np.ndarray | None = None,
                      allowed: np.ndarray | None = None, probes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`search`'s hits as arrays: float32 scores and int64 docnos, in no set order."""
        found = self._search(vector, k, bound, bitmap, allowed, probes, ranked=False)
        return found  # type: ignore[return-value]

    def search_ranked(self, vector: dict[str, int], k: int, bound: int | None = None, bitmap: np.ndarray | None = None,
                      allowed: np.ndarray | None = None, probes: int | None = None
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`search`'s hits ranked as Anserini ranks them (:func:`indexes.storage.lucene.anserini_order.ordered`:
        docnos and scores by score then docno, the first ``k`` scores rounded, the runs of ties), in one compiled
        call with the scoring where one block is searched exhaustively."""
        return self._search(vector, k, bound, bitmap, allowed, probes, ranked=True)  # type: ignore[return-value]

    def _search(self, vector: dict[str, int], k: int, bound: int | None, bitmap: np.ndarray | None,
                allowed: np.ndarray | None, probes: int | None, ranked: bool) -> tuple[np.ndarray, ...]:
        with self._lock:
            blocks, docnos, found_clusters = self._blocks, self._docnos, self.clusters
        if not blocks or not vector or k < 1:
            found, hit_docnos = np.zeros(0, dtype=np.float32), np.zeros(0, dtype=np.int64)
            return anserini_order.ordered(found, hit_docnos, max(k, 1)) if ranked else (found, hit_docnos)
        columns = np.fromiter(map(self._vocab.__getitem__, vector), dtype=np.int64, count=len(vector))
        weights = np.fromiter(vector.values(), dtype=np.float32, count=len(vector))
        visible = self._visible(docnos, bound, bitmap)
        if allowed is not None:
            selected = row_flags(docnos, allowed)
            visible = selected if visible is None else visible & selected
        approximate = found_clusters is not None and probes is not None
        if ranked and len(blocks) == 1 and not approximate:
            answer = ranked_block(blocks[0][0], blocks[0][1], columns, weights, visible, k)
            if answer is not None:
                return answer
        found_parts, docno_parts = [], []
        start = 0
        for at, (block, block_docnos) in enumerate(blocks):  # each block's top k and its ties, then the cut over all
            end = start + len(block_docnos)
            mask = None if visible is None else visible[start:end]
            if at == 0 and approximate:
                rows, found = self.approximate(found_clusters, block, columns, weights, mask, k, probes,  # type: ignore[arg-type]
                                               allowed is not None)
            else:
                rows, found = block_top(block, columns, weights, mask, k)
            found_parts.append(found)
            docno_parts.append(block_docnos[rows])
            start = end
        if len(blocks) == 1:  # one block's answer is already its top k and the ties at its cut
            found, hit_docnos = found_parts[0], docno_parts[0]
        else:
            found, hit_docnos = np.concatenate(found_parts), np.concatenate(docno_parts)
            if len(found) > k:
                keep = found >= np.partition(found, len(found) - k)[len(found) - k]
                found, hit_docnos = found[keep], hit_docnos[keep]
        return anserini_order.ordered(found, hit_docnos, k) if ranked else (found, hit_docnos)

    @staticmethod
    def approximate(found_clusters: clustering.Clusters, block: sparse.csc_matrix, columns: np.ndarray,
                    weights: np.ndarray, mask: np.ndarray | None, k: int, probes: int, filtered: bool
                    ) -> tuple[np.ndarray, np.ndarray]:
        """The clustered block's top ``k`` among the rows of its ``probes`` best clusters (scores exact). Under a
        filter (``filtered``: ``mask`` holds its matches), ``probes / share of rows it keeps`` clusters, so about as
        many matching rows are scored; where that reaches every cluster, the exhaustive search instead."""
        wanted = probes
        if filtered and mask is not None:
            kept = int(np.count_nonzero(mask))
            if not kept:
                return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
            wanted = -(-probes * len(mask) // kept)
        if wanted >= found_clusters.count:
            return block_top(block, columns, weights, mask, k)  # type: ignore[no-any-return]
        rows, found, _ = found_clusters.top(block, columns, weights, _NO_MASK if mask is None else mask, k, wanted)
        return rows, found
