"""The BEIR harness: index once per dataset, batch-search every method, score, test, report.

Single retrievers run through ``Searcher.batch_search`` at full depth; hybrids fuse those same
runs with ``retrieval.search.fusion.fuse`` (the function the searcher itself uses), so a hybrid's numbers
are the ones the service would return for that request, without searching twice.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from eval.beir_data import Dataset, load_dataset
from eval.leaderboard_data import slug
from eval.metrics import SELF_RETRIEVAL_DATASETS, Metric, Run, depth_needed, evaluate, mean, remove_self_hits
from eval.significance import paired_randomization
from indexes.indexing.builder import build_index
from indexes.kinds import get_kind, parse_retrievers
from indexes.storage.docstore.corpus import file_sha256
from indexes.storage.docstore.layout import IndexNotFoundError, IndexRoot
from indexes.storage.docstore.manifest import Manifest, ManifestError
from retrieval.core.options import BuildOptions, OpenOptions
from retrieval.core.types import RetrieverSpec, ScoredDoc
from retrieval.search.fusion import FEATURE_DEPTH, FEATURES, Adaptive, FusionConfig, fuse, list_features
from retrieval.search.pipeline import Searcher
from retrieval.search.specs import MethodSpec, Source, parse_spec

SelfHits = Literal["auto", "remove", "keep"]
QUERY_CHUNK = 256


@dataclass
class EvalOptions:
    methods: list[MethodSpec]
    metrics: list[Metric]
    out: Path
    index_root: Path
    build: BuildOptions
    open: OpenOptions = field(default_factory=OpenOptions)
    split: str = "test"
    self_hits: SelfHits = "auto"
    tune: bool = False
    folds: int = 5
    seed: int = 42
    progress: bool = True
    rerank: str | None = None  # a cross-encoder: every method is also scored with its top rerank_depth re-ranked
    rerank_depth: int = 100


@dataclass
class MethodResult:
    dataset: str
    method: str
    queries: int
    scores: dict[str, float]
    encode_ms: float
    search_ms: float
    fuse_ms: float
    p_vs_bm25: float | None = None
    p_vs_best_single: float | None = None
    best_single: str | None = None
    # The method this one refines (a PRF run: the same without PRF; qpp: the tuned weighted hybrid).
    base: str | None = None
    p_vs_base: float | None = None
    tuned_weights: list[dict[str, float]] | None = None
    # QPP-weighted: per fold {weights, coefficients, centers}, then one fit on all queries (for serving).
    tuned_adaptive: list[dict[str, object]] | None = None
    per_query: dict[str, dict[str, float]] = field(default_factory=dict, repr=False)

    @property
    def latency_ms(self) -> float:
        return self.encode_ms + self.search_ms + self.fuse_ms


def _index_matches(manifest: Manifest, sha: str, specs: Sequence[RetrieverSpec], build: BuildOptions) -> bool:
    if not (manifest.files or manifest.shards) or manifest.corpus_sha256 != sha or max(1, len(manifest.shards)) != build.shards:
        return False
    for spec in specs:
        entry = manifest.retrievers.get(spec.name)
        if entry is None or not get_kind(spec.kind).matches(entry, spec, build):
            return False
    return True


def needed_specs(names: Sequence[str], build: BuildOptions) -> list[RetrieverSpec]:
    """The specs (from ``build.retrievers``) of the retrievers the methods use; a kind's own name needs none."""
    known = {spec.name: spec for spec in parse_retrievers(build.retrievers)}
    return list(parse_retrievers([known.get(name, name) for name in names]))


def ensure_index(dataset: Dataset, retrievers: Sequence[str], options: EvalOptions, log: list[str]) -> Path:
    """Reuse ``beir-NAME`` when its manifest matches the corpus checksum, models and parameters, else build it."""
    root = IndexRoot(options.index_root)
    name = slug(f"beir-{dataset.name}")
    sha = file_sha256(dataset.corpus)
    specs = needed_specs(retrievers, options.build)
    try:
        folder = root.resolve(name)
        if _index_matches(Manifest.read(folder), sha, specs, options.build):
            log.append(f"{dataset.name}: reusing index {name}")
            return folder
    except (IndexNotFoundError, ManifestError):
        pass
    log.append(f"{dataset.name}: building index {name} ({', '.join(str(s) for s in specs)})")
    build_index(dataset.corpus, name, root, options.build.with_(retrievers=tuple(specs)))
    return root.resolve(name)


