"""``hybrid search``'s options, built from the search request's fields (:mod:`retrieval.search.request`).

A scalar field (``k``, ``offset``, ``min_score``, ``depth``, ``exact``, ``explain``, ``include_text``, ``highlight``) becomes
one option named after it, typed after it, with the field's own description as help and no default of its own
(unset, the request's default holds). A field that holds a structure gets options spelled for a shell, listed in
:data:`STRUCTURED`; their values are put together into the field and the whole request is checked by the model,
so the command line accepts and refuses exactly what the REST API does (tests/unit/test_request.py checks that every
field of :class:`~retrieval.search.request.SearchRequest` has an option here).
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any

import click

from retrieval.core.settings import parse_query_modes
from retrieval.search.request import SearchRequest
from retrieval.search.specs import SpecError, parse_prf
from service.cli.common import QUERY_MODE_HELP

SCALARS = ("k", "offset", "min_score", "depth", "exact", "explain", "include_text", "highlight", "timeout_ms")
# CLI defaults that differ from the request's: the table shows each retriever's rank and the title.
CLI_DEFAULTS = {"explain": True, "include_text": True}


def _pairs(values: Sequence[str], hint: str, example: str) -> list[tuple[str, str]]:
    pairs = []
    for value in values:
        name, sep, rest = value.partition("=")
        if not sep or not name.strip() or not rest.strip():
            raise click.BadParameter(f"{value!r} is not NAME=VALUE, e.g. {example}", param_hint=hint)
        pairs.append((name.strip(), rest.strip()))
    return pairs


def _json(text: str, hint: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not valid JSON ({exc.msg} at column {exc.colno})", param_hint=hint) from None


def _weights(spec: str | None) -> dict[str, float] | None:
    """``splade=0.6,dense=0.4`` -> {"splade": 0.6, "dense": 0.4}."""
    if not spec:
        return None
    weights: dict[str, float] = {}
    for name, value in _pairs(spec.split(","), "--weights", "splade=0.6,dense=0.4"):
        try:
            weights[name] = float(value)
        except ValueError:
            raise click.BadParameter(f"{name}={value!r}: the weight is not a number", param_hint="--weights") from None
    return weights


def _bounds(values: Sequence[str]) -> dict[str, list[float]] | None:
    """``dense=0:1`` -> {"dense": [0.0, 1.0]}."""
    bounds = {}
    for name, value in _pairs(values, "--bounds", "dense=0:1"):
        low, sep, high = value.partition(":")
        try:
            bounds[name] = [float(low), float(high)]
        except ValueError:
            sep = ""
        if not sep:
            raise click.BadParameter(f"{name}={value!r} is not NAME=LOW:HIGH, e.g. dense=0:1", param_hint="--bounds")
    return bounds or None


def _fusion(v: dict[str, Any]) -> dict[str, Any] | None:
    fusion = {"method": v["fusion"], "rrf_k": v["rrf_k"], "weights": _weights(v["weights"]),
              "normalization": v["normalization"], "bounds": _bounds(v["bounds"]),
              "adaptive": _json(v["adaptive"], "--adaptive") if v["adaptive"] else None}
    given = {key: value for key, value in fusion.items() if value is not None}
    return given or None


def _prf(v: dict[str, Any]) -> dict[str, Any] | None:
    prf = {}
    for name, method in _pairs(v["prf"], "--prf", "bm25=rm3"):
        try:
            prf[name] = parse_prf(method, f"{name}={method}")
        except SpecError as exc:
            raise click.BadParameter(str(exc), param_hint="--prf") from None
    return prf or None


def _query_mode(v: dict[str, Any]) -> dict[str, str] | None:
    try:
        return parse_query_modes(v["query_mode"]) or None
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--query-mode") from None


def _rerank(v: dict[str, Any]) -> dict[str, Any] | None:
    if not v["rerank"]:
        return None
    return {key: value for key, value in (("model", v["rerank"]), ("depth", v["rerank_depth"]),
                                           ("batch_size", v["rerank_batch_size"])) if value is not None}


def _vectors(key: str, hint: str) -> Callable[[dict[str, Any]], dict[str, Any] | None]:
    def parse(v: dict[str, Any]) -> dict[str, Any] | None:
        return {name: _json(text, hint) for name, text in _pairs(v[key], hint, f"{key.split('_')[1]}=[...]")} or None
    return parse


# field -> (its options, how their values make the field's value)
STRUCTURED: dict[str, tuple[list[Callable[[Any], Any]], Callable[[dict[str, Any]], Any]]] = {
    "retrievers": ([click.option("--retrievers", default=None, help="Comma-separated subset (default: the weighted "
                                 "ones with --weights, else all in the index).")],
                   lambda v: [r.strip() for r in v["retrievers"].split(",") if r.strip()] if v["retrievers"] else None),
    "fusion": ([click.option("--fusion", type=click.Choice(["rrf", "weighted"]), default=None,
                             help="Reciprocal rank fusion (default) or a weighted score sum."),
                click.option("--rrf-k", type=int, default=None, help="RRF's k (default: the rrf_k setting, 60)."),
                click.option("--weights", default=None, help="Per-retriever weights, e.g. splade=0.6,dense=0.4; "
                             "without --retrievers, the weighted retrievers are the ones searched."),
                click.option("--normalization", type=click.Choice(["minmax", "zscore", "dbsf"]), default=None,
                             help="For --fusion weighted (default minmax); dbsf is Qdrant's distribution-based score "
                                  "fusion."),
                click.option("--bounds", multiple=True, metavar="NAME=LOW:HIGH",
                             help="Fixed min-max bounds of one retriever's scores (weighted, minmax), repeatable."),
                click.option("--adaptive", default=None, metavar="JSON",
                             help="Query-adaptive weights, as 'hybrid eval beir' prints them for a qpp: method.")],
               _fusion),
    "prf": ([click.option("--prf", multiple=True, metavar="NAME=METHOD",
                          help="Pseudo-relevance feedback for one retriever, repeatable: bm25=rm3, "
                               "'bm25=rm3(fb_docs=5)', dense=average, splade=rocchio.")], _prf),
    "query_mode": ([click.option("--query-mode", multiple=True, metavar="NAME=MODE", help=QUERY_MODE_HELP)],
                   _query_mode),
    "rerank": ([click.option("--rerank", default=None, metavar="MODEL",
                             help="Re-score the fused top hits with this cross-encoder (name, folder or hub id)."),
                click.option("--rerank-depth", type=int, default=None, help="Fused hits re-scored (default 50)."),
                click.option("--rerank-batch-size", type=int, default=None, help="Pairs per forward pass (default 32).")],
               _rerank),
    "filter": ([click.option("--filter", default=None, metavar="JSON",
                             help='Metadata filter, e.g. \'{"range": {"year": {"gte": 2000}}}\' (term, terms, range, '
                                  'exists, and, or, not).')],
               lambda v: _json(v["filter"], "--filter") if v["filter"] is not None else None),
    "query_vector": ([click.option("--query-vector", multiple=True, metavar="NAME=JSON",
                                   help="A dense query vector a client computed, e.g. dense=[0.01,-0.03,...].")],
                     _vectors("query_vector", "--query-vector")),
    "query_sparse": ([click.option("--query-sparse", multiple=True, metavar="NAME=JSON",
                                   help='A learned-sparse query, e.g. \'splade={"wing": 1.2}\'.')],
                     _vectors("query_sparse", "--query-sparse")),
}


def _scalar_option(name: str) -> Callable[[Any], Any]:
    field = SearchRequest.model_fields[name]
    flag = "--" + name.replace("_", "-")
    annotation = field.annotation
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    help_text = field.description or ""
    if annotation is bool:
        default = CLI_DEFAULTS.get(name, field.default)
        return click.option(f"{flag}/--no-{flag[2:]}", name, default=default, show_default=True, help=help_text)
    default = field.default
    return click.option(flag, name, type=annotation, default=None,
                        help=help_text + (f" [default: {default}]" if default is not None else ""))


def search_request_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``command`` with one option per scalar field and the structured fields' options; the command receives them
    as keywords and makes the request with :func:`request_from`."""
    decorators: list[Callable[[Any], Any]] = [_scalar_option(name) for name in SCALARS]
    for options, _ in STRUCTURED.values():
        decorators += options
    for decorate in reversed(decorators):
        command = decorate(command)
    return command


def request_from(query: str, values: dict[str, Any]) -> SearchRequest:
    """The request the options say (checked by the model: :class:`~retrieval.search.request.SearchError`)."""
    fields: dict[str, Any] = {"query": query}
    fields.update({name: values[name] for name in SCALARS if values[name] is not None})
    fields.update({name: value for name, (_, make) in STRUCTURED.items() if (value := make(values)) is not None})
    return SearchRequest.parse(fields)  # type: ignore[no-any-return]


def option_names() -> set[str]:
    """The keyword names :func:`search_request_options` adds."""
    probe = search_request_options(lambda **_: None)
    return {param.name for param in getattr(probe, "__click_params__", []) if param.name}
