"""Value types every layer passes around: a retriever's hit, and where a fused hit came from."""

from __future__ import annotations

from dataclasses import dataclass

SparseVector = dict[str, int]


class Encoded(list):  # type: ignore[type-arg]
    """Query vectors already in a retriever's own encoded form (what its kind's ``encode_queries`` returns),
    passed to a searcher as ``given``: encoded once (a query-encoder service) for many shards, searched as is."""


@dataclass(slots=True, unsafe_hash=True)
class ScoredDoc:
    """Immutable by convention, not ``frozen``: a frozen dataclass's ``__init__`` costs 2.5x, and a hybrid request
    makes hundreds of these (a retriever's run of ``depth`` hits each)."""

    doc_id: str
    score: float


@dataclass(slots=True, unsafe_hash=True)
class RetrieverScore:
    """Immutable by convention, as :class:`ScoredDoc` (for the same reason)."""

    rank: int  # 1-based
    score: float
    normalized: float | None = None  # weighted fusion: the score as normalized for the sum
    contribution: float | None = None  # what this retriever added to the fused score


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


# PrfConfig's parameter fields and their types, in the order specs and messages list them.
PRF_FIELDS: dict[str, type] = {"fb_docs": int, "fb_terms": int, "original_weight": float, "alpha": float, "beta": float}


@dataclass(frozen=True)
class PrfConfig:
    """Pseudo-relevance feedback for one retriever: search, expand the query from the top ``fb_docs``
    hits, search again. Which methods a retriever offers, and their defaults, belong to its kind
    (BM25: Anserini's ``rm3`` and ``rocchio``; dense: ``average`` and ``rocchio`` of vectors).

    ``None`` fields take the kind's default for the method.
    """

    method: str
    fb_docs: int | None = None
    fb_terms: int | None = None  # expansion terms (Lucene methods)
    original_weight: float | None = None  # RM3: weight of the original query in the mix
    alpha: float | None = None  # Rocchio: weight of the query
    beta: float | None = None  # Rocchio: weight of the feedback centroid

    def filled(self, defaults: dict[str, float | int]) -> PrfConfig:
        """This config with its unset fields taken from ``defaults``."""
        values = {key: getattr(self, key) if getattr(self, key) is not None else defaults.get(key)
                  for key in PRF_FIELDS}
        return PrfConfig(self.method, **values)  # type: ignore[arg-type]

    def label(self) -> str:
        """``rm3`` or ``rm3(fb_docs=5)``: the method with the fields set, as harness specs spell it."""
        set_fields = [f"{k}={getattr(self, k):g}" for k in PRF_FIELDS if getattr(self, k) is not None]
        return self.method + (f"({','.join(set_fields)})" if set_fields else "")
