"""The harness's reports, read back: the leaderboard (``results.json``) and each method's per-query metrics.

``hybrid eval beir --out OUT`` writes ``OUT/results.json`` (one row per method and dataset: mean scores, latencies,
p-values) and, per dataset, ``OUT/SLUG(dataset)/SLUG(method).metrics.json`` (``{metric: {query id: value}}``).
The service's ``GET /v1/leaderboard`` routes serve them to the workbench (``/ui``); this module only reads files, so
the server answers without the engine, and a method or dataset is looked up in the leaderboard before any path is
made from it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from retrieval.core.errors import HybridError, NotFoundError

RESULTS = "results.json"


class LeaderboardError(NotFoundError):
    """No leaderboard where the server looks, or a method or dataset it does not list."""


class UnreadableReportError(HybridError):
    """A report file that is not the harness's JSON."""

    http_status = 409


def slug(name: str) -> str:
    """A method's or dataset's name as the harness names its files."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UnreadableReportError(f"{path.name}: not a readable harness report ({type(exc).__name__})") from None


def read_leaderboard(root: Path) -> dict[str, Any]:
    """``results.json`` under ``root``, each row marked with whether its per-query metrics are there."""
    path = root.expanduser() / RESULTS
    if not path.is_file():
        raise LeaderboardError("no leaderboard on this server: run 'hybrid eval beir ... --out DIR' and serve with "
                               "HYBRID_REPORTS_ROOT=DIR")
    data = _read_json(path)
    rows = data.get("results") if isinstance(data, dict) else None
    if not isinstance(rows, list):
        raise UnreadableReportError(f"{RESULTS}: no 'results' list")
    for row in rows:
        row["per_query"] = _per_query_path(root, row.get("dataset", ""), row.get("method", "")).is_file()
    return data


def _per_query_path(root: Path, dataset: str, method: str) -> Path:
    return root.expanduser() / slug(dataset) / f"{slug(method)}.metrics.json"


@dataclass(frozen=True)
class Comparison:
    """Method ``a`` against method ``b`` on one dataset, query by query, in one metric."""

    dataset: str
    metric: str
    a: str
    b: str
    per_query: dict[str, tuple[float, float]]  # query id -> (a's value, b's value), the queries both were scored on

    @property
    def wins(self) -> int:
        return sum(1 for x, y in self.per_query.values() if x > y + 1e-9)

    @property
    def losses(self) -> int:
        return sum(1 for x, y in self.per_query.values() if y > x + 1e-9)

    @property
    def ties(self) -> int:
        return len(self.per_query) - self.wins - self.losses


def compare_methods(root: Path, dataset: str, a: str, b: str, metric: str | None = None) -> Comparison:
    """Per-query values of methods ``a`` and ``b`` on ``dataset`` in ``metric`` (default: the run's primary)."""
    board = read_leaderboard(root)
    listed = {(row.get("dataset"), row.get("method")) for row in board["results"]}
    for method in (a, b):
        if (dataset, method) not in listed:
            raise LeaderboardError(f"the leaderboard has no method {method[:200]!r} on dataset {dataset[:200]!r}")
    metric = metric or board.get("primary") or "ndcg@10"
    values = []
    for method in (a, b):
        path = _per_query_path(root, dataset, method)
        if not path.is_file():
            raise LeaderboardError(f"no per-query metrics for {method[:200]!r} on {dataset[:200]!r} "
                                   "(the harness writes them beside results.json)")
        scores = _read_json(path)
        if not isinstance(scores, dict) or metric not in scores:
            raise LeaderboardError(f"no per-query {metric[:50]!r} for {method[:200]!r}; the run has "
                                   f"{', '.join(scores) if isinstance(scores, dict) else 'none'}")
        values.append(scores[metric])
    common = sorted(set(values[0]) & set(values[1]), key=lambda q: (len(q), q))
    return Comparison(dataset, metric, a, b, {q: (float(values[0][q]), float(values[1][q])) for q in common})
