"""Pre-encoded document vectors on disk: what ``hybrid encode`` writes and ``hybrid index build --vectors`` reads.

Users encode at scale on GPUs elsewhere and index the vectors here, as Pyserini does with
``JsonVectorCollection`` and pre-encoded FAISS inputs. A folder holds, per retriever name:

* learned sparse: ``NAME.jsonl``, one ``{"id": ..., "vector": {token: impact}}`` per document (Anserini's
  JSON vector format, impacts already quantized);
* dense: ``NAME.npy`` (float32 ``[n, dimension]``, L2-normalized) and ``NAME.ids.jsonl`` (one JSON string
  per row, so any id survives);

and ``vectors.json``, written last and atomically: which kind, model and weights fingerprint made each
set, with its parameters and count. A folder without it is an unfinished export and is refused.
"""

from __future__ import annotations

import json
import os
import re
from array import array
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from indexes.storage.docstore.manifest import write_atomically
from retrieval.core.errors import HybridError

VECTORS_MANIFEST = "vectors.json"
FORMAT = 1


class VectorFileError(HybridError, ValueError):
    """A vectors folder that cannot be used as it is; the message says what to fix."""


@dataclass
class VectorSet:
    """One retriever's vectors: the files, and what made them."""

    name: str
    kind: str
    model_id: str
    weights_sha256: str
    parameters: dict[str, Any]
    count: int
    files: list[str]


@dataclass
class VectorsManifest:
    corpus_sha256: str
    documents: int
    sets: dict[str, VectorSet] = field(default_factory=dict)
    format: int = FORMAT
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))

    def write(self, folder: Path) -> None:
        data = {**asdict(self), "sets": {n: asdict(s) for n, s in self.sets.items()}}
        write_atomically(folder / VECTORS_MANIFEST, json.dumps(data, indent=1))

    @classmethod
    def read(cls, folder: Path) -> VectorsManifest:
        path = Path(folder) / VECTORS_MANIFEST
        if not path.is_file():
            raise VectorFileError(f"{folder} has no {VECTORS_MANIFEST}: not a vectors folder, or an export that did "
                                  "not finish; run 'hybrid encode CORPUS --out DIR' again")
        try:
            data = json.loads(path.read_text())
            if data.get("format") != FORMAT:
                raise VectorFileError(f"{path}: vectors format {data.get('format')!r}; this version reads {FORMAT}")
            sets = {n: VectorSet(**s) for n, s in data.pop("sets").items()}
            return cls(**data, sets=sets)
        except (ValueError, TypeError, KeyError) as exc:
            if isinstance(exc, VectorFileError):
                raise
            raise VectorFileError(f"{path} is not a valid vectors manifest ({exc})") from None


class SparseWriter:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._handle = path.open("w", encoding="utf-8")
        self.count = 0

    def write(self, rows: Iterable[tuple[str, dict[str, int]]]) -> None:
        for doc_id, vector in rows:
            self._handle.write(json.dumps({"id": doc_id, "vector": vector}, ensure_ascii=False) + "\n")
            self.count += 1

    def close(self) -> None:
        self._handle.flush()
        os.fsync(self._handle.fileno())
        self._handle.close()


class DenseWriter:
    """Rows go straight into a memory-mapped ``.npy`` of the known final size: memory stays flat."""

    def __init__(self, path: Path, rows: int, dimension: int) -> None:
        from numpy.lib.format import open_memmap

        self.path = path
        self._array = open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, dimension))
        self._ids = path.with_suffix(".ids.jsonl").open("w", encoding="utf-8")
        self.count = 0

    def write(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        self._array[self.count : self.count + len(ids)] = vectors
        self._ids.writelines(json.dumps(i, ensure_ascii=False) + "\n" for i in ids)
        self.count += len(ids)

    def close(self) -> None:
        self._array.flush()
        del self._array
        self._ids.flush()
        os.fsync(self._ids.fileno())
        self._ids.close()


def _check_ids(path: Path, found: Iterable[str], wanted: Sequence[str], partial: bool = False) -> None:
    """``found`` must hold exactly ``wanted`` (``partial``: at least; a shard reads its part of the corpus's vectors)."""
    have = set(found)
    missing = [i for i in wanted if i not in have]
    extra = set() if partial else have.difference(wanted)
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"{len(missing)} document(s) of the corpus have no vector (e.g. {missing[0]!r})")
        if extra:
            parts.append(f"{len(extra)} vector(s) belong to no document of the corpus (e.g. {sorted(extra)[0]!r})")
        raise VectorFileError(f"{path}: {'; '.join(parts)}; encode this corpus with 'hybrid encode'")


# A line as SparseWriter (and json.dumps) writes it starts with its id: read that string alone, not the whole line.
_LEADING_ID = re.compile(rb'\{\s*"id"\s*:\s*("(?:[^"\\]|\\.)*")')


