"""The ``hybrid`` command line: index build/list/info/delete, search, serve, eval.

Every user error ends in one line ``hybrid: error: ...`` and exit status 2; a traceback means a bug.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from retrieval.core.errors import HybridError
from retrieval.core.options import BuildOptions, OpenOptions
from retrieval.core.settings import Settings, query_modes_text
from retrieval.core.types import PrfConfig


def _settings(index_root: Path | None, **overrides: Any) -> Settings:
    values = {k: v for k, v in overrides.items() if v is not None}
    if index_root is not None:
        values["index_root"] = index_root
    return Settings(**values)


def _root(settings: Settings):  # type: ignore[no-untyped-def]
    from indexes.storage.layout import IndexRoot

    return IndexRoot(settings.index_root)


retriever_option = click.option(
    "--retriever", "extra_retrievers", multiple=True, metavar="NAME=KIND[:MODEL]",
    help="A named retriever besides --retrievers, repeatable: dense-e5=dense:intfloat/e5-small-v2.",
)


def _retrievers(names: str, extra: tuple[str, ...] = ()):  # type: ignore[no-untyped-def]
    from indexes.kinds import parse_retrievers

    return parse_retrievers([n for n in names.split(",") if n.strip()] + list(extra))


index_root_option = click.option(
    "--index-root", type=click.Path(path_type=Path), default=None,
    help="Folder holding the indexes (default: $HYBRID_INDEX_ROOT, else the user data folder).",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="hybrid-retrieval")
def cli() -> None:
    """Hybrid sparse/dense retrieval: SPLADE and BM25 on Lucene, dense on FAISS, fused."""


@cli.group()
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
                splade_matrix: bool | None, threads: int | None, on_error: str, vectors_dir: Path | None, shards: int, ray_address: str | None,
                ray_workers: int, quiet: bool) -> None:
    """Index CORPUS (BEIR corpus.jsonl[.gz] or a BEIR dataset folder) as NAME."""
    from indexes.indexing.builder import build_index

    settings = _settings(index_root, device=device, batch_size=batch_size, faiss_factory=faiss_factory,
                         sparse_model=sparse_model, dense_model=dense_model, splade_scale=splade_scale,
                         splade_doc_top_k=splade_top_k, splade_doc_vectors=splade_doc_vectors,
                         splade_matrix=splade_matrix, threads=threads)
    options = BuildOptions.from_settings(settings, retrievers=_retrievers(retrievers, extra_retrievers),
                                         progress=not quiet, on_error=on_error, shards=shards, ray=ray_address,
                                         ray_workers=ray_workers)
    manifest = build_index(corpus, name, _root(settings), options, vectors=vectors_dir)
    sharded = f" in {len(manifest.shards)} shards" if manifest.shards else ""
    click.echo(f"built {name!r}: {manifest.doc_count} documents{sharded} -> {_root(settings).path(name)}")
    click.echo(f"{'retriever':<14}{'seconds':>10}{'docs/s':>10}{'encode s':>10}{'index s':>10}{'size MiB':>10}  kind")
    for r in manifest.retrievers.values():
        rate = manifest.doc_count / r.build_seconds if r.build_seconds else float("inf")
        click.echo(f"{r.name:<14}{r.build_seconds:>10.1f}{rate:>10.1f}{r.encode_seconds:>10.1f}"
                   f"{r.index_seconds:>10.1f}{r.size_bytes / 2**20:>10.2f}  {r.kind}")
    busy = sum(r.build_seconds for r in manifest.retrievers.values())
    if manifest.build_wall_seconds and manifest.build_wall_seconds < busy * 0.98:
        click.echo(f"retrievers built in {manifest.build_wall_seconds:.1f} s of wall clock for {busy:.1f} s of work "
                   "(the ones that encode nothing built beside the encoders)")


@cli.command("encode")
@click.argument("corpus", type=click.Path(path_type=Path))
@click.option("--out", "out", type=click.Path(path_type=Path), required=True, help="A new folder for the vectors.")
@click.option("--retrievers", default="splade,dense", show_default=True, help="Comma-separated retrievers to encode.")
@retriever_option
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None, help="Encoder device.")
@click.option("--batch-size", type=click.IntRange(1, 4096), default=None, help="Encoder batch size.")
@click.option("--sparse-model", default=None, help="SPLADE model: built-in name, folder or hub id.")
@click.option("--dense-model", default=None, help="Dense model: built-in name, folder or hub id.")
@click.option("--splade-scale", type=click.FloatRange(min=0, min_open=True), default=None, help="Impact quantization factor.")
@click.option("--splade-top-k", type=click.IntRange(min=1), default=None, help="Keep the top-k terms per document.")
@click.option("--on-error", type=click.Choice(["fail", "skip"]), default="fail", show_default=True,
              help="Bad corpus lines: stop with the line number, or skip them.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def encode(corpus: Path, out: Path, retrievers: str, extra_retrievers: tuple[str, ...], device: str | None,
           batch_size: int | None, sparse_model: str | None, dense_model: str | None, splade_scale: float | None,
           splade_top_k: int | None, on_error: str, quiet: bool) -> None:
    """Encode CORPUS's documents into OUT for 'hybrid index build CORPUS --vectors OUT' (on a GPU machine, say)."""
    from indexes.indexing.builder import encode_corpus

    settings = _settings(None, device=device, batch_size=batch_size, sparse_model=sparse_model,
                         dense_model=dense_model, splade_scale=splade_scale, splade_doc_top_k=splade_top_k)
    options = BuildOptions.from_settings(settings, retrievers=_retrievers(retrievers, extra_retrievers),
                                         progress=not quiet, on_error=on_error)
    manifest = encode_corpus(corpus, out, options)
    for vector_set in manifest.sets.values():
        click.echo(f"{vector_set.name}: {vector_set.count} {vector_set.kind} vectors ({vector_set.model_id}) -> "
                   f"{', '.join(str(out / f) for f in vector_set.files)}")
    click.echo(f"index them with: hybrid index build {corpus} --name NAME --vectors {out}")


