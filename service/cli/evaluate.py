"""``hybrid eval beir`` and ``hybrid bench``: the BEIR harness and the benchmark suite."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from retrieval.core.options import BuildOptions, OpenOptions
from retrieval.core.settings import query_modes_text
from service.cli.common import index_root_option, parse_query_modes, retriever_option, retrievers_from, settings_from


@click.group("eval")
def eval_group() -> None:
    """Evaluate on BEIR-format test collections."""


@eval_group.command("beir")
@click.argument("datasets", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--retrievers", default="bm25,splade,dense", show_default=True, help="Single retrievers to score.")
@retriever_option
@click.option("--hybrid", "--method", "hybrids", multiple=True,
              help="Method spec, repeatable: rrf:bm25+splade+dense, weighted:splade=0.6,dense=0.4:minmax, "
                   "weighted:splade+dense:dbsf, qpp:bm25+splade+dense (query-adaptive, CV-fit), bm25+rm3, "
                   "dense+average, rrf:bm25+rm3+dense.")
@click.option("--split", default="test", show_default=True)
@click.option("--metrics", default="ndcg@10,recall@100,recall@1000,mrr@10,map", show_default=True,
              help="The first one is the leaderboard's and the significance tests' metric.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("reports/beir"), show_default=True)
@click.option("--self-hits", type=click.Choice(["auto", "remove", "keep"]), default="auto", show_default=True,
              help="Drop documents retrieved for their own query id (auto: ArguAna and Quora, as BEIR).")
@click.option("--tune", is_flag=True, help="Tune weighted hybrids' weights by k-fold CV; report held-out scores only.")
@click.option("--folds", type=click.IntRange(2, 20), default=5, show_default=True)
@click.option("--rerank", "rerank_model", default=None, metavar="MODEL",
              help="Also score every method with its top --rerank-depth re-ranked by this cross-encoder.")
@click.option("--rerank-depth", type=click.IntRange(1, 1000), default=100, show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None)
@click.option("--batch-size", type=click.IntRange(1, 4096), default=None)
@click.option("--faiss", "faiss_factory", default=None, help="FAISS factory for indexes this run builds.")
@click.option("--sparse-model", default=None)
@click.option("--dense-model", default=None)
@click.option("--shards", type=click.IntRange(1, 1024), default=1, show_default=True,
              help="Build and search the dataset's index in this many shards (an index with another count is rebuilt).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@index_root_option
def eval_beir(datasets: tuple[Path, ...], retrievers: str, extra_retrievers: tuple[str, ...], hybrids: tuple[str, ...], split: str, metrics: str,
              out: Path, self_hits: str, tune: bool, folds: int, rerank_model: str | None, rerank_depth: int,
              device: str | None, batch_size: int | None,
              faiss_factory: str | None, sparse_model: str | None, dense_model: str | None, shards: int, quiet: bool,
              index_root: Path | None) -> None:
    """Index each BEIR DATASET folder once, run every method, and write runs, metrics and a leaderboard."""
    import shlex
    import time

    from eval.harness import EvalOptions, evaluate_dataset, parse_methods
    from eval.metrics import parse_metrics
    from eval.report import write_reports

    settings = settings_from(index_root, device=device, batch_size=batch_size, faiss_factory=faiss_factory,
                         sparse_model=sparse_model, dense_model=dense_model)
    specs = retrievers_from(retrievers, extra_retrievers)
    options = EvalOptions(
        methods=parse_methods([s.name for s in specs], hybrids),
        metrics=parse_metrics(metrics), out=out, index_root=settings.index_root, split=split,
        self_hits=self_hits, tune=tune, folds=folds, rerank=rerank_model, rerank_depth=rerank_depth,  # type: ignore[arg-type]
        build=BuildOptions.from_settings(settings, retrievers=specs, progress=not quiet, shards=shards),
        open=OpenOptions.from_settings(settings),
    )
    started = time.perf_counter()
    results = []
    log: list[str] = []
    for folder in datasets:
        results += evaluate_dataset(folder, options, log)
        click.echo(log[-1] if log else "", err=True)
    wall = time.perf_counter() - started
    command = "hybrid " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    report = write_reports(results, options.metrics[0].name, out, command, wall)
    click.echo(report.read_text())
    click.echo(f"reports in {out} ({wall:.1f} s)")


@click.command("bench")
@click.argument("dataset", type=click.Path(path_type=Path))
@click.option("--queries", type=click.IntRange(1), default=200, show_default=True)
@click.option("--clients", default="1,4,16,64", show_default=True, help="HTTP client counts.")
@click.option("--seconds", type=click.FloatRange(0.5, 600), default=15.0, show_default=True, help="Per client count.")
@click.option("--no-http", is_flag=True, help="Library and baselines only.")
@click.option("--no-baselines", is_flag=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("reports/bench"), show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None)
@click.option("--query-mode", "mode_specs", multiple=True, metavar="NAME=MODE",
              help="Query mode of our retrievers for the library and HTTP runs, repeatable: splade=onnx-int8.")
@index_root_option
def bench(dataset: Path, queries: int, clients: str, seconds: float, no_http: bool, no_baselines: bool, out: Path,
          device: str | None, mode_specs: tuple[str, ...], index_root: Path | None) -> None:
    """Benchmark indexing, latency and throughput on a BEIR DATASET, with baselines; JSON + Markdown."""
    import shlex

    from eval.bench.suite import BenchOptions, run, write

    settings = settings_from(index_root, device=device, query_modes=parse_query_modes(mode_specs))
    if settings.query_modes:  # the server the HTTP phase starts reads its settings from the environment
        os.environ["HYBRID_QUERY_MODES"] = query_modes_text(settings.query_modes)
    options = BenchOptions(
        dataset=dataset, index_root=settings.index_root, out=out, queries=queries, seconds=seconds,
        clients=[int(c) for c in clients.split(",") if c.strip()], http=not no_http, baselines=not no_baselines,
        build=BuildOptions.from_settings(settings, progress=False), open=OpenOptions.from_settings(settings),
    )
    report = write(run(options), out, "hybrid " + " ".join(shlex.quote(a) for a in sys.argv[1:]))
    click.echo(report.read_text())
