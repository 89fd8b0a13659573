"""Hybrid sparse/dense retrieval as a library: BM25 and SPLADE on Lucene, dense on FAISS, fused per request.

    from retrieval import Searcher, build_index

    build_index("eval/datasets/cranfield", "cranfield", root="indexes", retrievers=["bm25", "splade"])
    with Searcher.open("indexes/cranfield") as searcher:
        for hit in searcher.search("wing flutter at transonic speeds", k=3, explain=True).hits:
            print(hit.rank, hit.id, round(hit.score, 4), hit.explain)

Everything a library user needs is importable from here; the names load on first use (importing ``retrieval`` starts
no JVM and loads no model). A search is one :class:`SearchRequest` (or keywords that build one), the same object the
REST API and the CLI take; :class:`Searcher` also has ``batch_search`` for many queries with the same options.
Live writes (upserts, deletes, snapshots) go through :func:`open_index`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "Searcher": "retrieval.search.pipeline",
    "SearchResult": "retrieval.search.hits",
    "Hit": "retrieval.search.hits",
    "SearchRequest": "retrieval.search.request",
    "SearchOptions": "retrieval.search.request",
    "BatchSearchRequest": "retrieval.search.request",
    "Fusion": "retrieval.search.request",
    "Prf": "retrieval.search.request",
    "Rerank": "retrieval.search.request",
    "SearchError": "retrieval.search.request",
    "build_index": "indexes.indexing.builder",
    "create_empty_index": "indexes.indexing.builder",
    "encode_corpus": "indexes.indexing.builder",
    "BuildError": "indexes.indexing.folder_build",
    "open_index": "indexes.indexing.sharded",
    "Document": "indexes.storage.docstore.corpus",
    "BuildOptions": "retrieval.core.options",
    "OpenOptions": "retrieval.core.options",
    "Settings": "retrieval.core.settings",
    "HybridError": "retrieval.core.errors",
}
__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # for type checkers and editors; at run time the names load lazily (below)
    from indexes.indexing.builder import build_index, create_empty_index, encode_corpus
    from indexes.indexing.folder_build import BuildError
    from indexes.indexing.sharded import open_index
    from indexes.storage.docstore.corpus import Document
    from retrieval.core.errors import HybridError
    from retrieval.core.options import BuildOptions, OpenOptions
    from retrieval.core.settings import Settings
    from retrieval.search.hits import Hit, SearchResult
    from retrieval.search.pipeline import Searcher
    from retrieval.search.request import BatchSearchRequest, Fusion, Prf, Rerank, SearchError, SearchOptions, SearchRequest


def __getattr__(name: str) -> Any:
    """A public name, imported on first use: ``retrieval.core`` is imported by every layer, and an eager import of
    the search layer here would run before the layers it stands on."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'retrieval' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