def _single_runs(searcher: Searcher, texts: list[str], source: Source, depth: int
                 ) -> tuple[list[list[ScoredDoc]], float, float]:
    """One source's ranked lists for every query, searched as the request :meth:`Source.request` gives."""
    runs: list[list[ScoredDoc]] = []
    encode = search = 0.0
    request = source.request(depth)
    for start in range(0, len(texts), QUERY_CHUNK):
        chunk = texts[start : start + QUERY_CHUNK]
        results = searcher.batch_search(chunk, request)
        encode += results[0].timings_ms.get(f"{source.retriever}_encode", 0.0) * len(chunk)
        search += results[0].timings_ms.get(f"{source.retriever}_search", 0.0) * len(chunk)
        runs.extend([ScoredDoc(h.id, h.score) for h in r.hits] for r in results)
    return runs, encode / len(texts), search / len(texts)


def _to_run(qids: list[str], lists: list[list[ScoredDoc]], depth: int, drop_self: bool) -> Run:
    run = {qid: {d.doc_id: d.score for d in docs[: depth + 1]} for qid, docs in zip(qids, lists)}
    if drop_self:
        run = remove_self_hits(run)
    return {qid: dict(sorted(docs.items(), key=lambda kv: (-kv[1], kv[0]))[:depth]) for qid, docs in run.items()}


def _fuse_all(spec: MethodSpec, config: FusionConfig, singles: dict[str, list[list[ScoredDoc]]], indices: Sequence[int]
              ) -> tuple[dict[int, list[ScoredDoc]], float]:
    started = time.perf_counter()
    fused = {}
    for i in indices:
        docs = fuse({r: singles[r][i] for r in spec.retrievers}, config)
        fused[i] = [ScoredDoc(d.doc_id, d.score) for d in docs]
    return fused, (time.perf_counter() - started) * 1000.0 / max(1, len(indices))


def _weight_grid(retrievers: Sequence[str]) -> list[dict[str, float]]:
    steps = [0.0, 0.25, 0.5, 0.75, 1.0]
    grid = []
    for combo in np.array(np.meshgrid(*[steps] * len(retrievers))).T.reshape(-1, len(retrievers)):
        if combo.max() == 1.0:  # scale-free: fix the largest weight at 1, skips duplicates and all-zero
            grid.append(dict(zip(retrievers, (float(w) for w in combo))))
    return grid


class _Scorer:
    """Per-query primary metric of fused rankings, for the CV searches (held-out folds never leak in)."""

    def __init__(self, spec: MethodSpec, singles: dict[str, list[list[ScoredDoc]]], qids: list[str],
                 dataset: Dataset, options: EvalOptions, depth: int, drop_self: bool) -> None:
        self.spec, self.singles, self.qids = spec, singles, qids
        self.dataset, self.primary, self.depth, self.drop_self = dataset, options.metrics[0], depth, drop_self

    def __call__(self, config: FusionConfig, indices: Sequence[int]) -> np.ndarray:
        fused, _ = _fuse_all(self.spec, config, self.singles, indices)
        subset = [self.qids[i] for i in indices]
        run = _to_run(subset, [fused[i] for i in indices], self.depth, self.drop_self)
        per_query = evaluate(run, self.dataset.qrels, [self.primary])[self.primary.name]
        return np.array([per_query.get(q, 0.0) for q in subset])


def _folds(n: int, options: EvalOptions) -> tuple[list[int], list[list[int]]]:
    order = list(range(n))
    random.Random(options.seed).shuffle(order)
    return order, [order[f :: options.folds] for f in range(options.folds)]


