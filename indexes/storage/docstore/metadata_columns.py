"""The document store's metadata, by field, in memory: which docnos a filter selects.

FAISS knows vectors and docnos only, so a dense search under a filter asks this table for the set of
docnos the filter selects and searches among those (:meth:`FaissIndex.search_allowed`). A docno is one
document *version*, never reused, so its values never change: the table only grows, and a point-in-time
view intersects the answer with the versions it can see. Values are kept in the forms
:func:`retrieval.core.fields.document_fields` gives (keyword text, number), like the Lucene fields.

Answers are boolean masks over docnos. Per-field numpy arrays (sorted values for ranges) are built on
the first filter that reads a field after a write, so a stream of writes costs nothing until a filter
needs the field again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from retrieval.core.fields import document_fields
from retrieval.core.filters import And, Exists, Filter, KeywordIn, Not, NumberIn, NumberRange, Or


class MetadataColumns:
    def __init__(self) -> None:
        self._keyword: dict[str, dict[str, list[int]]] = {}
        self._numeric: dict[str, tuple[list[float], list[int]]] = {}
        self._has: dict[str, list[int]] = {}
        self._arrays: dict[tuple[str, ...], Any] = {}  # per-field numpy forms, dropped when the field grows

    def add(self, rows: Iterable[tuple[int, Mapping[str, Any]]]) -> None:
        """Record the metadata of new docnos."""
        for docno, metadata in rows:
            seen: set[str] = set()
            for name, value in document_fields(metadata):
                if value.keyword is not None:
                    self._keyword.setdefault(name, {}).setdefault(value.keyword, []).append(docno)
                    self._arrays.pop(("kw", name, value.keyword), None)
                if value.numeric is not None:
                    values, docnos = self._numeric.setdefault(name, ([], []))
                    values.append(value.numeric)
                    docnos.append(docno)
                    self._arrays.pop(("num", name), None)
                if name not in seen:
                    seen.add(name)
                    self._has.setdefault(name, []).append(docno)
                    self._arrays.pop(("has", name), None)

    def mask(self, node: Filter, size: int) -> np.ndarray:
        """One bool per docno below ``size``: whether ``node`` selects that docno."""
        if isinstance(node, KeywordIn):
            out = np.zeros(size, dtype=bool)
            for value in node.values:
                out[self._docnos(("kw", node.field, value), size)] = True
            return out
        if isinstance(node, NumberIn):
            values, docnos = self._sorted(node.field)
            out = np.zeros(size, dtype=bool)
            for value in node.values:
                lo, hi = np.searchsorted(values, value, "left"), np.searchsorted(values, value, "right")
                out[_below(docnos[lo:hi], size)] = True
            return out
        if isinstance(node, NumberRange):
            values, docnos = self._sorted(node.field)
            lo = 0 if node.low is None else int(np.searchsorted(values, node.low, "left"))
            hi = len(values) if node.high is None else int(np.searchsorted(values, node.high, "right"))
            out = np.zeros(size, dtype=bool)
            if lo < hi:
                out[_below(docnos[lo:hi], size)] = True
            return out
        if isinstance(node, Exists):
            out = np.zeros(size, dtype=bool)
            out[self._docnos(("has", node.field), size)] = True
            return out
        if isinstance(node, And):
            out = self.mask(node.children[0], size)
            for child in node.children[1:]:
                out &= self.mask(child, size)
            return out
        if isinstance(node, Or):
            out = self.mask(node.children[0], size)
            for child in node.children[1:]:
                out |= self.mask(child, size)
            return out
        if isinstance(node, Not):
            return ~self.mask(node.child, size)
        raise TypeError(f"not a filter node: {node!r}")

    def _docnos(self, key: tuple[str, ...], size: int) -> np.ndarray:
        array = self._arrays.get(key)
        if array is None:
            source = self._keyword.get(key[1], {}).get(key[2], []) if key[0] == "kw" else self._has.get(key[1], [])
            array = self._arrays[key] = np.asarray(source, dtype=np.int64)
        return _below(array, size)

    def _sorted(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        key = ("num", name)
        pair = self._arrays.get(key)
        if pair is None:
            values, docnos = self._numeric.get(name, ([], []))
            v = np.asarray(values, dtype=np.float64)
            order = np.argsort(v, kind="stable")
            pair = self._arrays[key] = (v[order], np.asarray(docnos, dtype=np.int64)[order])
        return pair


def _below(docnos: np.ndarray, size: int) -> np.ndarray:
    return docnos[docnos < size] if len(docnos) and docnos.max() >= size else docnos
