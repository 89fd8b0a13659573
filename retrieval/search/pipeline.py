"""The hybrid searcher: opens an index folder, runs any subset of its retrievers, fuses the results.

This is the library API the service and the evaluation harness share, so both see exactly the
same rankings for the same request.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

from indexes.kinds import get_kind
from indexes.kinds.base import (
    Component,
    KindError,
    RetrieverRuns,
    RetrieverSearcher,
    ViewState,
)
from indexes.storage.docstore.manifest import Manifest, verify_files
from indexes.storage.docstore.shards import ShardedStore
from indexes.storage.docstore.store import DocStore
from retrieval.core.fields import FieldSchema
from retrieval.core.filters import Filter, FilterError, parse_filter
from retrieval.core.gc_tuning import freeze_loaded, thaw
from retrieval.core.java_text import safe_text
from retrieval.core.options import OpenOptions
from retrieval.core.runs import Run
from retrieval.core.types import PrfConfig, RetrieverScore, ScoredDoc
from retrieval.encoders.models import ModelError
from retrieval.search.fusion import FusedDoc, FusionConfig, fuse
from retrieval.search.highlight import HighlightConfig, query_terms
from retrieval.search.highlight import highlight as mark
from retrieval.search.hits import Hit, SearchResult
from retrieval.search.rank_sum import warm as warm_fusion
from retrieval.search.request import SearchError, SearchOptions, SearchRequest, SearchTimeout
from retrieval.search.rerank import RerankConfig, RerankError, shared_reranker

# Threads that only wait: remote retrievers of one request, searched at once (see batch_search).
_REMOTE_CALLS = ThreadPoolExecutor(max_workers=16, thread_name_prefix="remote-retriever")


def clean_query(text: str) -> str:
    """Control characters become spaces and lone surrogates U+FFFD (:func:`retrieval.core.java_text.safe_text`):
    they carry no meaning for any retriever, and upset tokenizers and the JVM."""
    return safe_text(text)


def load_encoders(manifest: Manifest, names: Sequence[str], device: str, role: str = "query") -> dict[str, Any]:
    """Each retriever's encoder (None for kinds without a model), shared per process by model and role."""
    return {name: get_kind(manifest.retrievers[name].kind).load_encoder(manifest, name, device, role) for name in names}


def open_components(folder: Path, manifest: Manifest, names: Sequence[str], options: OpenOptions) -> dict[str, Component]:
    components: dict[str, Component] = {}
    try:
        for name in names:
            entry = manifest.retrievers[name]
            components[name] = get_kind(entry.kind).open(folder, name, entry, options)
    except BaseException:
        for component in components.values():
            component.close()
        raise
    return components


def open_searchers(components: Mapping[str, Component], encoders: Mapping[str, Any], store: DocStore, view: ViewState,
                   batch_size: int) -> dict[str, RetrieverSearcher]:
    """One searcher per component, as of now; on a failure, the ones made so far are closed."""
    searchers: dict[str, RetrieverSearcher] = {}
    try:
        for name, component in components.items():
            searchers[name] = component.searcher(encoders[name], store, view, batch_size)
    except BaseException:
        for searcher in searchers.values():
            searcher.close()
        raise
    return searchers


def searched_only(given: Iterable[str], names: Sequence[str], what: str) -> None:
    """Refuse per-retriever options for a retriever this request does not search; ``what`` names the option, with
    ``{name}`` where the retriever goes."""
    unknown = [name for name in given if name not in names]
    if unknown:
        raise SearchError(what.format(name=repr(unknown[0])) + f", which this request does not search; "
                          f"it searches {', '.join(names)}")


def check_retrievers(manifest: Manifest, wanted: Sequence[str]) -> None:
    missing = [r for r in wanted if r not in manifest.retrievers]
    if missing:
        raise SearchError(f"index {manifest.name!r} has no {missing[0]!r} retriever; it has {', '.join(manifest.retrievers)}")


