"""The one search request: its checks and messages, the weights rule, and every face built from it (CLI options,
method specs, the library's dataclass inputs). No index needed."""

from __future__ import annotations

import subprocess
import sys

import pytest

from retrieval.core.types import PrfConfig
from retrieval.search.fusion import Adaptive, FusionConfig
from retrieval.search.request import SearchError, SearchOptions, SearchRequest
from retrieval.search.rerank import RerankConfig
from retrieval.search.specs import SpecError, parse_spec

INDEX = ["bm25", "splade", "dense"]


@pytest.mark.parametrize(("values", "searched"), [
    ({}, INDEX),
    ({"retrievers": ["dense", "bm25"]}, ["dense", "bm25"]),
    # the README's old example: BM25 is left out of the weights, so it is left out of the search
    ({"fusion": {"method": "weighted", "weights": {"splade": 0.6, "dense": 0.4}}}, ["splade", "dense"]),
    ({"retrievers": ["bm25", "dense"], "fusion": {"weights": {"dense": 2}}}, ["bm25", "dense"]),  # bm25 weighs 1
    ({"fusion": {"weights": {}}}, INDEX),
])
def test_which_retrievers_a_request_searches(values: dict, searched: list[str]) -> None:
    assert SearchOptions.parse(values).searched(INDEX, "small") == searched


