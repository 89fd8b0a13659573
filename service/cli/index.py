"""``hybrid index ...``: build, create, add, remove, snapshot, compact, list, info, tune, delete."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from retrieval.core.disk import DiskFullError
from retrieval.core.options import BuildOptions
from service.cli.common import (
    index_root_of,
    index_root_option,
    open_live,
    retriever_option,
    retrievers_from,
    settings_from,
)


@click.group("index")
def index() -> None:
    """Build and manage indexes."""


@index.command("build")
@click.argument("corpus", type=click.Path(path_type=Path))
@click.option("--name", required=True, help="Index name (letters, digits, '.', '_', '-').")
@click.option("--retrievers", default="bm25,splade,dense", show_default=True, help="Comma-separated subset.")
@retriever_option
@index_root_option
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None, help="Encoder/FAISS device.")
@click.option("--batch-size", type=click.IntRange(1, 4096), default=None, help="Encoder batch size.")
@click.option("--faiss", "faiss_factory", default=None, help="FAISS factory string (Flat, HNSW32, IVF256,Flat, IVF256,PQ16).")
@click.option("--sparse-model", default=None, help="SPLADE model: built-in name, folder or hub id.")
@click.option("--dense-model", default=None, help="Dense model: built-in name, folder or hub id.")
@click.option("--splade-scale", type=click.FloatRange(min=0, min_open=True), default=None, help="Impact quantization factor.")
@click.option("--splade-top-k", type=click.IntRange(min=1), default=None, help="Keep the top-k terms per document.")
@click.option("--splade-doc-vectors/--no-splade-doc-vectors", default=None,
              help="Store SPLADE term vectors, which SPLADE PRF reads (default on; off: smaller, faster builds).")
@click.option("--splade-matrix/--no-splade-matrix", default=None,
              help="Write SPLADE impacts beside the Lucene index for in-memory search (default on).")
@click.option("--splade-clusters/--no-splade-clusters", default=None,
              help="Build the approximate SPLADE structure (clusters of the matrix), tuned at build (default on).")
@click.option("--tune-queries", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Queries (BEIR queries.jsonl, or one a line) to tune approximate search with; default: the "
                   "corpus folder's queries.jsonl, else sampled documents.")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="Lucene indexing threads.")
@click.option("--on-error", type=click.Choice(["fail", "skip"]), default="fail", show_default=True,
              help="Bad corpus lines: stop with the line number, or skip them (counted in the manifest).")
@click.option("--vectors", "vectors_dir", type=click.Path(path_type=Path), default=None,
              help="A folder from 'hybrid encode': retrievers with vectors there are indexed from them, not encoded.")
@click.option("--shards", type=click.IntRange(1, 1024), default=1, show_default=True,
              help="Complete indexes, one per shard, documents assigned by a stable hash of _id; searched as one.")
@click.option("--ray", "ray_address", default=None, metavar="local|auto|ADDRESS",
              help="Encode on a Ray cluster (Ray Data actor pool) and write each shard in a Ray task: 'local' starts "
                   "one here, 'auto' joins the one 'ray start' runs here, or a cluster address. Needs the [ray] extra.")
@click.option("--ray-workers", type=click.IntRange(min=0), default=0, show_default=True,
              help="Encoder actors on the Ray cluster (0: one per GPU with --device cuda, else one per CPU).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def index_build(corpus: Path, name: str, retrievers: str, extra_retrievers: tuple[str, ...], index_root: Path | None,
                device: str | None,
                batch_size: int | None, faiss_factory: str | None, sparse_model: str | None, dense_model: str | None,
                splade_scale: float | None, splade_top_k: int | None, splade_doc_vectors: bool | None,
                splade_matrix: bool | None, splade_clusters: bool | None, tune_queries: Path | None, threads: int | None,
                on_error: str, vectors_dir: Path | None, shards: int, ray_address: str | None,
                ray_workers: int, quiet: bool) -> None:
    """Index CORPUS (BEIR corpus.jsonl[.gz] or a BEIR dataset folder) as NAME."""
    from indexes.indexing.builder import build_index

    settings = settings_from(index_root, device=device, batch_size=batch_size, faiss_factory=faiss_factory,
                         sparse_model=sparse_model, dense_model=dense_model, splade_scale=splade_scale,
                         splade_doc_top_k=splade_top_k, splade_doc_vectors=splade_doc_vectors,
                         splade_matrix=splade_matrix, splade_clusters=splade_clusters, threads=threads)
    options = BuildOptions.from_settings(settings, retrievers=retrievers_from(retrievers, extra_retrievers),
                                         progress=not quiet, on_error=on_error, shards=shards, ray=ray_address,
                                         ray_workers=ray_workers, tune_queries=tune_queries)
    manifest = build_index(corpus, name, index_root_of(settings), options, vectors=vectors_dir)
    sharded = f" in {len(manifest.shards)} shards" if manifest.shards else ""
    click.echo(f"built {name!r}: {manifest.doc_count} documents{sharded} -> {index_root_of(settings).path(name)}")
    click.echo(f"{'retriever':<14}{'seconds':>10}{'docs/s':>10}{'encode s':>10}{'index s':>10}{'size MiB':>10}  kind")
    for r in manifest.retrievers.values():
        rate = manifest.doc_count / r.build_seconds if r.build_seconds else float("inf")
        click.echo(f"{r.name:<14}{r.build_seconds:>10.1f}{rate:>10.1f}{r.encode_seconds:>10.1f}"
                   f"{r.index_seconds:>10.1f}{r.size_bytes / 2**20:>10.2f}  {r.kind}")
    for r in manifest.retrievers.values():
        if r.search_tuning:
            click.echo(tuning_line(r.name, r.search_tuning))
    busy = sum(r.build_seconds for r in manifest.retrievers.values())
    if manifest.build_wall_seconds and manifest.build_wall_seconds < busy * 0.98:
        click.echo(f"retrievers built in {manifest.build_wall_seconds:.1f} s of wall clock for {busy:.1f} s of work "
                   "(the ones that encode nothing built beside the encoders)")


@index.command("list")
@index_root_option
@click.option("--json", "as_json", is_flag=True, help="One JSON array.")
def index_list(index_root: Path | None, as_json: bool) -> None:
    """List the indexes under the index root."""
    from indexes.storage.docstore.manifest import Manifest

    root = index_root_of(settings_from(index_root))
    rows = []
    for name in root.names():
        m = Manifest.read(root.resolve(name))
        rows.append({"name": name, "documents": m.doc_count, "retrievers": list(m.retrievers),
                     "size_bytes": m.size_bytes, "created": m.created})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo(f"no indexes under {root.root}")
        return
    click.echo(f"{'name':<24}{'docs':>10}{'size MiB':>10}  {'retrievers':<20}created")
    for r in rows:
        click.echo(f"{r['name']:<24}{r['documents']:>10}{r['size_bytes'] / 2**20:>10.2f}  "
                   f"{','.join(r['retrievers']):<20}{r['created']}")


@index.command("info")
@click.argument("name")
@index_root_option
def index_info(name: str, index_root: Path | None) -> None:
    """Print the manifest of NAME as JSON."""
    from indexes.storage.docstore.manifest import Manifest

    click.echo(Manifest.read(index_root_of(settings_from(index_root)).resolve(name)).to_json())


def tuning_line(name: str, tuning: dict[str, Any]) -> str:
    """One line for a retriever's tuning: the parameters chosen and the recall they reach."""
    status = "reached" if tuning.get("reached") else "BELOW"
    return (f"{name}: approximate search {tuning['parameters']} recall@10 {tuning['recall_at_10']:.3f} ({status} target "
            f"{tuning['target']:g}; {tuning['queries']} queries from {tuning['source']})")