@index.command("list")
@index_root_option
@click.option("--json", "as_json", is_flag=True, help="One JSON array.")
def index_list(index_root: Path | None, as_json: bool) -> None:
    """List the indexes under the index root."""
    from indexes.storage.manifest import Manifest

    root = _root(_settings(index_root))
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
    from indexes.storage.manifest import Manifest

    click.echo(Manifest.read(_root(_settings(index_root)).resolve(name)).to_json())


@index.command("delete")
@click.argument("name")
@index_root_option
def index_delete(name: str, index_root: Path | None) -> None:
    """Delete NAME and its files."""
    root = _root(_settings(index_root))
    with root.lock(name):
        root.delete(name)
    click.echo(f"deleted {name!r}")


def _open_live(settings: Settings, name: str, device: str | None = None):  # type: ignore[no-untyped-def]
    from indexes.indexing.sharded import open_index

    root = _root(settings)
    options = OpenOptions.from_settings(settings, **({"device": device} if device else {}))
    return open_index(root.resolve(name), options, root=root)


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

    settings = _settings(index_root, faiss_factory=faiss_factory, sparse_model=sparse_model, dense_model=dense_model)
    create_empty_index(name, _root(settings), BuildOptions.from_settings(
        settings, retrievers=_retrievers(retrievers, extra_retrievers), progress=False))
    click.echo(f"created {name!r} (empty) -> {_root(settings).path(name)}")


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

    from indexes.storage.corpus import CorpusError, Skipped, iter_documents, resolve_corpus_file

    settings = _settings(index_root, device=device)
    corpus_file = resolve_corpus_file(corpus)
    live = _open_live(settings, name)
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
    finally:
        live.close()
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
    live = _open_live(_settings(index_root), name, device="cpu")
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

    settings = _settings(index_root)
    live = _open_live(settings, name, device="cpu")
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
    live = _open_live(_settings(index_root), name, device="cpu")
    try:
        live.compact()
    finally:
        live.close()
    click.echo(f"compacted {name!r}: {live.doc_count} documents, seq {live.seq}")


