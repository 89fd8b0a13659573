"""``hybrid encode``: a corpus's vectors into a folder, for ``hybrid index build --vectors`` elsewhere."""

from __future__ import annotations

from pathlib import Path

import click

from retrieval.core.options import BuildOptions
from service.cli.common import retriever_option, retrievers_from, settings_from


@click.command("encode")
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

    settings = settings_from(None, device=device, batch_size=batch_size, sparse_model=sparse_model,
                         dense_model=dense_model, splade_scale=splade_scale, splade_doc_top_k=splade_top_k)
    options = BuildOptions.from_settings(settings, retrievers=retrievers_from(retrievers, extra_retrievers),
                                         progress=not quiet, on_error=on_error)
    manifest = encode_corpus(corpus, out, options)
    for vector_set in manifest.sets.values():
        click.echo(f"{vector_set.name}: {vector_set.count} {vector_set.kind} vectors ({vector_set.model_id}) -> "
                   f"{', '.join(str(out / f) for f in vector_set.files)}")
    click.echo(f"index them with: hybrid index build {corpus} --name NAME --vectors {out}")