def _grid_table(spec: MethodSpec, score: _Scorer, n: int) -> tuple[list[dict[str, float]], np.ndarray]:
    """Per-query primary score of every weight-grid point, computed once for all folds."""
    assert spec.fusion is not None
    grid = _weight_grid(spec.retrievers)
    table = np.zeros((len(grid), n))
    for g, weights in enumerate(grid):
        config = FusionConfig(method="weighted", weights=weights, normalization=spec.fusion.normalization)
        table[g] = score(config, range(n))
    return grid, table


def _tune(spec: MethodSpec, score: _Scorer, options: EvalOptions
          ) -> tuple[dict[int, list[ScoredDoc]], list[dict[str, float]], float]:
    """k-fold CV over queries: pick weights on k-1 folds, keep only the held-out fold's ranking."""
    assert spec.fusion is not None
    n = len(score.qids)
    order, folds = _folds(n, options)
    grid, table = _grid_table(spec, score, n)
    held_out: dict[int, list[ScoredDoc]] = {}
    chosen: list[dict[str, float]] = []
    fuse_ms = 0.0
    for fold in folds:
        held = set(fold)
        train = [i for i in order if i not in held]
        best = int(np.argmax(table[:, train].mean(axis=1)))
        chosen.append(grid[best])
        config = FusionConfig(method="weighted", weights=grid[best], normalization=spec.fusion.normalization)
        fused, ms = _fuse_all(spec, config, score.singles, fold)
        held_out.update(fused)
        fuse_ms += ms * len(fold)
    return held_out, chosen, fuse_ms / n


THETAS = (-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0)


def _fit_qpp(spec: MethodSpec, score: _Scorer, features: list[dict[str, dict[str, float]]], weights: dict[str, float],
             train: list[int]) -> Adaptive:
    """Coefficients by coordinate ascent (two sweeps over :data:`THETAS`) on ``train``, base weights fixed."""
    assert spec.fusion is not None
    centers = {r: {f: float(np.mean([features[i][r][f] for i in train])) for f in FEATURES} for r in spec.retrievers}
    theta = dict.fromkeys(FEATURES, 0.0)

    def value(coefficients: dict[str, float]) -> float:
        config = FusionConfig(method="weighted", weights=weights, normalization=spec.fusion.normalization,  # type: ignore[union-attr]
                              adaptive=Adaptive(dict(coefficients), centers))
        return float(score(config, train).mean())

    best = value(theta)
    for _ in range(2):
        for feature in FEATURES:
            for candidate in THETAS:
                if candidate == theta[feature]:
                    continue
                trial = {**theta, feature: candidate}
                result = value(trial)
                if result > best + 1e-9:
                    best, theta = result, trial
    return Adaptive(theta, centers)


def _tune_qpp(spec: MethodSpec, full: _Scorer, options: EvalOptions
              ) -> tuple[dict[int, list[ScoredDoc]], list[dict[str, object]], float]:
    """QPP-weighted fusion, cross-validated: per fold, base weights (grid) then coefficients, both on
    the training folds; the held-out fold is fused with them. A last fit on every query is reported
    for serving, never scored.

    The search fuses each list's top :data:`FEATURE_DEPTH` hits (the features read no further, and
    the primary metric's cut-off is far above it) so that it stays fast at depth 1,000; the held-out
    fold is fused from the full lists.
    """
    assert spec.fusion is not None
    score = full
    if (full.primary.cutoff or 1000) <= FEATURE_DEPTH:  # else (recall@1000, map) the search needs full lists
        cut = {r: [docs[: FEATURE_DEPTH + 1] for docs in lists] for r, lists in full.singles.items()}
        score = _Scorer(spec, cut, full.qids, full.dataset, options, FEATURE_DEPTH, full.drop_self)
    n = len(score.qids)
    order, folds = _folds(n, options)
    grid, table = _grid_table(spec, score, n)
    features = [list_features({r: score.singles[r][i] for r in spec.retrievers}) for i in range(n)]
    held_out: dict[int, list[ScoredDoc]] = {}
    chosen: list[dict[str, object]] = []
    fuse_ms = 0.0
    for fold in [*folds, []]:
        held = set(fold)
        train = [i for i in order if i not in held]
        weights = grid[int(np.argmax(table[:, train].mean(axis=1)))]
        adaptive = _fit_qpp(spec, score, features, weights, train)
        chosen.append({"weights": weights, "coefficients": dict(adaptive.coefficients),
                       "centers": {r: {f: round(v, 6) for f, v in c.items()} for r, c in (adaptive.centers or {}).items()}})
        if fold:
            config = FusionConfig(method="weighted", weights=weights, normalization=spec.fusion.normalization,
                                  adaptive=adaptive)
            fused, ms = _fuse_all(spec, config, full.singles, fold)
            held_out.update(fused)
            fuse_ms += ms * len(fold)
    return held_out, chosen, fuse_ms / n


