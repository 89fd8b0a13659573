"""BERT's WordPiece tokenizer for ASCII text, compiled (numba), giving exactly the ids of Hugging Face's fast tokenizer.

Why: on the GPU, tokenizing capped the encoding pipeline. ``tokenizers`` reached 21-26k Cranfield documents/s on all 16
cores of an H200 host, under the 24,000 MiniLM documents/s issue 12 asks for and far under the GPU's 43,000. It ran in
14 worker processes, and taking their results off the pipes held the GIL that the thread launching the GPU work needed.
This tokenizer does the same work in one compiled pass per text (clean, lowercase, split on whitespace and
punctuation, greedy longest-match WordPiece in a hash table, truncation as it goes) and releases the GIL while it runs,
so a few threads of the encoding process are enough and nothing crosses a process boundary.

What it covers: a ``tokenizer.json`` whose normalizer is ``BertNormalizer`` (cleaning text; cased or not), whose
pre-tokenizer is ``BertPreTokenizer``, whose model is ``WordPiece`` and whose single-text template is
``[CLS] $A [SEP]``, which is every BERT-family checkpoint (MiniLM, SPLADE, BERT itself). :meth:`WordPiece.from_json` returns
None for any other tokenizer. Within a batch, a text that is not all ASCII, or that contains an added token's text
(``[MASK]`` written out), goes to ``tokenizers`` itself, and its ids land in its place. ``tests/unit/test_wordpiece.py``
checks the ids against ``tokenizers`` on Cranfield and on generated text heavy in punctuation, control characters and
long words.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

try:
    import numba
except ImportError:  # pragma: no cover - numba is a dependency; the same code runs as plain Python without it
    numba = None

_FNV_OFFSET = np.uint64(14695981039346656037)
_FNV_PRIME = np.uint64(1099511628211)

# ASCII classes after BertNormalizer(clean_text=True, lowercase=True) and BertPreTokenizer:
# 0 dropped (control characters, NUL), 1 whitespace (ends a word), 2 punctuation (a word of its own), 3 word byte
_CLASSES = np.full(128, 3, dtype=np.uint8)
_CLASSES[:32] = 0
_CLASSES[127] = 0
_CLASSES[[9, 10, 13, 32]] = 1
for _c in "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~":
    _CLASSES[ord(_c)] = 2
_LOWER = np.arange(128, dtype=np.uint8)
_LOWER[65:91] += 32


# a slot of the vocabulary's hash table: [0] the key's 64-bit hash, [1] where its bytes are in the pool, its flag,
# length and id packed as ``at << 33 | flag << 32 | length << 24 | id`` (-1: empty). One 16-byte read per probe.
_EMPTY = -1


def _pack(at: int, flag: int, length: int, token_id: int) -> int:
    return (at << 33) | (flag << 32) | (length << 24) | token_id


def _hashes(flag: int, word: np.ndarray, start: int, end: int, out: np.ndarray) -> None:
    """FNV-1a of ``(flag, word[start:k])`` for every ``k`` in ``start + 1 .. end``, in ``out[k - start - 1]``."""
    h = _FNV_OFFSET ^ np.uint64(flag)
    for i in range(start, end):
        h = (h ^ np.uint64(word[i])) * _FNV_PRIME
        out[i - start] = h


def _lookup(h: np.uint64, flag: int, word: np.ndarray, start: int, end: int, slots: np.ndarray,
            pool: np.ndarray) -> int:
    """The id of ``word[start:end]`` (``flag`` 1: as a continuation, ``##...``) whose hash is ``h``, or -1."""
    mask = slots.shape[0] - 1
    at = np.int64(h & np.uint64(mask))
    key = np.int64(h)
    n = end - start
    while slots[at, 1] != _EMPTY:
        if slots[at, 0] == key:
            packed = slots[at, 1]
            if (packed >> 24) & 0xFF == n and (packed >> 32) & 1 == flag:
                base = packed >> 33
                same = True
                for i in range(n):
                    if pool[base + i] != word[start + i]:
                        same = False
                        break
                if same:
                    return np.int64(packed & 0xFFFFFF)
        at = (at + 1) & mask
    return -1


def _word_pieces(word: np.ndarray, n: int, out: np.ndarray, count: int, limit: int, unk: int, max_word: int,
                 max_piece: int, slots: np.ndarray, pool: np.ndarray, pieces: np.ndarray,
                 hashes: np.ndarray) -> int:
    """Greedy longest-match-first WordPiece of ``word[:n]`` appended to ``out`` from ``count``, at most up to
    ``limit``; returns the new count. A word longer than ``max_word`` characters, or one with a part no vocabulary
    entry matches, is one ``[UNK]``, as in ``tokenizers``' WordPiece."""
    if n > max_word:
        out[count] = unk
        return count + 1
    found = 0
    start = 0
    while start < n:
        end = min(n, start + max_piece)
        flag = 1 if start > 0 else 0
        _hashes(flag, word, start, end, hashes)
        hit = -1
        while start < end:
            hit = _lookup(hashes[end - start - 1], flag, word, start, end, slots, pool)
            if hit >= 0:
                break
            end -= 1
        if hit < 0:
            out[count] = unk
            return count + 1
        pieces[found] = hit
        found += 1
        start = end
    for i in range(found):
        if count >= limit:
            break
        out[count] = pieces[i]
        count += 1
    return count


def _encode(text: np.ndarray, starts: np.ndarray, ends: np.ndarray, classes: np.ndarray, lower: np.ndarray,
            slots: np.ndarray, pool: np.ndarray, cls: int, sep: int, unk: int, max_length: int, max_word: int,
            max_piece: int, out: np.ndarray, lengths: np.ndarray) -> int:
    """Texts ``text[starts[i]:ends[i]]`` (ASCII bytes) -> ``[CLS] pieces [SEP]`` end to end in ``out``, at most
    ``max_length`` ids each; each text's count in ``lengths``. Returns the number of ids written."""
    word = np.empty(max_word + 1, dtype=np.uint8)  # a longer word is [UNK] whatever it holds
    pieces = np.empty(max_word + 1, dtype=np.int64)
    hashes = np.empty(max_piece, dtype=np.uint64)
    limit_content = max(max_length - 2, 0)
    at = 0
    for t in range(starts.size):
        first = at
        out[at] = cls
        at += 1
        limit = at + limit_content
        n = 0
        i = starts[t]
        end = ends[t]
        while i <= end and at < limit:
            kind = 1 if i == end else classes[text[i]]
            if kind == 3:
                if n <= max_word:
                    word[n] = lower[text[i]]
                n += 1
            elif kind != 0:
                if n > 0:
                    at = _word_pieces(word, n, out, at, limit, unk, max_word, max_piece, slots, pool, pieces, hashes)
                    n = 0
                if kind == 2 and at < limit:
                    word[0] = text[i]
                    at = _word_pieces(word, 1, out, at, limit, unk, max_word, max_piece, slots, pool, pieces, hashes)
            i += 1
        out[at] = sep
        at += 1
        lengths[t] = at - first
    return at


def _fill(pool: np.ndarray, starts: np.ndarray, lens: np.ndarray, flags: np.ndarray, ids: np.ndarray,
          slots: np.ndarray) -> None:
    """Every entry into the table, by linear probing (keys are unique)."""
    mask = slots.shape[0] - 1
    hashes = np.empty(max(lens.max(), 1), dtype=np.uint64)
    for e in range(starts.size):
        _hashes(flags[e], pool, starts[e], starts[e] + lens[e], hashes)
        h = hashes[lens[e] - 1]
        at = np.int64(h & np.uint64(mask))
        while slots[at, 1] != _EMPTY:
            at = (at + 1) & mask
        slots[at, 0] = np.int64(h)
        slots[at, 1] = _pack(starts[e], flags[e], lens[e], ids[e])


if numba is not None:
    _pack = numba.njit(cache=True, nogil=True, inline="always")(_pack)
    _hashes = numba.njit(cache=True, nogil=True, inline="always")(_hashes)
    _lookup = numba.njit(cache=True, nogil=True, inline="always")(_lookup)
    _word_pieces = numba.njit(cache=True, nogil=True, inline="always")(_word_pieces)
    _encode = numba.njit(cache=True, nogil=True)(_encode)
    _fill = numba.njit(cache=True, nogil=True)(_fill)


@dataclass(frozen=True)
class _Table:
    """The vocabulary as an open-addressing hash table over ``(continuation flag, bytes)``."""

    slots: np.ndarray  # int64 [size, 2]: hash, packed entry (see ``_pack``)
    pool: np.ndarray  # uint8: the entries' bytes end to end
    max_piece: int  # the longest entry, in bytes: no longer match is tried

    @classmethod
    def build(cls, vocab: dict[str, int], prefix: str) -> _Table:
        entries: list[tuple[int, bytes, int]] = []
        for token, token_id in vocab.items():
            if not token.isascii():
                continue  # an ASCII word can never match it
            entries.append((0, token.encode("ascii"), int(token_id)))
            if prefix and token.startswith(prefix) and len(token) > len(prefix):
                entries.append((1, token[len(prefix):].encode("ascii"), int(token_id)))
        pool = np.frombuffer(b"".join(e[1] for e in entries), dtype=np.uint8).copy()
        lens = np.fromiter((len(e[1]) for e in entries), dtype=np.int64, count=len(entries))
        ids = np.fromiter((e[2] for e in entries), dtype=np.int64, count=len(entries))
        if pool.size >= 1 << 30 or int(lens.max(initial=0)) > 0xFF or int(ids.max(initial=0)) > 0xFFFFFF:
            raise ValueError("vocabulary too large for the packed table")
        size = 16
        while size < 2 * len(entries):
            size *= 2
        slots = np.full((size, 2), _EMPTY, dtype=np.int64)
        # vocabulary strings are unique, so every (flag, bytes) key is too: no entry shadows another
        _fill(pool, np.cumsum(lens) - lens, lens, np.fromiter((e[0] for e in entries), dtype=np.int64,
                                                                count=len(entries)), ids, slots)
        return cls(slots, pool, int(lens.max(initial=1)))


def _template(post: dict[str, Any] | None, added: dict[str, int]) -> tuple[int, int] | None:
    """``(cls, sep)`` ids when the single-text template is ``[CLS] $A [SEP]``, else None."""
    if not post:
        return None
    if post.get("type") == "BertProcessing":
        return int(post["cls"][1]), int(post["sep"][1])
    if post.get("type") != "TemplateProcessing":
        return None
    single = post.get("single") or []
    if len(single) != 3 or "SpecialToken" not in single[0] or "Sequence" not in single[1] \
            or "SpecialToken" not in single[2] or single[1]["Sequence"].get("id") != "A":
        return None
    special = post.get("special_tokens") or {}
    ids = []
    for part in (single[0], single[2]):
        name = part["SpecialToken"]["id"]
        token_ids = (special.get(name) or {}).get("ids") or ([added[name]] if name in added else [])
        if len(token_ids) != 1:
            return None
        ids.append(int(token_ids[0]))
    return ids[0], ids[1]


class WordPiece:
    """A BERT-style fast tokenizer's ids for a batch of texts, at compiled speed, with ``tokenizers`` for the rest.

    ``tokenize`` is safe to call from several threads at once; the compiled part runs without the GIL.
    """

    def __init__(self, table: _Table, *, cls: int, sep: int, unk: int, lowercase: bool, max_word: int,
                 max_length: int, added: Sequence[str], tokenizer_json: str) -> None:
        self.table, self.cls, self.sep, self.unk = table, cls, sep, unk
        self.lower = _LOWER if lowercase else np.arange(128, dtype=np.uint8)
        self.max_word, self.max_length = max_word, max_length
        self.added = tuple(a for a in added if a)
        self._tokenizer_json = tokenizer_json
        self._fallback: Any = None
        self.fallback_texts = 0  # texts sent to ``tokenizers`` (not ASCII, or holding an added token's text)

    @classmethod
    def from_json(cls, tokenizer_json: str, max_length: int) -> WordPiece | None:
        """The tokenizer described by ``tokenizer_json`` (``Tokenizer.to_str()``), truncating at ``max_length`` ids
        (special tokens included); None when it is not one this module reproduces."""
        spec = json.loads(tokenizer_json)
        norm, pre, model = spec.get("normalizer") or {}, spec.get("pre_tokenizer") or {}, spec.get("model") or {}
        # accents and Chinese characters never occur in ASCII text, so those two settings do not matter here
        if norm.get("type") != "BertNormalizer" or not norm.get("clean_text"):
            return None
        if pre.get("type") != "BertPreTokenizer" or model.get("type") != "WordPiece" or max_length < 2:
            return None
        added = {a["content"]: int(a["id"]) for a in spec.get("added_tokens") or []}
        template = _template(spec.get("post_processor"), added)
        vocab = model.get("vocab") or {}
        unk = vocab.get(model.get("unk_token", "[UNK]"))
        if template is None or unk is None:
            return None
        try:
            table = _Table.build(vocab, str(model.get("continuing_subword_prefix", "##")))
        except ValueError:  # beyond the packed table's limits: the library's tokenizer serves it
            return None
        return cls(table, cls=template[0], sep=template[1], unk=int(unk), lowercase=bool(norm.get("lowercase", True)),
                   max_word=int(model.get("max_input_chars_per_word", 100)), max_length=int(max_length),
                   added=list(added), tokenizer_json=tokenizer_json)

    @classmethod
    def from_tokenizer(cls, tokenizer: Any, max_length: int) -> WordPiece | None:
        """From a transformers tokenizer (its ``backend_tokenizer``) or a ``tokenizers.Tokenizer``."""
        backend = getattr(tokenizer, "backend_tokenizer", tokenizer)
        to_str = getattr(backend, "to_str", None)
        return cls.from_json(to_str(), max_length) if callable(to_str) else None

    def _fallback_tokenizer(self) -> Any:
        if self._fallback is None:
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
            from tokenizers import Tokenizer

            tokenizer = Tokenizer.from_str(self._tokenizer_json)
            tokenizer.no_padding()
            tokenizer.enable_truncation(max_length=self.max_length)
            self._fallback = tokenizer
        return self._fallback

    def _compiled(self, texts: Sequence[str], joined: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        data = np.frombuffer(("".join(texts) if joined is None else joined).encode("ascii"), dtype=np.uint8)
        sizes = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
        ends = np.cumsum(sizes)
        starts = ends - sizes
        capacity = int(min(len(texts) * self.max_length, data.size + 2 * len(texts)))
        out = np.empty(capacity, dtype=np.int32)
        lengths = np.empty(len(texts), dtype=np.int32)
        t = self.table
        used = _encode(data, starts, ends, _CLASSES, self.lower, t.slots, t.pool, self.cls, self.sep, self.unk,
                       self.max_length, self.max_word, t.max_piece, out, lengths)
        return out[:used], lengths

    def _library(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        tokenizer = self._fallback_tokenizer()
        encode = getattr(tokenizer, "encode_batch_fast", None) or tokenizer.encode_batch
        lists = [e.ids for e in encode([t.strip() for t in texts])]
        lengths = np.fromiter(map(len, lists), dtype=np.int32, count=len(lists))
        ids = np.fromiter((i for ids in lists for i in ids), dtype=np.int32, count=int(lengths.sum()))
        return ids, lengths

    def tokenize(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, lengths)``: every text's ids (special tokens included) end to end, and their counts; the same ids
        as ``tokenizers`` with truncation at ``max_length`` on the stripped text (as sentence-transformers strips)."""
        texts = [str(t) for t in texts]
        joined = "".join(texts)  # one scan of the whole batch; a hit (maybe across two texts) means a look at each
        if joined.isascii() and not any(a in joined for a in self.added):
            return self._compiled(texts, joined)
        other = [i for i, t in enumerate(texts) if not t.isascii() or (self.added and any(a in t for a in self.added))]
        if not other:
            return self._compiled(texts)
        self.fallback_texts += len(other)
        taken = set(other)
        mine = [i for i in range(len(texts)) if i not in taken]
        ids_a, lens_a = self._compiled([texts[i] for i in mine]) if mine else (np.zeros(0, np.int32),) * 2
        ids_b, lens_b = self._library([texts[i] for i in other])
        lengths = np.empty(len(texts), dtype=np.int32)
        lengths[mine], lengths[other] = lens_a, lens_b
        ids = np.empty(int(lengths.sum()), dtype=np.int32)
        offsets = np.cumsum(lengths, dtype=np.int64) - lengths
        for source, lens, rows in ((ids_a, lens_a, mine), (ids_b, lens_b, other)):
            if rows:
                # each row's ids go to its text's place: destination = its offset + position within the row
                within = np.arange(source.size) - np.repeat(np.cumsum(lens, dtype=np.int64) - lens, lens)
                ids[np.repeat(offsets[rows], lens) + within] = source
        return ids, lengths

    def warm(self) -> None:
        """Compile (or load from numba's cache) before the first batch."""
        self.tokenize(["warm up, a-b"])