def parse_weights(spec: str | None) -> dict[str, float] | None:
    """``splade=0.6,dense=0.4`` -> {"splade": 0.6, "dense": 0.4}."""
    if not spec:
        return None
    weights: dict[str, float] = {}
    for part in spec.split(","):
        key, sep, value = part.partition("=")
        try:
            weights[key.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not key.strip():
            raise click.BadParameter(f"{part!r} is not NAME=NUMBER", param_hint="--weights")
    return weights


def parse_query_modes(values: Sequence[str], hint: str = "--query-mode") -> dict[str, str] | None:
    """``("splade=onnx-int8", "dense=onnx")`` -> {"splade": "onnx-int8", "dense": "onnx"} (checked when searched)."""
    from retrieval.core.settings import parse_query_modes as parse

    try:
        return parse(values) or None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=hint) from None


QUERY_MODE_HELP = ("Query mode of one retriever (name or kind), repeatable: splade=tokens (inference-free), "
                   "splade=onnx, dense=onnx-int8, ...=torch (the default).")


def parse_prf_options(values: Sequence[str]) -> dict[str, PrfConfig] | None:
    """``("bm25=rm3(fb_docs=5)", "dense=average")`` -> {"bm25": PrfConfig("rm3", fb_docs=5), ...}."""
    from eval.specs import parse_prf

    prf: dict[str, PrfConfig] = {}
    for value in values:
        retriever, sep, method = value.partition("=")
        if not sep or not retriever.strip() or not method.strip():
            raise click.BadParameter(f"{value!r} is not NAME=METHOD, e.g. bm25=rm3", param_hint="--prf")
        prf[retriever.strip()] = parse_prf(method, value)
    return prf or None


def parse_filter_option(value: str | None) -> dict[str, Any] | None:
    """``--filter``'s JSON object (checked against the index's fields when the search runs)."""
    if value is None:
        return None
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not valid JSON ({exc.msg} at column {exc.colno})", param_hint="--filter") from None
    if not isinstance(parsed, dict):
        raise click.BadParameter('expected a JSON object such as \'{"term": {"lang": "en"}}\'', param_hint="--filter")
    return parsed


@cli.command("search")
@click.argument("name")
@click.argument("query")
@click.option("--k", type=click.IntRange(1, 10_000), default=10, show_default=True)
@click.option("--retrievers", default=None, help="Comma-separated subset (default: all in the index).")
@click.option("--fusion", type=click.Choice(["rrf", "weighted"]), default="rrf", show_default=True)
@click.option("--rrf-k", type=click.IntRange(min=1), default=None, help="RRF's k (default: the rrf_k setting, 60).")
@click.option("--weights", default=None, help="Per-retriever weights, e.g. splade=0.6,dense=0.4.")
@click.option("--normalization", type=click.Choice(["minmax", "zscore", "dbsf"]), default="minmax", show_default=True,
              help="For --fusion weighted; dbsf is Qdrant's distribution-based score fusion.")
@click.option("--depth", type=click.IntRange(1, 10_000), default=None,
              help="Candidates per retriever (default: the depth setting, 100).")
@click.option("--prf", "prf_specs", multiple=True, metavar="NAME=METHOD",
              help="Pseudo-relevance feedback for one retriever, repeatable: bm25=rm3, 'bm25=rm3(fb_docs=5)', "
                   "dense=average, dense=rocchio.")
@click.option("--query-mode", "mode_specs", multiple=True, metavar="NAME=MODE", help=QUERY_MODE_HELP)
@click.option("--offset", type=click.IntRange(0, 10_000), default=0, show_default=True,
              help="Skip this many fused hits (page p of size k: (p-1)*k).")