def write_run(path: Path, run: Run, tag: str) -> None:
    with path.open("w") as handle:
        for qid in sorted(run):
            ranked = sorted(run[qid].items(), key=lambda kv: (-kv[1], kv[0]))
            for rank, (doc, score) in enumerate(ranked, start=1):
                handle.write(f"{qid} Q0 {doc} {rank} {score:.6f} {tag}\n")


def evaluate_dataset(folder: Path, options: EvalOptions, log: list[str]) -> list[MethodResult]:
    dataset = load_dataset(folder, options.split)
    sources: dict[str, Source] = {}
    for m in options.methods:
        sources.update(m.sources)
    needed = sorted({s.retriever for s in sources.values()})
    index_folder = ensure_index(dataset, needed, options, log)
    searcher = Searcher.open(index_folder, options.open, retrievers=needed)
    depth = depth_needed(options.metrics)
    drop_self = options.self_hits == "remove" or (options.self_hits == "auto" and dataset.name.lower() in SELF_RETRIEVAL_DATASETS)
    qids = list(dataset.queries)
    texts = [dataset.queries[q] for q in qids]
    out = options.out / slug(dataset.name)
    out.mkdir(parents=True, exist_ok=True)

    singles: dict[str, list[list[ScoredDoc]]] = {}
    cost: dict[str, tuple[float, float]] = {}
    fetch = depth + 1 if drop_self else depth  # one spare hit per query for the self hit to be dropped
    for name, source in sorted(sources.items()):
        singles[name], enc, sea = _single_runs(searcher, texts, source, fetch)
        cost[name] = (enc, sea)
    searcher.close()

    results: list[MethodResult] = []

    def record(name: str, spec: MethodSpec, lists: list[list[ScoredDoc]], fuse_ms: float,
               tuned: list[dict[str, float]] | None = None, adaptive: list[dict[str, object]] | None = None,
               base: str | None = None) -> None:
        run = _to_run(qids, lists, depth, drop_self)
        per_query = evaluate(run, dataset.qrels, options.metrics)
        write_run(out / f"{slug(name)}.trec", run, slug(name))
        (out / f"{slug(name)}.metrics.json").write_text(json.dumps(per_query, indent=1, sort_keys=True))
        encode = sum(cost[r][0] for r in spec.retrievers)
        search = sum(cost[r][1] for r in spec.retrievers)
        results.append(MethodResult(dataset.name, name, len(next(iter(per_query.values()))),
                                    {m: mean(v) for m, v in per_query.items()}, encode, search, fuse_ms,
                                    tuned_weights=tuned, tuned_adaptive=adaptive, per_query=per_query,
                                    base=base if base is not None else _without_prf(name, spec)))
        if options.rerank and " >> rerank" not in name:
            started = time.perf_counter()
            reranked = rerank_lists(index_folder, texts, lists, options.rerank, options.rerank_depth,
                                    options.open.device)
            rerank_ms = (time.perf_counter() - started) * 1000.0 / max(len(qids), 1)
            record(f"{name} >> rerank({options.rerank}, {options.rerank_depth})", spec, reranked, fuse_ms + rerank_ms,
                   base=name)

    for spec in options.methods:
        if spec.fusion is None:
            record(spec.name, spec, singles[spec.name], 0.0)
            continue
        score = _Scorer(spec, singles, qids, dataset, options, depth, drop_self)
        if spec.adaptive:
            held_out, fits, fuse_ms = _tune_qpp(spec, score, options)
            name = (f"qpp:{'+'.join(spec.retrievers)}:{spec.fusion.normalization} "
                    f"[QPP-weighted (nqc, margin, agreement), {options.folds}-fold CV held-out]")
            tuned_name = (f"weighted:{'+'.join(spec.retrievers)}:{spec.fusion.normalization} "
                          f"[tuned, {options.folds}-fold CV held-out]")
            record(name, spec, [held_out[i] for i in range(len(qids))], fuse_ms, adaptive=fits, base=tuned_name)
            continue
        fused, fuse_ms = _fuse_all(spec, spec.fusion, singles, range(len(qids)))
        record(spec.name, spec, [fused[i] for i in range(len(qids))], fuse_ms)
        if options.tune and spec.fusion.method == "weighted":
            held_out, chosen, fuse_ms = _tune(spec, score, options)
            name = (f"weighted:{'+'.join(spec.retrievers)}:{spec.fusion.normalization} "
                    f"[tuned, {options.folds}-fold CV held-out]")
            record(name, spec, [held_out[i] for i in range(len(qids))], fuse_ms, chosen)
    _significance(results, options.metrics[0].name)
    summary = [{k: v for k, v in asdict(r).items() if k != "per_query"} for r in results]
    (out / "summary.json").write_text(json.dumps({"dataset": dataset.name, "queries": len(qids), "depth": depth,
                                                  "self_hits_removed": drop_self, "methods": summary}, indent=1))
    return results