@index.command("tune")
@click.argument("name")
@click.option("--target-recall", type=click.FloatRange(0, 1, min_open=True), default=None,
              help="Recall@10 against exact search to reach (default: the settings' tune_recall_sparse, 0.98, for "
                   "SPLADE and tune_recall_dense, 0.95, for dense ANN indexes).")
@click.option("--queries", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Queries to tune with (BEIR queries.jsonl, or one a line); default: the corpus folder's "
                   "queries.jsonl when it is still there, else sampled documents.")
@click.option("--retriever", "names", multiple=True, help="Only this retriever (repeatable); default: all.")
@index_root_option
def index_tune(name: str, target_recall: float | None, queries: Path | None, names: tuple[str, ...],
               index_root: Path | None) -> None:
    """Measure recall@10 of NAME's approximate searches against exact search and record the cheapest settings
    reaching the target in its manifest (hybrid index info and GET /v1/indexes/NAME show them)."""
    from indexes.indexing.tuning import queries_beside, tune_index
    from indexes.storage.docstore.manifest import Manifest

    settings = settings_from(index_root)
    root = index_root_of(settings)
    with root.lock(name):
        folder = root.resolve(name)
        manifest = Manifest.read(folder)
        unknown = [n for n in names if n not in manifest.retrievers]
        if unknown:
            raise click.UsageError(f"index {name!r} has no retriever {unknown[0]!r}; it has "
                                   f"{', '.join(manifest.retrievers)}")
        corpus = Path(manifest.corpus_path) if manifest.corpus_path else None
        found = queries or queries_beside(corpus)
        options = BuildOptions.from_settings(settings, progress=False)
        chosen = list(names) or None
        targets = {n: target_recall for n in (chosen or manifest.retrievers)} if target_recall is not None else None
        results = tune_index(folder, options, found, chosen, targets)
    if not results:
        click.echo(f"nothing to tune in {name!r}: no retriever has an approximate search")
        return
    tuned = Manifest.read(folder)
    for retriever in results:
        click.echo(tuning_line(retriever, tuned.retrievers[retriever].search_tuning or {}))


