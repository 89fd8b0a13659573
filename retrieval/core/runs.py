"""A retriever's ranked list kept as arrays, for the searches that rank documents of one document store.

Why: on a small index a hybrid request spent more time building, fusing and sorting a few hundred
:class:`ScoredDoc` objects than both retrievers spent searching. A :class:`Run` keeps the ranking as the search
produced it (docnos, ids, scores in rank order) and is still a ``Sequence[ScoredDoc]`` for every consumer that
reads it hit by hit: a hit object is made only when one is read (a page of them, usually). Fusion reads the
arrays directly when every run it fuses comes from the same document store (``space``), so docnos name the same
documents; otherwise it reads the hits, as it reads plain lists.

Invariants the producers keep: docnos are unique within a run, each has an id (hits without one are dropped
before the run is made), and the order is the final ranking (ties already broken as the retriever breaks them).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, overload

import numpy as np

from retrieval.core.types import ScoredDoc


class Run(Sequence[ScoredDoc]):
    """``docnos`` (int64 array), ``ids`` and ``scores`` (lists, in rank order) of one query's hits in ``space``
    (the document store whose docnos they are; fusion compares it by identity)."""

    __slots__ = ("docnos", "ids", "scores", "space", "_docs")

    def __init__(self, docnos: np.ndarray, ids: list[str], scores: list[float], space: object) -> None:
        self.docnos = docnos
        self.ids = ids
        self.scores = scores
        self.space = space
        self._docs: list[ScoredDoc] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    @overload
    def __getitem__(self, index: int) -> ScoredDoc: ...

    @overload
    def __getitem__(self, index: slice) -> list[ScoredDoc]: ...

    def __getitem__(self, index: int | slice) -> ScoredDoc | list[ScoredDoc]:
        if self._docs is not None:
            return self._docs[index]
        if isinstance(index, slice):  # a page of a longer run: only its hits are made
            return list(map(ScoredDoc, self.ids[index], self.scores[index]))
        return ScoredDoc(self.ids[index], self.scores[index])

    def docs(self) -> list[ScoredDoc]:
        """Every hit as a :class:`ScoredDoc` (made once)."""
        if self._docs is None:
            self._docs = list(map(ScoredDoc, self.ids, self.scores))
        return self._docs

    def __iter__(self) -> Iterator[ScoredDoc]:
        return iter(self.docs())

    def __reversed__(self) -> Iterator[ScoredDoc]:
        return reversed(self.docs())  # Sequence's own would make a new hit per index

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (Run, list, tuple)):
            return self.docs() == list(other)
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Run({self.docs()!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        # Across processes (a shard on Ray Serve) a run travels as the plain list: the store stays behind.
        return (list, (self.docs(),))


def same_space(runs: Sequence[Sequence[ScoredDoc]]) -> bool:
    """Whether every run is a :class:`Run` of one document store, so their docnos can be compared."""
    first = runs[0] if runs else None
    return isinstance(first, Run) and all(isinstance(r, Run) and r.space is first.space for r in runs)
