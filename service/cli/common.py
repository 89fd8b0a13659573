"""What every command group shares: settings from flags, the index root, common options, option parsers."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from retrieval.core.options import OpenOptions
from retrieval.core.settings import Settings


def settings_from(index_root: Path | None, **overrides: Any) -> Settings:
    values = {k: v for k, v in overrides.items() if v is not None}
    if index_root is not None:
        values["index_root"] = index_root
    return Settings(**values)


def index_root_of(settings: Settings):  # type: ignore[no-untyped-def]
    from indexes.storage.docstore.layout import IndexRoot

    return IndexRoot(settings.index_root)


retriever_option = click.option(
    "--retriever", "extra_retrievers", multiple=True, metavar="NAME=KIND[:MODEL]",
    help="A named retriever besides --retrievers, repeatable: dense-e5=dense:intfloat/e5-small-v2.",
)


def retrievers_from(names: str, extra: tuple[str, ...] = ()):  # type: ignore[no-untyped-def]
    from indexes.kinds import parse_retrievers

    return parse_retrievers([n for n in names.split(",") if n.strip()] + list(extra))


index_root_option = click.option(
    "--index-root", type=click.Path(path_type=Path), default=None,
    help="Folder holding the indexes (default: $HYBRID_INDEX_ROOT, else the user data folder).",
)


def open_live(settings: Settings, name: str, device: str | None = None):  # type: ignore[no-untyped-def]
    from indexes.indexing.sharded import open_index

    root = index_root_of(settings)
    options = OpenOptions.from_settings(settings, **({"device": device} if device else {}))
    return open_index(root.resolve(name), options, root=root)


def parse_query_modes(values: Sequence[str], hint: str = "--query-mode") -> dict[str, str] | None:
    """``("splade=onnx-int8", "dense=onnx")`` -> {"splade": "onnx-int8", "dense": "onnx"} (checked when searched)."""
    from retrieval.core.settings import parse_query_modes as parse

    try:
        return parse(values) or None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=hint) from None


QUERY_MODE_HELP = ("Query mode of one retriever (name or kind), repeatable: splade=tokens (inference-free), "
                   "splade=onnx, dense=onnx-int8, ...=torch (the default).")
