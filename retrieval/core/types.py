"""Value types every layer passes around: a retriever's hit, and where a fused hit came from."""

from __future__ import annotations

from dataclasses import dataclass

SparseVector = dict[str, int]


@dataclass(frozen=True)
class ScoredDoc:
    doc_id: str
    score: float


@dataclass(frozen=True)
class RetrieverScore:
    rank: int  # 1-based
    score: float


@dataclass(frozen=True)
class RetrieverSpec:
    """A retriever an index should hold: its name in the index, its kind, and its model where the kind
    uses one (None: the kind's default model from the settings)."""

    name: str
    kind: str
    model: str | None = None

    def __str__(self) -> str:
        return f"{self.name}={self.kind}" + (f":{self.model}" if self.model else "")


DEFAULT_RETRIEVERS = (RetrieverSpec("bm25", "bm25"), RetrieverSpec("splade", "splade"), RetrieverSpec("dense", "dense"))