class Searcher:
    """Searches one index as of one point in time (``seq``; None for an index nobody writes to).

    ``components`` are closed with the searcher when it owns them (an index opened read-only); a live
    index's views share the live index's components and close only their own searchers.
    """

    def __init__(self, folder: Path, manifest: Manifest, store: DocStore, searchers: dict[str, RetrieverSearcher],
                 options: OpenOptions, seq: int | None = None, components: Mapping[str, Component] | None = None,
                 owns_store: bool = True) -> None:
        self.folder = folder
        self.manifest = manifest
        self.store = store
        self.searchers = searchers
        self.options = options
        self.seq = seq
        self._components = dict(components or {})
        self._owns_store = owns_store

    @classmethod
    def open(cls, folder: Path, options: OpenOptions | None = None, retrievers: Sequence[str] | None = None,
             **overrides: Any) -> Searcher:
        """Open an index folder read-only; only ``retrievers`` (default: all the index has) are loaded.

        ``options.verify`` checks the files against the manifest first: "full" (sizes and sha256), "size",
        "off". After live writes this reads the index as of its last checkpoint; writes still only in its
        write-ahead log are seen through :class:`indexes.indexing.live.LiveIndex`, which replays them.
        ``overrides`` replace single options: ``Searcher.open(path, device="cpu", verify="off")``.
        """
        options = replace(options or OpenOptions(), **overrides)
        folder = Path(folder).resolve()
        manifest = Manifest.read(folder)
        verify_files(folder, manifest, options.verify)
        wanted = list(dict.fromkeys(retrievers)) if retrievers is not None else list(manifest.retrievers)
        check_retrievers(manifest, wanted)
        if manifest.shards:
            return cls._open_shards(folder, manifest, options, wanted)
        store = DocStore.open(folder)
        try:
            # After live writes, the files on disk hold the state of the last checkpoint (seq live_seq):
            # read the document store at that seq too, and hide dead vectors that FAISS still holds.
            seq = manifest.live_seq if manifest.live_seq else None
            view = ViewState(bitmap=store.live_bitmap(manifest.live_seq) if store.has_versions() else None)
            encoders = load_encoders(manifest, wanted, options.device)
            components = open_components(folder, manifest, wanted, options)
        except BaseException:
            store.close()
            raise
        try:
            searchers = open_searchers(components, encoders, store, view, options.batch_size)
        except BaseException:
            for component in components.values():
                component.close()
            store.close()
            raise
        return cls(folder, manifest, store, searchers, options, seq=seq, components=components)._warmed()

    @classmethod
    def _open_shards(cls, folder: Path, manifest: Manifest, options: OpenOptions, wanted: list[str]) -> Searcher:
        """A sharded index (:mod:`indexes.storage.docstore.shards`): each retriever gets one searcher over all shards
        (``Component.merged_searcher``: one Lucene ``MultiReader``, dense hits merged by score), and the shards'
        document stores are read as one. Rankings equal an unsharded index's of the same documents."""
        stores: list[DocStore] = []
        views: list[ViewState] = []
        components: dict[str, Component] = {}
        searchers: dict[str, RetrieverSearcher] = {}
        try:
            encoders = load_encoders(manifest, wanted, options.device)
            per_shard: list[dict[str, Component]] = []
            for i, rel in enumerate(manifest.shards):
                shard = folder / rel
                shard_manifest = Manifest.read(shard)
                store = DocStore.open(shard)
                stores.append(store)
                views.append(ViewState(bitmap=store.live_bitmap(shard_manifest.live_seq) if store.has_versions() else None))
                opened = open_components(shard, shard_manifest, wanted, options)
                per_shard.append(opened)
                components.update({f"{name}@{i}": c for name, c in opened.items()})
            for name in wanted:
                shard_components = [opened[name] for opened in per_shard]
                searchers[name] = type(shard_components[0]).merged_searcher(shard_components, encoders[name], stores,
                                                                             views, options.batch_size)
        except BaseException:
            for searcher in searchers.values():
                searcher.close()
            for component in components.values():
                component.close()
            for store in stores:
                store.close()
            raise
        return cls(folder, manifest, ShardedStore(stores), searchers, options,  # type: ignore[arg-type]
                   components=components)._warmed()

    def _warmed(self) -> Searcher:
        """This searcher once its default query modes are warmed (closed if that fails), with what it loaded frozen."""
        try:
            self.warm_modes()
        except BaseException:
            self.close()
            raise
        freeze_loaded()
        return self

    def warm_modes(self) -> None:
        """Check the default query modes and prepare them, here rather than in the first requests: an ONNX graph is
        exported and loaded once; on CUDA the single-query graphs are captured (one query), and the encoding pipeline
        with its small-batch graphs is made (two queries: what the micro-batcher sends under load)."""
        for name in self.searchers:
            try:
                mode = self.default_mode(name)
            except KindError as exc:
                raise SearchError(f"default query mode: {exc}") from None
            if mode:
                for queries in (["warm up"], ["warm up", "warm up"]):
                    self.searchers[name].search(queries, 1, 1, None, mode)
        warm_fusion(min(len(self.searchers), 4))  # the compiled fusion too (a first compile takes seconds)

    @property
    def retrievers(self) -> list[str]:
        return list(self.searchers)

    def __enter__(self) -> Searcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _checked_vectors(self, queries: Sequence[str], names: Sequence[str],
                         vectors: Mapping[str, Sequence[Any]]) -> None:
        searched_only(vectors, names, "a query vector is given for {name}")
        for name, given in vectors.items():
            kind = get_kind(self.manifest.retrievers[name].kind)
            if kind.vector_input is None:
                raise SearchError(f"retriever {name!r} ({kind.name}) searches query text only; send 'query'")
            if len(given) != len(queries):
                raise SearchError(f"{len(given)} query vectors for {name!r}, for {len(queries)} queries")
        text_needed = any(name not in vectors for name in names)
        for i, query in enumerate(queries):
            if not isinstance(query, str) or (text_needed and not query.strip()):
                raise SearchError(f"query {i} is empty; send some text to search for")

    def search(self, query: str | SearchRequest, k: int | None = None, **options: Any) -> SearchResult:
        """One query: ``search("wing flutter", k=5, retrievers=["bm25", "splade"])``, or ``search(request)`` with a
        :class:`~retrieval.search.request.SearchRequest` (client vectors included). Keywords are the request's
        fields (see :meth:`batch_search`)."""
        if isinstance(query, SearchRequest):
            if k is not None or options:
                raise TypeError("Searcher.search takes a SearchRequest or keywords, not both")
            return self.batch_search([query.query], query.options(), vectors=query.vectors() or None)[0]
        if k is not None:
            options["k"] = k
        return self.batch_search([query], **options)[0]

    def batch_search(self, queries: Sequence[str], request: SearchOptions | None = None, *,
                     vectors: Mapping[str, Sequence[Any]] | None = None, deadline: float | None = None,
                     **options: Any) -> list[SearchResult]:
        """Many queries with the same options: ``request`` (a :class:`~retrieval.search.request.SearchOptions`), or
        keywords that build one (``k=10, retrievers=["bm25"], fusion=Fusion(method="weighted", weights=...)``; the
        library also takes its dataclasses there: ``FusionConfig``, ``PrfConfig``, ``RerankConfig``, and
        ``query_modes`` for ``query_mode``). Every field is documented on the request; unset ``depth`` and RRF ``k``
        take the open options'. ``vectors`` maps retriever names to query vectors a client computed, one per query
        (dense: a list of floats, scaled to unit length; learned sparse: ``{token: weight}`` in the model's float
        weights, quantized as the index's queries are): those retrievers encode nothing, and where every retriever
        searched has vectors the query text may be empty. ``deadline`` (a ``time.perf_counter()`` instant; default:
        now plus the request's ``timeout_ms``) is checked between stages (see ``SearchOptions.timeout_ms``).
        """
        if request is None:
            if "query_modes" in options:
                options["query_mode"] = options.pop("query_modes")
            # A keyword given as None means "the default", as it did when these were parameters.
            request = SearchOptions.parse({key: value for key, value in options.items() if value is not None})
        elif options:
            raise TypeError("Searcher.batch_search takes a request or keywords, not both")
        if deadline is None and request.timeout_ms is not None:
            deadline = time.perf_counter() + request.timeout_ms / 1000.0
        return self._run(list(queries), request, vectors or {}, deadline)

    def _run(self, queries: list[str], request: SearchOptions, vectors: Mapping[str, Sequence[Any]],
             deadline: float | None = None) -> list[SearchResult]:
        """The request for these queries: each retriever searched (``max(depth, offset + k)`` candidates when
        fusing), the lists fused, reranked, paged, and the page filled with text and highlights as asked."""
        k, offset, min_score, explain, include_text = (request.k, request.offset, request.min_score, request.explain,
                                                        request.include_text)
        exact = request.exact or self.options.exact
        depth = request.depth if request.depth is not None else self.options.depth
        queries = [clean_query(q) if isinstance(q, str) else q for q in queries]
        names = request.searched(self.retrievers, self.manifest.name)
        self._checked_vectors(queries, names, vectors)
        rerank = request.rerank.config() if request.rerank is not None else None
        if rerank is not None:
            try:
                rerank.check(offset + k)
            except RerankError as exc:
                raise SearchError(str(exc)) from None
            if any(not q.strip() for q in queries):
                raise SearchError("rerank reads the query text; send 'query' with the vectors")
        marking = HighlightConfig() if request.highlight else None
        if marking is not None and any(not q.strip() for q in queries):
            raise SearchError("highlight marks the query's words; send 'query' with the vectors")
        feedback = self._feedback(request.prf_configs(), names)
        modes = self._modes(request.query_mode or {}, names)
        where = self.checked_filter(request.filter)
        started = time.perf_counter()
        late = (lambda: time.perf_counter() >= deadline) if deadline is not None else (lambda: False)
        if late():
            raise SearchTimeout(f"timeout_ms {request.timeout_ms} passed before the search started; retry, with a "
                                "longer timeout_ms or when the server is less busy")
        skipped: list[str] = []
        fusing = len(names) > 1
        per_retriever_depth = max(depth, offset + k) if fusing else offset + k
        runs: dict[str, list[Sequence[ScoredDoc]]] = {}
        timings: dict[str, float] = {}
        def retrieve(name: str) -> RetrieverRuns:
            try:
                return self.searchers[name].search(queries, per_retriever_depth, self.options.threads,
                                                   feedback.get(name), modes.get(name), vectors.get(name), where,
                                                   exact)
            except KindError as exc:  # a client vector that does not fit this retriever
                raise SearchError(str(exc)) from None

        if fusing and all(getattr(self.searchers[name], "remote", False) for name in names):
            # Retrievers in other processes (shards on Ray Serve) wait on the network, not on this CPU: all at once.
            results = dict(zip(names, _REMOTE_CALLS.map(retrieve, names)))
        else:
            results = {}
            for name in names:  # past the deadline, the retrievers not yet searched are skipped (one always runs)
                if results and late():
                    skipped.append(name)
                else:
                    results[name] = retrieve(name)
        if skipped:
            names = [name for name in names if name in results]
        for name in names:
            result = results[name]
            runs[name] = result.runs
            timings[f"{name}_encode"] = result.encode_ms / len(queries)
            timings[f"{name}_search"] = result.search_ms / len(queries)
        if not fusing and rerank is None and marking is None and min_score is None and not explain and not include_text:
            return self._plain_pages(runs[names[0]], names, k, offset, started, timings)
        fuse_started = time.perf_counter()
        fusion = request.fusion.config(self.options.rrf_k)  # built here: the plain pages above need none
        if skipped:
            fusion = fusion.without(skipped)
        # Scores sort descending, so a min_score cut keeps a prefix: offset + k fused documents (or the reranker's
        # depth) are all a request can show.
        shown = max(offset + k, rerank.depth if rerank is not None else 0)
        fused_lists = [self._fuse({n: runs[n][q] for n in names}, fusion, fusing, shown, explain)
                       for q in range(len(queries))]
        if min_score is not None:
            fused_lists = [[d for d in fused if d.score >= min_score] for fused in fused_lists]
        timings["fuse"] = (time.perf_counter() - fuse_started) * 1000.0 / len(queries)
        before: dict[tuple[int, str], RetrieverScore] = {}
        if rerank is not None and late():
            skipped.append("rerank")
            rerank = None
        if rerank is not None:
            rerank_started = time.perf_counter()
            fused_lists, before = self._rerank(queries, fused_lists, rerank)
            timings["rerank"] = (time.perf_counter() - rerank_started) * 1000.0 / len(queries)
        fused_lists = [fused[offset:] for fused in fused_lists]
        wanted = include_text or marking is not None
        docs = self.store.get(list({d.doc_id for fl in fused_lists for d in fl[:k]}), self.seq) if wanted else {}
        marked: dict[tuple[int, str], str | None] = {}
        if marking is not None and late():
            skipped.append("highlight")
            marking = None
        if marking is not None:
            highlight_started = time.perf_counter()
            for q, fused in enumerate(fused_lists):
                terms = query_terms(queries[q])
                for doc in fused[:k]:
                    stored = docs.get(doc.doc_id)
                    if stored is not None:
                        marked[q, doc.doc_id] = mark(stored.text or stored.title, terms, marking)
            timings["highlight"] = (time.perf_counter() - highlight_started) * 1000.0 / len(queries)
        took = (time.perf_counter() - started) * 1000.0 / len(queries)
        results = []
        for q, fused in enumerate(fused_lists):
            hits = []
            for rank, doc in enumerate(fused[:k], start=offset + 1):
                hit = Hit(doc.doc_id, doc.score, rank)
                if explain:
                    hit.explain = {n: doc.sources.get(n) for n in names}
                    hit.contributions = dict(doc.contributions)
                    hit.before_rerank = before.get((q, doc.doc_id))
                if include_text and doc.doc_id in docs:
                    stored = docs[doc.doc_id]
                    hit.title, hit.text, hit.metadata = stored.title, stored.text, stored.metadata
                if marked:
                    hit.highlight = marked.get((q, doc.doc_id))
                hits.append(hit)
            results.append(SearchResult(hits=hits, retrievers=names, took_ms=took, timings_ms=dict(timings),
                                        skipped=list(skipped) or None))
        return results

    @staticmethod
    def _plain_pages(runs: Sequence[Sequence[ScoredDoc]], names: list[str], k: int, offset: int, started: float,
                     timings: dict[str, float]) -> list[SearchResult]:
        """One retriever's ranks ``offset + 1`` to ``offset + k`` as hits, straight from its runs: what fusing one
        list, paging it and building hits gives when nothing else was asked (no explain, text, highlight, rerank,
        min_score), without the fused objects in between (on Cranfield they cost as much as the SPLADE search)."""
        timings["fuse"] = 0.0
        results = []
        for run in runs:
            if isinstance(run, Run):
                page = zip(run.ids[offset:offset + k], run.scores[offset:offset + k])
            else:
                page = ((d.doc_id, d.score) for d in run[offset:offset + k])
            hits = [Hit(doc_id, score, rank) for rank, (doc_id, score) in enumerate(page, start=offset + 1)]
            results.append(SearchResult(hits, names, 0.0, dict(timings)))
        took = (time.perf_counter() - started) * 1000.0 / max(len(runs), 1)
        for result in results:
            result.took_ms = took
        return results

    def checked_filter(self, given: Mapping[str, Any] | Filter | None) -> Filter | None:
        """A filter object parsed and checked against this index's metadata fields (a parsed tree passes)."""
        if given is None or not isinstance(given, Mapping):
            return given
        try:
            return parse_filter(given, FieldSchema(self.manifest.fields))
        except FilterError as exc:
            raise SearchError(str(exc)) from None

    def _feedback(self, prf: Mapping[str, PrfConfig], names: Sequence[str]) -> dict[str, PrfConfig]:
        """Each requested PRF setting checked against its retriever's kind, with the kind's defaults filled in."""
        searched_only(prf, names, "prf names {name}")
        try:
            return {name: get_kind(self.manifest.retrievers[name].kind).prf(name, config) for name, config in prf.items()}
        except KindError as exc:
            raise SearchError(str(exc)) from None

    def _rerank(self, queries: Sequence[str], fused_lists: list[list[FusedDoc]], config: RerankConfig
                ) -> tuple[list[list[FusedDoc]], dict[tuple[int, str], RetrieverScore]]:
        """Each query's fused top ``config.depth`` re-scored by the cross-encoder (title + text, as indexed) and
        re-ordered (ties keep the fused order); the list ends there. All pairs go through one batched call."""
        try:
            reranker = shared_reranker(config.model, self.options.device)
        except (RerankError, ModelError) as exc:
            raise SearchError(str(exc)) from None
        tops = [fused[: config.depth] for fused in fused_lists]
        stored = self.store.get(list({d.doc_id for top in tops for d in top}), self.seq)
        ranked = reranker.reorder(queries, [[d.doc_id for d in top] for top in tops],
                                  {doc_id: doc.contents for doc_id, doc in stored.items()}, config.batch_size)
        before = {(q, doc.doc_id): RetrieverScore(rank, doc.score)
                  for q, top in enumerate(tops) for rank, doc in enumerate(top, start=1)}
        return [[replace(top[i], score=score) for i, score in order] for top, order in zip(tops, ranked)], before

    def _modes(self, requested: Mapping[str, str], names: Sequence[str]) -> dict[str, str]:
        """Each searched retriever's query mode: the request's, else the open options' default for its name or
        its kind, checked against its kind."""
        searched_only(requested, names, "query_mode names {name}")
        try:
            return {name: mode for name, mode in ((n, self.default_mode(n, requested.get(n))) for n in names) if mode}
        except KindError as exc:
            raise SearchError(str(exc)) from None

    def default_mode(self, name: str, mode: str | None = None) -> str | None:
        """``mode`` (or the options' default for retriever ``name`` or its kind) checked against its kind."""
        kind = self.manifest.retrievers[name].kind
        defaults = self.options.query_modes
        mode = mode or defaults.get(name) or defaults.get(kind)
        return get_kind(kind).query_mode(name, mode) if mode else None

    @staticmethod
    def _fuse(runs: Mapping[str, Sequence[ScoredDoc]], config: FusionConfig, fusing: bool, limit: int,
              explain: bool) -> list[FusedDoc]:
        if not fusing:
            (name, run), = runs.items()
            if not explain:  # a Run makes hits for the page only
                return [FusedDoc(d.doc_id, d.score) for d in run[:limit]]
            return [FusedDoc(d.doc_id, d.score, {name: RetrieverScore(i, d.score, None, d.score)}, {name: d.score})
                    for i, d in enumerate(run[:limit], start=1)]
        return fuse(runs, config, limit, explain)

    def close(self) -> None:
        for searcher in self.searchers.values():
            searcher.close()
        for component in self._components.values():
            component.close()
        if self._owns_store:
            self.store.close()
        if self._components:  # opened by Searcher.open, which froze what it loaded
            thaw()
