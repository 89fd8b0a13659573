"""Leaderboard (Markdown and CSV) and the quality-versus-latency plot, from harness results."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from eval.harness import MethodResult

ANCHORS = Path(__file__).resolve().parent / "anchors.json"


def load_anchors() -> list[dict]:  # type: ignore[type-arg]
    return json.loads(ANCHORS.read_text())["anchors"]


def _fmt_p(p: float | None) -> str:
    return "-" if p is None else (f"{p:.4f}" if p >= 0.0001 else "<0.0001")


def leaderboard(results: list[MethodResult], primary: str) -> tuple[str, list[list[str]]]:
    datasets = list(dict.fromkeys(r.dataset for r in results))
    methods = list(dict.fromkeys(r.method for r in results))
    cell = {(r.method, r.dataset): r for r in results}
    header = ["method", *datasets, "average", "encode ms/q", "search ms/q", "fuse ms/q", "p vs bm25", "p vs best single",
              "p vs base"]
    rows: list[list[str]] = []
    for method in methods:
        mine = [cell[(method, d)] for d in datasets if (method, d) in cell]
        values = [f"{cell[(method, d)].scores[primary]:.4f}" if (method, d) in cell else "-" for d in datasets]
        average = sum(r.scores[primary] for r in mine) / len(mine)
        n = len(mine)
        rows.append([
            method, *values, f"{average:.4f}",
            f"{sum(r.encode_ms for r in mine) / n:.2f}", f"{sum(r.search_ms for r in mine) / n:.2f}",
            f"{sum(r.fuse_ms for r in mine) / n:.2f}",
            "; ".join(f"{r.dataset}: {_fmt_p(r.p_vs_bm25)}" for r in mine if r.p_vs_bm25 is not None) or "-",
            "; ".join(f"{r.dataset}: {_fmt_p(r.p_vs_best_single)} ({r.best_single})" for r in mine
                      if r.p_vs_best_single is not None) or "-",
            "; ".join(f"{r.dataset}: {_fmt_p(r.p_vs_base)} ({r.base})" for r in mine if r.p_vs_base is not None) or "-",
        ])
    lines = [f"### {primary} (paired randomization test, 10,000 trials, on per-query {primary})", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    metrics = list(results[0].scores) if results else []
    if len(metrics) > 1:
        lines += ["", "### All metrics", "", "| dataset | method | queries | " + " | ".join(metrics) + " |",
                  "|" + "---|" * (len(metrics) + 3)]
        for r in results:
            lines.append(f"| {r.dataset} | {r.method} | {r.queries} | " + " | ".join(f"{r.scores[m]:.4f}" for m in metrics) + " |")
    anchors = [a for a in load_anchors() if a["dataset"] in datasets]
    lines += ["", "### Published anchors (nDCG@10)", ""]
    if not anchors:
        lines.append(f"No published anchor for {', '.join(datasets)} in eval/anchors.json.")
    else:
        lines += ["| dataset | our method | ours | anchor | delta | anchor model | source |", "|---|---|---|---|---|---|---|"]
        for a in anchors:
            ours = cell.get((a["method"], a["dataset"]))
            value = ours.scores.get("ndcg@10") if ours else None
            delta = f"{value - a['ndcg@10']:+.4f}" if value is not None else "-"
            lines.append(f"| {a['dataset']} | {a['method']} | {'-' if value is None else f'{value:.4f}'} | "
                         f"{a['ndcg@10']:.4f} | {delta} | {a['model']} | {a['source']} |")
    return "\n".join(lines) + "\n", [header, *rows]


def write_reports(results: list[MethodResult], primary: str, out: Path, command: str, wall_seconds: float) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    markdown, table = leaderboard(results, primary)
    text = (f"# Leaderboard\n\nCommand: `{command}`\n\nWall-clock time of the whole run: {wall_seconds:.1f} s\n\n"
            f"Latencies are per query, amortized over batch search (encode = query encoding, search = engine).\n\n"
            + markdown)
    (out / "leaderboard.md").write_text(text)
    with (out / "leaderboard.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows(table)
    (out / "results.json").write_text(json.dumps(
        {"command": command, "wall_seconds": wall_seconds, "primary": primary,
         "results": [{k: v for k, v in r.__dict__.items() if k != "per_query"} for r in results]}, indent=1))
    plot(results, primary, out / "quality_vs_latency.png")
    return out / "leaderboard.md"


def plot(results: list[MethodResult], primary: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    for dataset in dict.fromkeys(r.dataset for r in results):
        mine = [r for r in results if r.dataset == dataset]
        ax.scatter([r.latency_ms for r in mine], [r.scores[primary] for r in mine], label=dataset)
        for r in mine:
            ax.annotate(r.method, (r.latency_ms, r.scores[primary]), fontsize=7, xytext=(4, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("ms per query (encode + search + fuse, batch mode)")
    ax.set_ylabel(primary)
    ax.set_title(f"{primary} versus latency")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
