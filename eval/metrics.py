"""Metrics with pytrec_eval (trec_eval semantics), named the way BEIR tables name them.

``ndcg@10`` -> ndcg_cut_10, ``recall@100`` -> recall_100, ``map`` -> map (full depth), ``map@100``
-> map_cut_100, ``p@10`` -> P_10; ``mrr@10`` is computed as BEIR does (reciprocal rank of the first
document with relevance > 0 within the top 10). Only queries that appear in the qrels are scored.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pytrec_eval

from retrieval.core.errors import HybridError

Run = dict[str, dict[str, float]]  # query id -> doc id -> score
SELF_RETRIEVAL_DATASETS = ("arguana", "quora")


class MetricError(HybridError, ValueError):
    pass


@dataclass(frozen=True)
class Metric:
    name: str  # as the user wrote it, lower-case: ndcg@10
    measure: str  # pytrec_eval measure family: ndcg_cut
    key: str  # pytrec_eval result key: ndcg_cut_10
    cutoff: int | None


_FAMILIES = {"ndcg": "ndcg_cut", "recall": "recall", "map": "map_cut", "p": "P", "mrr": "mrr"}


def parse_metrics(spec: str | Sequence[str]) -> list[Metric]:
    names = [s.strip().lower() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    metrics = []
    for name in names:
        if name == "map":
            metrics.append(Metric(name, "map", "map", None))
            continue
        match = re.fullmatch(r"(ndcg|recall|map|p|mrr)@(\d+)", name)
        if not match or int(match.group(2)) < 1:
            raise MetricError(f"unknown metric {name!r}; use ndcg@K, recall@K, map, map@K, p@K or mrr@K")
        family, cutoff = _FAMILIES[match.group(1)], int(match.group(2))
        metrics.append(Metric(name, family, f"{family}_{cutoff}", cutoff))
    if not metrics:
        raise MetricError("no metric given")
    return metrics


def depth_needed(metrics: Sequence[Metric], minimum: int = 100) -> int:
    return max([minimum] + [m.cutoff or 1000 for m in metrics])


def remove_self_hits(run: Run) -> Run:
    """Drop documents whose id equals the query id (BEIR's ignore_identical_ids, for ArguAna and Quora)."""
    return {qid: {d: s for d, s in docs.items() if d != qid} for qid, docs in run.items()}


def mrr_at(run: Run, qrels: Mapping[str, Mapping[str, int]], k: int) -> dict[str, float]:
    scores = {}
    for qid, docs in run.items():
        if qid not in qrels:
            continue
        ranked = sorted(docs.items(), key=lambda kv: (-kv[1], kv[0]))[:k]
        scores[qid] = next((1.0 / r for r, (d, _) in enumerate(ranked, start=1) if qrels[qid].get(d, 0) > 0), 0.0)
    return scores


def evaluate(run: Run, qrels: Mapping[str, Mapping[str, int]], metrics: Sequence[Metric]) -> dict[str, dict[str, float]]:
    """Per-query scores: metric name -> query id -> value."""
    judged = {qid: docs for qid, docs in run.items() if qid in qrels and docs}
    measures = {m.measure if m.cutoff is None else f"{m.measure}.{m.cutoff}" for m in metrics if m.measure != "mrr"}
    evaluator = pytrec_eval.RelevanceEvaluator({q: dict(d) for q, d in qrels.items()}, measures)
    raw = evaluator.evaluate(judged) if measures else {}
    out: dict[str, dict[str, float]] = {}
    for m in metrics:
        if m.measure == "mrr":
            out[m.name] = mrr_at(judged, qrels, m.cutoff or 10)
        else:
            out[m.name] = {qid: values[m.key] for qid, values in raw.items()}
    return out


def mean(values: Mapping[str, float]) -> float:
    return sum(values.values()) / len(values) if values else 0.0