@click.option("--min-score", type=float, default=None, help="Drop hits whose fused score is below this.")
@click.option("--rerank", "rerank_model", default=None, metavar="MODEL",
              help="Re-score the fused top hits with this cross-encoder (name, folder or hub id).")
@click.option("--rerank-depth", type=click.IntRange(1, 1000), default=50, show_default=True)
@click.option("--filter", "filter_json", default=None, metavar="JSON",
              help='Metadata filter, e.g. \'{"range": {"year": {"gte": 2000}}}\' (term, terms, range, exists, and, or, not).')
@click.option("--highlight", is_flag=True, help="Print each hit's best-matching passage, query terms in [brackets].")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None)
@index_root_option
def search(name: str, query: str, k: int, retrievers: str | None, fusion: str, rrf_k: int | None, weights: str | None,
           normalization: str, depth: int | None, prf_specs: tuple[str, ...], mode_specs: tuple[str, ...],
           offset: int, min_score: float | None, rerank_model: str | None, rerank_depth: int, filter_json: str | None,
           highlight: bool, as_json: bool, device: str | None, index_root: Path | None) -> None:
    """Search index NAME for QUERY."""
    from dataclasses import asdict

    from retrieval.search.fusion import FusionConfig
    from retrieval.search.pipeline import Searcher

    prf = parse_prf_options(prf_specs)
    modes = parse_query_modes(mode_specs)
    where = parse_filter_option(filter_json)
    settings = _settings(index_root, device=device, rrf_k=rrf_k, depth=depth)
    chosen = [r.strip() for r in retrievers.split(",") if r.strip()] if retrievers else None
    searcher = Searcher.open(_root(settings).resolve(name), OpenOptions.from_settings(settings), retrievers=chosen)
    config = FusionConfig(method=fusion, rrf_k=settings.rrf_k, weights=parse_weights(weights),  # type: ignore[arg-type]
                          normalization=normalization)  # type: ignore[arg-type]
    from retrieval.search.highlight import HighlightConfig
    from retrieval.search.rerank import RerankConfig

    rerank = RerankConfig(rerank_model, rerank_depth) if rerank_model else None
    result = searcher.search(query, k=k, fusion=config, explain=True, include_text=True, prf=prf, query_modes=modes,
                             offset=offset, min_score=min_score, rerank=rerank, filter=where,
                             highlight=(HighlightConfig() if as_json else HighlightConfig("[", "]")) if highlight else False)
    if as_json:
        click.echo(json.dumps({"query": query, "retrievers": result.retrievers, "took_ms": round(result.took_ms, 3),
                               "hits": [asdict(h) for h in result.hits]}, ensure_ascii=False))
        return
    names = result.retrievers
    header = f"{'rank':>4}  {'id':<14}{'score':>10}  " + "".join(f"{n + ' (rank)':>14}" for n in names) + "  title"
    click.echo(header)
    for hit in result.hits:
        cells = ""
        for n in names:
            source = (hit.explain or {}).get(n)
            cells += f"{'-' if source is None else str(source.rank):>14}"
        title = (hit.title or hit.text or "").replace("\n", " ")[:60]
        click.echo(f"{hit.rank:>4}  {hit.id:<14}{hit.score:>10.4f}  {cells}  {title}")
        if hit.highlight:
            click.echo(f"      {hit.highlight}")
    click.echo(f"{len(result.hits)} hits in {result.took_ms:.1f} ms ({', '.join(names)})")


@cli.command("serve")
@index_root_option
@click.option("--host", default=None, help="Bind address (default 127.0.0.1).")
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="Port (default 8000).")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Worker processes; each loads every index.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None)
@click.option("--query-mode", "mode_specs", multiple=True, metavar="NAME=MODE",
              help="Default query mode of one retriever (name or kind), repeatable; requests may choose another. "
                   + QUERY_MODE_HELP.split(", repeatable: ")[1])
@click.option("--access-log/--no-access-log", default=None,
              help="Log every request (default: the access_log setting, off; /metrics counts requests either way).")