@index.command("delete")
@click.argument("name")
@index_root_option
def index_delete(name: str, index_root: Path | None) -> None:
    """Delete NAME and its files."""
    root = index_root_of(settings_from(index_root))
    with root.lock(name):
        root.delete(name)
    click.echo(f"deleted {name!r}")


@index.command("create")
@click.argument("name")
@click.option("--retrievers", default="bm25,splade,dense", show_default=True, help="Comma-separated subset.")
@retriever_option
@click.option("--faiss", "faiss_factory", default=None, help="FAISS factory string (one that needs no training).")
@click.option("--sparse-model", default=None)
@click.option("--dense-model", default=None)
@index_root_option
def index_create(name: str, retrievers: str, extra_retrievers: tuple[str, ...], faiss_factory: str | None,
                 sparse_model: str | None, dense_model: str | None, index_root: Path | None) -> None:
    """Create NAME with no documents, to fill with 'hybrid index add' or the API."""
    from indexes.indexing.builder import create_empty_index

    settings = settings_from(index_root, faiss_factory=faiss_factory, sparse_model=sparse_model, dense_model=dense_model)
    create_empty_index(name, index_root_of(settings), BuildOptions.from_settings(
        settings, retrievers=retrievers_from(retrievers, extra_retrievers), progress=False))
    click.echo(f"created {name!r} (empty) -> {index_root_of(settings).path(name)}")


@index.command("add")
@click.argument("name")
@click.argument("corpus", type=click.Path(path_type=Path))
@click.option("--batch", type=click.IntRange(1, 100_000), default=256, show_default=True,
              help="Documents per write batch (each is durable and searchable on its own).")
