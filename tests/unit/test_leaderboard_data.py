"""Reading the harness's reports back (eval/leaderboard_data.py): what the leaderboard routes serve, and what they
refuse: a folder without results.json, a method or dataset the leaderboard does not list (no path is made from it)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eval.leaderboard_data import LeaderboardError, UnreadableReportError, compare_methods, read_leaderboard, slug


def _reports(root: Path) -> Path:
    rows = [{"dataset": "toy", "method": m, "queries": 3, "scores": {"ndcg@10": 0.5}} for m in ("bm25", "rrf:bm25+dense")]
    (root / "toy").mkdir(parents=True)
    (root / "results.json").write_text(json.dumps({"command": "hybrid eval beir toy", "primary": "ndcg@10", "results": rows}))
    (root / "toy" / "bm25.metrics.json").write_text(json.dumps({"ndcg@10": {"1": 0.2, "2": 0.5, "10": 0.9}}))
    (root / "toy" / f"{slug('rrf:bm25+dense')}.metrics.json").write_text(json.dumps({"ndcg@10": {"1": 0.4, "2": 0.5, "10": 0.1}}))
    return root


def test_reads_the_board_and_compares_two_methods(tmp_path: Path) -> None:
    root = _reports(tmp_path / "out")
    board = read_leaderboard(root)
    assert [(r["method"], r["per_query"]) for r in board["results"]] == [("bm25", True), ("rrf:bm25+dense", True)]
    found = compare_methods(root, "toy", "rrf:bm25+dense", "bm25")
    assert found.metric == "ndcg@10" and list(found.per_query) == ["1", "2", "10"]  # query ids in natural order
    assert (found.wins, found.losses, found.ties) == (1, 1, 1)


def test_refusals(tmp_path: Path) -> None:
    with pytest.raises(LeaderboardError, match="no leaderboard on this server"):
        read_leaderboard(tmp_path)
    root = _reports(tmp_path / "out")
    for dataset, method in (("..", "bm25"), ("toy", "../toy/bm25"), ("toy", "dense")):
        with pytest.raises(LeaderboardError, match="the leaderboard has no method"):
            compare_methods(root, dataset, method, "bm25")
    (root / "toy" / "bm25.metrics.json").unlink()
    assert [r["per_query"] for r in read_leaderboard(root)["results"]] == [False, True]
    with pytest.raises(LeaderboardError, match="no per-query metrics for 'bm25'"):
        compare_methods(root, "toy", "rrf:bm25+dense", "bm25")
    (root / "results.json").write_text("{not json")
    with pytest.raises(UnreadableReportError):
        read_leaderboard(root)
    assert UnreadableReportError.http_status == 409 and LeaderboardError.http_status == 404