class SparseVectors:
    """Random access by id into a sparse ``.jsonl``: one pass records each line's place (and checks ids).

    The pass reads each line's id only (its leading ``{"id": "..."``, else the whole line as JSON): the vectors
    are parsed when read, by :meth:`vectors` or, for a build, by the impact writer from :meth:`line_chunks`.
    """

    def __init__(self, path: Path, wanted: Sequence[str], partial: bool = False) -> None:
        self.path = path
        self._rows: dict[str, int] = {}
        starts = array("q")
        with path.open("rb") as handle:
            offset = 0
            for number, line in enumerate(handle, start=1):
                match = _LEADING_ID.match(line)
                try:
                    doc_id = json.loads(match.group(1)) if match else json.loads(line)["id"]
                except (ValueError, KeyError, TypeError):
                    raise VectorFileError(f"{path}, line {number}: not a JSON object with an 'id'") from None
                if doc_id in self._rows:
                    raise VectorFileError(f"{path}, line {number}: id {doc_id!r} appears twice")
                self._rows[doc_id] = len(starts)
                starts.append(offset)
                offset += len(line)
        starts.append(offset)
        self._starts = np.frombuffer(starts, dtype=np.int64) if len(starts) else np.zeros(1, dtype=np.int64)
        _check_ids(path, self._rows, wanted, partial)

    def ids(self) -> list[str]:
        """Every id of the file, in the file's order."""
        return list(self._rows)

    def vectors(self, ids: Iterable[str]) -> Iterator[tuple[str, dict[str, int]]]:
        with self.path.open("rb") as handle:
            for doc_id in ids:
                handle.seek(int(self._starts[self._rows[doc_id]]))
                line = handle.readline()
                try:
                    vector = json.loads(line)["vector"]
                    impacts = {str(t): int(w) for t, w in vector.items()}
                except (ValueError, KeyError, TypeError, AttributeError):
                    raise VectorFileError(f"{self.path}: the vector of {doc_id!r} is not a {{token: integer}} "
                                          "object") from None
                yield doc_id, {t: w for t, w in impacts.items() if w > 0}

    def line_ranges(self, ids: Sequence[str], size: int, max_bytes: int = 1 << 30
                    ) -> Iterator[tuple[int, list[tuple[int, int]]]]:
        """Where the lines of ``ids`` are, in ``ids``' order, in chunks of ``size`` ids (fewer where their lines
        pass ``max_bytes``): each chunk's count and byte ranges of the file, lines that follow each other in the file
        in one range (a file in the store's order: one range a chunk)."""
        rows = np.fromiter((self._rows[i] for i in ids), dtype=np.int64, count=len(ids))
        lengths = self._starts[rows + 1] - self._starts[rows]
        total = np.concatenate([[0], np.cumsum(lengths)])
        begin = 0
        while begin < len(rows):
            end = min(begin + size, int(np.searchsorted(total, total[begin] + max_bytes, side="right")) - 1)
            end = max(end, begin + 1)
            part = rows[begin:end]
            runs = np.split(part, np.flatnonzero(np.diff(part) != 1) + 1)
            yield len(part), [(int(self._starts[run[0]]), int(self._starts[run[-1] + 1])) for run in runs]
            begin = end

    def line_chunks(self, ids: Sequence[str], size: int) -> Iterator[bytes]:
        """The lines of :meth:`line_ranges` as bytes, each ending in a newline."""
        with self.path.open("rb") as handle:
            for _, ranges in self.line_ranges(ids, size):
                pieces = []
                for start, end in ranges:
                    handle.seek(start)
                    data = handle.read(end - start)
                    pieces.append(data if data.endswith(b"\n") else data + b"\n")
                yield b"".join(pieces)


class DenseVectors:
    """Rows of a dense ``.npy`` (memory-mapped) by id."""

    def __init__(self, path: Path, wanted: Sequence[str], dimension: int, partial: bool = False) -> None:
        self.path = path
        ids_path = path.with_suffix(".ids.jsonl")
        if not path.is_file() or not ids_path.is_file():
            raise VectorFileError(f"{path} or {ids_path.name} is missing")
        try:
            self._array = np.load(path, mmap_mode="r")
        except ValueError as exc:
            raise VectorFileError(f"{path} is not a .npy array ({exc})") from None
        with ids_path.open(encoding="utf-8") as handle:
            ids = [json.loads(line) for line in handle]
        if self._array.ndim != 2 or self._array.shape[0] != len(ids) or self._array.shape[1] != dimension:
            raise VectorFileError(f"{path}: shape {self._array.shape}, expected ({len(ids)}, {dimension}) for "
                                  f"{len(ids)} ids and the model's dimension {dimension}")
        if self._array.dtype != np.float32:
            raise VectorFileError(f"{path}: dtype {self._array.dtype}, expected float32")
        self._rows = {doc_id: row for row, doc_id in enumerate(ids)}
        if len(self._rows) != len(ids):
            raise VectorFileError(f"{ids_path}: an id appears twice")
        _check_ids(ids_path, self._rows, wanted, partial)

    def rows(self, ids: Sequence[str]) -> np.ndarray:
        return np.ascontiguousarray(self._array[[self._rows[i] for i in ids]], dtype=np.float32)
