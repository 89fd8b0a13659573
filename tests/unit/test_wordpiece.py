"""The compiled WordPiece tokenizer gives exactly the ids of Hugging Face's ``tokenizers`` for BERT-style models."""

from __future__ import annotations

import functools
import json
import threading
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from retrieval.encoders.models import resolve_model
from retrieval.encoders.wordpiece import WordPiece
from tests.support import cranfield_docs

MODELS = ("all-MiniLM-L6-v2", "splade-tiny", "cased")


@functools.lru_cache(maxsize=None)
def _json(model: str) -> str:
    """A built-in model's tokenizer; ``cased``: MiniLM's with lowercasing off (as bert-base-cased has it)."""
    if model == "cased":
        spec = json.loads(_json("all-MiniLM-L6-v2"))
        spec["normalizer"]["lowercase"] = False
        return json.dumps(spec)
    return (resolve_model(model).path / "tokenizer.json").read_text(encoding="utf-8")


@functools.lru_cache(maxsize=None)
def _library(tokenizer_json: str, max_length: int) -> Any:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(tokenizer_json)
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=max_length)
    return tokenizer


def _reference(tokenizer_json: str, max_length: int, texts: list[str]) -> list[list[int]]:
    """``tokenizers``' ids for the texts stripped, as sentence-transformers strips them."""
    return [e.ids for e in _library(tokenizer_json, max_length).encode_batch([t.strip() for t in texts])]


def _rows(ids: np.ndarray, lengths: np.ndarray) -> list[list[int]]:
    assert ids.dtype == np.int32 and lengths.dtype == np.int32 and int(lengths.sum()) == ids.size
    ends = np.cumsum(lengths)
    return [ids[e - n:e].tolist() for e, n in zip(ends, lengths)]


@pytest.fixture(scope="module")
def tokenizers() -> dict[tuple[str, int], WordPiece]:
    out = {}
    for model in MODELS:
        for max_length in (512, 256, 12):
            wp = WordPiece.from_json(_json(model), max_length)
            assert wp is not None
            out[model, max_length] = wp
    return out


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("max_length", [512, 256, 12])
def test_cranfield_ids_equal_the_fast_tokenizer(tokenizers, model: str, max_length: int) -> None:  # type: ignore[no-untyped-def]
    texts = [f"{d['title']} {d['text']}" for d in cranfield_docs(400)]
    texts += ["", "   ", "x", "  wing  flutter  ", "a" * 100, "a" * 101, "b" * 300 + " end"]
    wp = tokenizers[model, max_length]
    got = _rows(*wp.tokenize(texts))
    assert got == _reference(_json(model), max_length, texts)
    assert wp.fallback_texts == 0


# Text built to hit the edges: punctuation runs, control characters inside words, every ASCII whitespace, digits,
# words the vocabulary must split or cannot match, added tokens written out, and non-ASCII characters.
_PIECES = st.sampled_from(
    ["the", "aerodynamic", "unaffable", "flutter", "ing", "##ing", "x", "Z", "q", "3", "1729", "'", "-", ".", ",",
     "(", ")", "#", "##", "[", "]", "\\", "~", "`", "{", "|", "}", "@", "^", "_", " ", "  ", "\t", "\n", "\r", "\x0b",
     "\x0c", "\x00", "\x01", "\x1c", "\x1f", "\x7f", "[MASK]", "[CLS]", "[mask]", "café", "naïve", "中文", "\u00a0",
     "\u2028", "\u200b", "\ufffd", "Ωmega", "supercalifragilisticexpialidocious", "zzqxj", "a" * 99, "b" * 120])
_TEXTS = st.lists(st.lists(_PIECES | st.text(st.characters(max_codepoint=127), max_size=6), max_size=30)
                  .map("".join), min_size=1, max_size=12)


@settings(max_examples=300, deadline=None)
@given(texts=_TEXTS, model=st.sampled_from(MODELS), max_length=st.sampled_from([512, 12]))
def test_generated_text_ids_equal_the_fast_tokenizer(tokenizers, texts: list[str], model: str,  # type: ignore[no-untyped-def]
                                                     max_length: int) -> None:
    assert _rows(*tokenizers[model, max_length].tokenize(texts)) == _reference(_json(model), max_length, texts)


def test_texts_it_does_not_cover_go_to_the_library_in_their_place(tokenizers) -> None:  # type: ignore[no-untyped-def]
    wp = WordPiece.from_json(_json("all-MiniLM-L6-v2"), 256)
    assert wp is not None
    texts = ["plain text", "a café", "fill the [MASK] in", "more plain text", "中文 text", "end"]
    assert _rows(*wp.tokenize(texts)) == _reference(_json("all-MiniLM-L6-v2"), 256, texts)
    assert wp.fallback_texts == 3


def test_threads_share_one_tokenizer() -> None:
    wp = WordPiece.from_json(_json("splade-tiny"), 256)
    assert wp is not None
    texts = [f"{d['title']} {d['text']}" for d in cranfield_docs(300)]
    want = _reference(_json("splade-tiny"), 256, texts)
    results: dict[int, list[list[int]]] = {}

    def run(k: int) -> None:
        results[k] = _rows(*wp.tokenize(texts[k::4]))

    workers = [threading.Thread(target=run, args=(k,)) for k in range(4)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    assert all(results[k] == want[k::4] for k in range(4))


def test_other_tokenizers_are_not_taken() -> None:
    spec = json.loads(_json("all-MiniLM-L6-v2"))
    assert WordPiece.from_json(json.dumps(spec), 256) is not None
    for part, change in [("normalizer", {"type": "Lowercase"}), ("pre_tokenizer", {"type": "Whitespace"}),
                         ("normalizer", dict(spec["normalizer"], clean_text=False)),
                         ("post_processor", None), ("model", dict(spec["model"], type="BPE"))]:
        assert WordPiece.from_json(json.dumps(dict(spec, **{part: change})), 256) is None, part
    assert WordPiece.from_json(json.dumps(spec), 1) is None