@click.option("--on-error", type=click.Choice(["fail", "skip"]), default="fail", show_default=True,
              help="Bad corpus lines: stop with the line number, or skip them.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None)
@click.option("--quiet", is_flag=True, help="No progress bar.")
@index_root_option
def index_add(name: str, corpus: Path, batch: int, on_error: str, device: str | None, quiet: bool,
              index_root: Path | None) -> None:
    """Upsert the documents of CORPUS (BEIR JSONL) into NAME by _id, in every retriever at once."""
    import time

    from tqdm import tqdm

    from indexes.storage.docstore.corpus import (
        CorpusError,
        Skipped,
        iter_documents,
        resolve_corpus_file,
    )

    settings = settings_from(index_root, device=device)
    corpus_file = resolve_corpus_file(corpus)
    live = open_live(settings, name)
    skipped = Skipped()
    added = 0
    started = time.perf_counter()
    try:
        pending: list[Any] = []

        def flush() -> None:
            nonlocal added
            live.upsert(pending)
            added += len(pending)
            bar.update(len(pending))
            pending.clear()

        with tqdm(desc=f"add to {name}", unit="doc", disable=quiet, dynamic_ncols=True) as bar:
            for doc in iter_documents(corpus_file, on_error, skipped):
                if not doc.contents.strip():
                    if on_error == "fail":
                        raise CorpusError(f"{corpus_file}: document {doc.id!r} has no title and no text")
                    skipped.add("empty", doc.id)
                    continue
                if any(d.id == doc.id for d in pending):
                    flush()  # the same id twice in the file: the later line wins
                pending.append(doc)
                if len(pending) >= batch:
                    flush()
            if pending:
                flush()
    except DiskFullError as exc:
        full: DiskFullError | None = exc
    else:
        full = None
    finally:
        try:
            live.close()
        except DiskFullError:  # the checkpoint at close: the log keeps every write; the first error says more
            if full is None:
                raise
    if full is not None:
        raise DiskFullError(f"{full} ({added} documents of this run were added before it, durably)")
    seconds = time.perf_counter() - started
    for reason, count in skipped.counts.items():
        click.echo(f"warning: skipped {count} document(s), {reason}: {', '.join(skipped.examples[reason][:10])}", err=True)
    click.echo(f"upserted {added} documents into {name!r} in {seconds:.1f} s ({added / seconds if seconds else 0:.1f} docs/s); "
               f"{live.doc_count} documents, seq {live.seq}")


@index.command("remove")
@click.argument("name")
@click.argument("ids", nargs=-1)
@click.option("--ids-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A file of ids, one a line.")
@index_root_option
def index_remove(name: str, ids: tuple[str, ...], ids_file: Path | None, index_root: Path | None) -> None:
    """Delete documents by _id from every retriever of NAME."""
    wanted = list(ids) + ([line.strip() for line in ids_file.read_text().splitlines() if line.strip()] if ids_file else [])
    if not wanted:
        raise click.UsageError("give ids as arguments or with --ids-file")
    live = open_live(settings_from(index_root), name, device="cpu")
    try:
        result = live.delete(wanted)
    finally:
        live.close()
    click.echo(f"removed {result.deleted} documents from {name!r}; {live.doc_count} left, seq {live.seq}")
    if result.missing:
        click.echo(f"warning: {len(result.missing)} id(s) not in the index: {', '.join(result.missing[:10])}", err=True)


@index.command("snapshot")
@click.argument("name")
@index_root_option
def index_snapshot(name: str, index_root: Path | None) -> None:
    """Write a point-in-time copy of NAME under INDEX_ROOT/.snapshots (serve it with --index-root)."""
    from indexes.indexing.live import snapshot_root

    settings = settings_from(index_root)
    live = open_live(settings, name, device="cpu")
    try:
        target = live.snapshot(snapshot_root(settings.index_root))
    finally:
        live.close()
    click.echo(f"snapshot of {name!r} at seq {live.seq} ({live.doc_count} documents) -> {target}")
    click.echo(f"serve it: hybrid serve --index-root {target.parent}")


@index.command("compact")
@click.argument("name")
@index_root_option
def index_compact(name: str, index_root: Path | None) -> None:
    """Remove deleted versions from FAISS, Lucene's segments (BM25 statistics) and the document store now."""
    live = open_live(settings_from(index_root), name, device="cpu")
    try:
        live.compact()
    finally:
        live.close()
    click.echo(f"compacted {name!r}: {live.doc_count} documents, seq {live.seq}")