@pytest.mark.parametrize(("values", "message"), [
    ({"retrievers": ["bm25"], "fusion": {"weights": {"dense": 1}}},
     "fusion.weights names 'dense', which this request does not search; it searches bm25"),
    ({"fusion": {"weights": {"dense": 1}}, "prf": {"bm25": {"method": "rm3"}}},
     "prf names 'bm25', which has no fusion weight, so it is not searched"),
    ({"retrievers": ["dense"], "query_mode": {"splade": "tokens"}}, "query_mode names 'splade'"),
    ({"fusion": {"method": "weighted", "weights": {"a": 0, "b": 0}}},
     "fusion.weights: at least one weight must be greater than 0"),
    ({"offset": -1}, "offset must be >= 0, got -1"),
    ({"k": 0}, "k must be >= 1, got 0"),
    ({"min_score": float("nan")}, "min_score must be a finite number"),
    ({"explain": True, "colour": "red"}, "colour: Extra inputs are not permitted"),
])
def test_bad_requests_say_what_to_fix(values: dict, message: str) -> None:
    with pytest.raises(SearchError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        SearchOptions.parse(values)


def test_unknown_retriever_names_the_index_and_its_retrievers() -> None:
    with pytest.raises(SearchError, match="retriever 'colbert' is not available in index 'small'; choose from bm25, "
                                          "splade, dense"):
        SearchOptions.parse({"retrievers": ["colbert"]}).searched(INDEX, "small")


def test_both_vector_kinds_for_one_retriever_are_refused() -> None:
    with pytest.raises(SearchError, match="'dense' has both a query_vector and a query_sparse; send one"):
        SearchRequest.parse({"query_vector": {"dense": [0.1]}, "query_sparse": {"dense": {"a": 1.0}}})
    request = SearchRequest.parse({"query": "x", "query_vector": {"dense": [0.1, 0.2]}})
    assert request.vectors() == {"dense": [[0.1, 0.2]]}
    assert "query" not in request.options().model_fields_set


def test_the_library_s_dataclasses_build_the_same_request() -> None:
    from_classes = SearchOptions.parse({
        "retrievers": ["bm25", "splade", "dense"],
        "fusion": FusionConfig("weighted", 60, {"splade": 0.7, "dense": 0.3}, "zscore", Adaptive({"nqc": 1.0})),
        "prf": {"bm25": PrfConfig("rm3", fb_docs=5)}, "rerank": RerankConfig("model", 20)})
    from_json = SearchOptions.parse({
        "retrievers": ["bm25", "splade", "dense"],
        "fusion": {"method": "weighted", "rrf_k": 60, "weights": {"splade": 0.7, "dense": 0.3},
                   "normalization": "zscore", "adaptive": {"coefficients": {"nqc": 1.0}}},
        "prf": {"bm25": {"method": "rm3", "fb_docs": 5}}, "rerank": {"model": "model", "depth": 20}})
    assert from_classes == from_json
    assert from_json.fusion.config(99) == FusionConfig("weighted", 60, {"splade": 0.7, "dense": 0.3}, "zscore",
                                                       Adaptive({"nqc": 1.0}))
    assert SearchOptions.parse({}).fusion.config(99).rrf_k == 99  # unset: the searcher's default
    assert from_json.prf_configs() == {"bm25": PrfConfig("rm3", fb_docs=5)}


@pytest.mark.parametrize(("spec", "expected"), [
    ("bm25", {"retrievers": ["bm25"]}),
    ("bm25+rm3(fb_docs=5)", {"retrievers": ["bm25"], "prf": {"bm25": {"method": "rm3", "fb_docs": 5}}}),
    ("rrf:bm25+splade+dense:30", {"retrievers": ["bm25", "splade", "dense"], "fusion": {"rrf_k": 30}}),
    ("weighted:splade=0.6,dense=0.4:zscore",
     {"retrievers": ["splade", "dense"], "fusion": {"method": "weighted", "rrf_k": 60, "normalization": "zscore",
                                                    "weights": {"splade": 0.6, "dense": 0.4}}}),
    ("rrf:bm25+rm3+splade@onnx", {"retrievers": ["bm25", "splade"], "fusion": {"rrf_k": 60},
                                  "prf": {"bm25": {"method": "rm3"}}, "query_mode": {"splade": "onnx"}}),
    ("splade!exact", {"retrievers": ["splade"], "exact": True}),
    ("rrf:bm25!exact+splade@onnx!exact+rocchio", {"retrievers": ["bm25", "splade"], "fusion": {"rrf_k": 60},
                                                   "exact": True, "prf": {"splade": {"method": "rocchio"}},
                                                   "query_mode": {"splade": "onnx"}}),
])
def test_method_specs_parse_into_requests(spec: str, expected: dict) -> None:
    assert parse_spec(spec).request(100) == SearchOptions.parse({"k": 100, **expected})


def test_specs_a_request_cannot_say_are_refused() -> None:
    with pytest.raises(SpecError, match="mixes exact and approximate"):
        parse_spec("rrf:splade!exact+dense").request(10)
    with pytest.raises(SpecError, match="the one there is: exact"):
        parse_spec("splade!fast")
    assert parse_spec("splade!exact").name == "splade!exact" and parse_spec("splade").name == "splade"
    with pytest.raises(SpecError, match="cannot ask for"):
        parse_spec("rrf:bm25+bm25+rm3").request(10)
    with pytest.raises(SpecError, match="cannot ask for"):
        parse_spec("qpp:bm25+dense").request(10)


def test_every_request_field_has_a_cli_option() -> None:
    from service.cli.request_options import SCALARS, STRUCTURED, option_names, request_from

    assert set(SearchRequest.model_fields) - {"query"} == set(SCALARS) | set(STRUCTURED)
    names = option_names()
    assert set(SCALARS) <= names
    values = dict.fromkeys(names)
    values.update(prf=(), query_mode=(), bounds=(), query_vector=(), query_sparse=(), weights="splade=0.6,dense=0.4",
                  fusion="weighted", explain=True, include_text=True, highlight=False)
    request = request_from("wing flutter", values)
    assert request.named() == ["splade", "dense"] and request.fusion.method == "weighted"


def test_importing_the_public_face_loads_no_engine() -> None:
    code = ("import sys, retrieval, service; from retrieval import SearchRequest; "
            "print(sorted(m for m in ('jnius', 'torch', 'faiss', 'fastapi', 'sentence_transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True).stdout
    assert out.strip() == "[]"
    import retrieval

    assert {"Searcher", "SearchRequest", "build_index", "open_index", "HybridError"} <= set(retrieval.__all__)
    with pytest.raises(AttributeError):
        retrieval.NoSuchThing  # noqa: B018


def test_the_rest_surface_keeps_its_routes_and_fields(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The OpenAPI schema's routes and every schema's fields, against tests/rest_surface.json (written from the
    schema before the request models moved into the search layer): a change to the surface is a deliberate edit."""
    import json
    from pathlib import Path

    from retrieval.core.settings import Settings
    from service import create_app

    spec = create_app(Settings(index_root=tmp_path)).openapi()
    surface = {"routes": sorted(f"{m.upper()} {p}" for p, ops in spec["paths"].items() for m in ops),
               "schemas": {name: sorted(s.get("properties", {})) for name, s in sorted(spec["components"]["schemas"].items())}}
    assert surface == json.loads((Path(__file__).parent / "rest_surface.json").read_text())
