"""What a search returns: :class:`Hit` and :class:`SearchResult`, plain dataclasses.

They live apart from the searcher (:mod:`retrieval.search.pipeline`) so that the REST schema
(``service/schemas.py``) and the Python client (``service/client``) can describe a hit without importing the
engine: this module needs nothing but the standard library and :mod:`retrieval.core.types`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from retrieval.core.types import RetrieverScore


@dataclass(slots=True)
class Hit:
    id: str
    score: float
    rank: int
    title: str | None = None
    text: str | None = None
    metadata: dict[str, Any] | None = None
    explain: dict[str, RetrieverScore | None] | None = None
    # With explain: each fused retriever's share of ``score`` (those that missed the hit included); they add up.
    contributions: dict[str, float] | None = None
    # With explain and rerank: the hit's rank and score in the fused list, before the cross-encoder (``score`` is
    # then the cross-encoder's, and the contributions add up to this fused score).
    before_rerank: RetrieverScore | None = None
    # With highlight: the best-matching passage of the hit's text, the query's terms marked (None: no term matches).
    highlight: str | None = None


@dataclass
class SearchResult:
    hits: list[Hit]
    retrievers: list[str]
    took_ms: float
    timings_ms: dict[str, float] = field(default_factory=dict)
    # Past the request's deadline (timeout_ms): the stages left out (retriever names, "rerank", "highlight").
    skipped: list[str] | None = None

    @property
    def partial(self) -> bool:
        return bool(self.skipped)
