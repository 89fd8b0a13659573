"""The registry of retriever kinds, and parsing of the retrievers an index should hold.

To add a kind: write one module with a :class:`~indexes.kinds.base.RetrieverKind` subclass and add
it to ``KINDS`` below. Nothing else dispatches on kinds.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from indexes.kinds.base import KindError, RetrieverKind
from indexes.kinds.bm25 import Bm25Kind
from indexes.kinds.dense import DenseKind
from indexes.kinds.splade import SpladeKind
from retrieval.core.types import RetrieverSpec

KINDS: dict[str, RetrieverKind] = {kind.name: kind for kind in (Bm25Kind(), SpladeKind(), DenseKind())}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def get_kind(name: str) -> RetrieverKind:
    try:
        return KINDS[name]
    except KeyError:
        raise KindError(f"unknown retriever kind {name!r}; choose from {', '.join(KINDS)}") from None


def parse_retriever(text: str) -> RetrieverSpec:
    """``bm25`` (a kind's own name: that kind, default model), or ``NAME=KIND`` / ``NAME=KIND:MODEL``."""
    text = text.strip()
    name, sep, rest = text.partition("=")
    name = name.strip()
    if not sep:
        if name not in KINDS:
            raise KindError(f"unknown retriever {name!r}: use a kind ({', '.join(KINDS)}) or NAME=KIND[:MODEL]")
        return RetrieverSpec(name, name)
    kind, _, model = rest.partition(":")
    if not _NAME.match(name):
        raise KindError(f"retriever name {name!r}: use 1-64 letters, digits, '.', '_' or '-'")
    get_kind(kind.strip())
    return RetrieverSpec(name, kind.strip(), model.strip() or None)


def parse_retrievers(specs: Iterable[str | RetrieverSpec] | str) -> tuple[RetrieverSpec, ...]:
    """Specs from a comma-separated string or a list; names must be unique."""
    items = [s for s in specs.split(",")] if isinstance(specs, str) else list(specs)
    parsed = [s if isinstance(s, RetrieverSpec) else parse_retriever(s) for s in items if isinstance(s, RetrieverSpec) or s.strip()]
    if not parsed:
        raise KindError(f"no retriever chosen; choose from {', '.join(KINDS)} or NAME=KIND[:MODEL]")
    unique: dict[str, RetrieverSpec] = {}
    for spec in parsed:
        if unique.setdefault(spec.name, spec) != spec:
            raise KindError(f"retriever name {spec.name!r} is given twice; each retriever of an index needs its own name")
        get_kind(spec.kind)
    return tuple(unique.values())


__all__ = ["KINDS", "KindError", "RetrieverKind", "get_kind", "parse_retriever", "parse_retrievers"]