@click.option("--ray", "ray_address", default=None, metavar="local|auto|ADDRESS",
              help="Serve as a Ray Serve application: one deployment per shard, one of query encoders, an ingress "
                   "(--workers replicas). Needs the [ray] extra; README 'Scale-out'.")
@click.option("--replicas", type=click.IntRange(min=1), default=1, show_default=True,
              help="With --ray: replicas per shard (more than 1: read-only, as of each shard's last checkpoint).")
@click.option("--encoder-replicas", type=click.IntRange(min=1), default=1, show_default=True,
              help="With --ray: replicas of each index's query encoders (one GPU each with --device cuda).")
def serve(index_root: Path | None, host: str | None, port: int | None, workers: int | None, device: str | None,
          mode_specs: tuple[str, ...], access_log: bool | None, ray_address: str | None, replicas: int,
          encoder_replicas: int) -> None:
    """Serve every index under the index root over HTTP (REST API under /v1, docs at /docs)."""
    import uvicorn

    modes = parse_query_modes(mode_specs)
    settings = _settings(index_root, host=host, port=port, workers=workers, device=device, query_modes=modes,
                         access_log=access_log)
    # Worker processes rebuild the settings from the environment; pass the resolved values on.
    os.environ.update({"HYBRID_INDEX_ROOT": str(settings.index_root), "HYBRID_DEVICE": settings.device})
    if settings.query_modes:
        os.environ["HYBRID_QUERY_MODES"] = query_modes_text(settings.query_modes)
    names = _root(settings).names()
    if not names:
        click.echo(f"warning: no indexes under {settings.index_root}; build one with 'hybrid index build'", err=True)
    base = f"http://{settings.host}:{settings.port}"
    example = names[0] if names else "NAME"
    auth = " -H 'Authorization: Bearer $HYBRID_KEY'" if settings.api_keys else ""
    click.echo(f"serving {len(names)} index(es) from {settings.index_root} on {base} (docs: {base}/docs)")
    click.echo("try:")
    click.echo(f"  curl -s {base}/v1/indexes/{example}/search{auth} -H 'Content-Type: application/json' "
               "-d '{\"query\": \"heat transfer in laminar boundary layers\", \"k\": 5, \"explain\": true}'")
    if ray_address:
        from service.ray_serve import serve_on_ray

        click.echo(f"on Ray ({ray_address}): {replicas} replica(s) per shard, {encoder_replicas} encoder replica(s), "
                   f"{settings.workers} ingress replica(s); Ctrl-C stops the application")
        serve_on_ray(settings, ray_address, replicas, encoder_replicas)
        return
    uvicorn.run("service.app:create_app", factory=True, host=settings.host, port=settings.port,
                workers=settings.workers, log_level="info", access_log=settings.access_log)


@cli.group("eval")
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

    settings = _settings(index_root, device=device, batch_size=batch_size, faiss_factory=faiss_factory,
                         sparse_model=sparse_model, dense_model=dense_model)
    specs = _retrievers(retrievers, extra_retrievers)
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


@cli.command("bench")
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

    settings = _settings(index_root, device=device, query_modes=parse_query_modes(mode_specs))
    if settings.query_modes:  # the server the HTTP phase starts reads its settings from the environment
        os.environ["HYBRID_QUERY_MODES"] = query_modes_text(settings.query_modes)
    options = BenchOptions(
        dataset=dataset, index_root=settings.index_root, out=out, queries=queries, seconds=seconds,
        clients=[int(c) for c in clients.split(",") if c.strip()], http=not no_http, baselines=not no_baselines,
        build=BuildOptions.from_settings(settings, progress=False), open=OpenOptions.from_settings(settings),
    )
    report = write(run(options), out, "hybrid " + " ".join(shlex.quote(a) for a in sys.argv[1:]))
    click.echo(report.read_text())


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        cli.main(prog_name="hybrid", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("hybrid: aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(2)
    except HybridError as exc:
        click.echo(f"hybrid: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("hybrid: interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
