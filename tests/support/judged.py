"""A judged collection served: the BEIR harness run on the tiny dataset (:func:`tests.support.data.make_dataset`)
with BM25 and BM25+RM3 (no model to load), and the server over the harness's own index with the harness's reports as
its leaderboard. The workbench's browser tests and the client's tests use it (fixture ``judged`` in conftest)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tests.support.cli import run_cli
from tests.support.data import make_dataset
from tests.support.server import Server

SEARCH_KEY, ADMIN_KEY = "search-key", "admin-key"
INDEX = "beir-tiny"  # the harness names its index beir-DATASET


@dataclass
class Judged:
    server: Server
    dataset: Path  # the BEIR folder: corpus.jsonl, queries.jsonl, qrels/test.tsv
    reports: Path  # the harness's --out: results.json, tiny/*.metrics.json
    root: Path  # the index root the server serves


def run_harness(folder: Path) -> Judged:
    """The harness, then a server with a search key and an admin key (index creation may read from ``folder``)."""
    dataset, reports, root = make_dataset(folder), folder / "reports", folder / "root"
    proc = run_cli("eval", "beir", str(dataset), "--retrievers", "bm25", "--method", "bm25+rm3", "--out", str(reports),
                   "--quiet", root=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    server = Server(root, env={"HYBRID_API_KEYS": SEARCH_KEY, "HYBRID_ADMIN_KEYS": ADMIN_KEY,
                               "HYBRID_REPORTS_ROOT": str(reports), "HYBRID_CORPUS_ROOTS": str(folder)})
    return Judged(server, dataset, reports, root)
