"""Fast-tokenizer work for the GPU encoding pipeline, importable on its own.

Spawned worker processes import only this module (numpy and ``tokenizers``, no torch), so starting
them is cheap. A piece of texts comes back packed as two int32 arrays (all token ids end to end, and
each text's length), which pickle in one copy each.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence

import numpy as np

_tokenizers: dict[str, object] = {}


def init(key: str, tokenizer_json: str, max_length: int) -> None:
    """Load a tokenizer (its JSON form) under ``key``: no padding, truncation at ``max_length``."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(tokenizer_json)
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=max_length)
    _tokenizers[key] = tokenizer


def tokenize(key: str, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(ids, lengths)``: the token ids of every text (special tokens included) end to end, and their counts.

    Texts are stripped first, as sentence-transformers' own ``tokenize`` does.
    """
    tokenizer = _tokenizers[key]
    # encode_batch_fast (tokenizers >= 0.20) skips offset tracking, which the pipeline never reads
    encode = getattr(tokenizer, "encode_batch_fast", None) or tokenizer.encode_batch  # type: ignore[attr-defined]
    encodings = encode([str(t).strip() for t in texts])
    lists = [e.ids for e in encodings]  # each ``.ids`` read builds a new list: read once
    lengths = np.fromiter(map(len, lists), dtype=np.int32, count=len(lists))
    ids = np.fromiter(itertools.chain.from_iterable(lists), dtype=np.int32, count=int(lengths.sum()))
    return ids, lengths