def rerank_lists(index_folder: Path, texts: Sequence[str], lists: list[list[ScoredDoc]], model: str, depth: int,
                 device: str) -> list[list[ScoredDoc]]:
    """Each list's top ``depth`` re-ordered by the cross-encoder (query against title + text), the rest after it
    in its old order; scores become descending ranks, so a run file keeps exactly this order."""
    from indexes.storage.docstore.store import DocStore
    from retrieval.search.rerank import shared_reranker

    reranker = shared_reranker(model, device)
    store = DocStore.open(index_folder)
    try:
        stored = store.get(list({d.doc_id for run in lists for d in run[:depth]}))
    finally:
        store.close()
    ranked = reranker.reorder(texts, [[d.doc_id for d in run[:depth]] for run in lists],
                              {doc_id: doc.contents for doc_id, doc in stored.items()})
    out = []
    for run, order in zip(lists, ranked):
        ordered = [run[i] for i, _ in order] + list(run[depth:])
        out.append([ScoredDoc(d.doc_id, float(len(ordered) - i)) for i, d in enumerate(ordered)])
    return out


def _without_prf(name: str, spec: MethodSpec) -> str | None:
    """The same method without its PRF, query modes and exact flag (``bm25+rm3`` -> ``bm25``, ``splade@tokens`` ->
    ``splade``, ``splade!exact`` -> ``splade``: an exact run is compared with the default approximate one); None if it
    has none of them."""
    base = name
    for source in spec.sources.values():
        if source.prf is not None or source.mode is not None or source.exact:
            base = base.replace(source.name, source.retriever)
    return base if base != name else None


def _significance(results: list[MethodResult], primary: str) -> None:
    by_name = {r.method: r for r in results}
    for r in results:
        if r.base in by_name:
            r.p_vs_base = paired_randomization(r.per_query[primary], by_name[r.base].per_query[primary])
    singles = [r for r in results if "+" not in r.method and ":" not in r.method]
    best = max(singles, key=lambda r: r.scores[primary]) if singles else None
    for r in results:
        if "bm25" in by_name and r.method != "bm25":
            r.p_vs_bm25 = paired_randomization(r.per_query[primary], by_name["bm25"].per_query[primary])
        if best is not None and r.method != best.method:
            r.best_single = best.method
            r.p_vs_best_single = paired_randomization(r.per_query[primary], best.per_query[primary])


def parse_methods(retrievers: Sequence[str], hybrids: Sequence[str]) -> list[MethodSpec]:
    specs = [parse_spec(r) for r in retrievers] + [parse_spec(h) for h in hybrids]
    return list({s.name: s for s in specs}.values())
