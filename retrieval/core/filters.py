"""Metadata filters: the JSON a request sends, checked against an index's field types.

The syntax follows Elasticsearch's query DSL, trimmed to what filters need::

    {"term": {"category": "news"}}                  exact value (keyword, number, date, boolean)
    {"terms": {"tags": ["a", "b"]}}                  any of the values
    {"range": {"year": {"gte": 1990, "lt": 2000}}}   numbers, or dates as ISO 8601 strings
    {"exists": {"field": "author"}}                  the document has a value
    {"and": [...]}, {"or": [...]}, {"not": {...}}    nesting

:func:`parse_filter` turns the JSON into a :data:`Filter` tree, checking it against the index's
:class:`~retrieval.core.fields.FieldSchema`, and every value is converted to the form the index stores
(keyword text, or a float for numbers and dates). Each retriever then applies the same tree before its
top-k: Lucene as a filter clause, FAISS through the document store's matches. Errors name the field
and what to send instead; the tree is hashable, so a retriever can cache what it builds from it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Union

from retrieval.core.errors import HybridError
from retrieval.core.fields import FieldSchema, FieldType, keyword_text, parse_date
from retrieval.core.java_text import checked_value

MAX_CLAUSES = 1024  # leaf conditions and values in one filter, as Lucene's default clause limit
MAX_DEPTH = 32


class FilterError(HybridError, ValueError):
    """A filter the index cannot apply; the message names the field or operator to fix."""


@dataclass(frozen=True)
class KeywordIn:
    """Documents with any of ``values`` in the keyword form of ``field``."""

    field: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class NumberIn:
    field: str
    values: tuple[float, ...]


@dataclass(frozen=True)
class NumberRange:
    """``low <= value <= high`` (exclusive bounds were moved to the next float inward); None: open."""

    field: str
    low: float | None
    high: float | None


@dataclass(frozen=True)
class Exists:
    field: str


@dataclass(frozen=True)
class And:
    children: tuple[Filter, ...]


@dataclass(frozen=True)
class Or:
    children: tuple[Filter, ...]


@dataclass(frozen=True)
class Not:
    child: Filter


Filter = Union[KeywordIn, NumberIn, NumberRange, Exists, And, Or, Not]
OPERATORS = ("term", "terms", "range", "exists", "and", "or", "not")


def parse_filter(obj: Any, schema: FieldSchema) -> Filter:
    """The checked tree of one filter object; a :class:`FilterError` names the first problem."""
    counter = [0]
    return _parse(obj, schema, "filter", 0, counter)


def _parse(obj: Any, schema: FieldSchema, where: str, depth: int, counter: list[int]) -> Filter:
    if depth > MAX_DEPTH:
        raise FilterError(f"{where}: filters nest at most {MAX_DEPTH} levels deep")
    if not isinstance(obj, Mapping) or len(obj) != 1:
        raise FilterError(f"{where}: expected an object with one operator ({', '.join(OPERATORS)}), "
                          f"e.g. {{\"term\": {{\"category\": \"news\"}}}}")
    (op, arg), = obj.items()
    here = f"{where}.{op}"
    if op in ("and", "or"):
        if not isinstance(arg, list) or not arg:
            raise FilterError(f"{here}: expected a non-empty list of filters")
        children = tuple(_parse(c, schema, f"{here}[{i}]", depth + 1, counter) for i, c in enumerate(arg))
        return And(children) if op == "and" else Or(children)
    if op == "not":
        return Not(_parse(arg, schema, here, depth + 1, counter))
    if op == "exists":
        name = arg.get("field") if isinstance(arg, Mapping) and set(arg) == {"field"} else arg
        if not isinstance(name, str):
            raise FilterError(f"{here}: expected {{\"field\": NAME}}")
        _count(counter, 1, here)
        _type(schema, name, here)
        return Exists(name)
    if op not in ("term", "terms", "range"):
        raise FilterError(f"{where}: unknown operator {op!r}; use one of {', '.join(OPERATORS)}")
    if not isinstance(arg, Mapping) or len(arg) != 1:
        raise FilterError(f"{here}: expected {{FIELD: ...}} with one field")
    (name, value), = arg.items()
    ftype = _type(schema, name, here)
    if op == "term":
        _count(counter, 1, here)
        return _values(name, ftype, [value], here)
    if op == "terms":
        if not isinstance(value, list) or not value:
            raise FilterError(f"{here}: field {name!r} expects a non-empty list of values")
        _count(counter, len(value), here)
        return _values(name, ftype, value, here)
    _count(counter, 1, here)
    return _range(name, ftype, value, here)


def _count(counter: list[int], n: int, where: str) -> None:
    counter[0] += n
    if counter[0] > MAX_CLAUSES:
        raise FilterError(f"{where}: a filter holds at most {MAX_CLAUSES} conditions and values")


def _type(schema: FieldSchema, name: Any, where: str) -> FieldType:
    if not isinstance(name, str) or name not in schema.types:
        known = ", ".join(sorted(schema.types)[:20]) or "none (its documents carry no metadata)"
        raise FilterError(f"{where}: unknown field {name!r}; the index's metadata fields are: {known}")
    return schema.types[name]


def _values(name: str, ftype: FieldType, values: list[Any], where: str) -> Filter:
    if ftype in (FieldType.NUMBER, FieldType.DATE):
        return NumberIn(name, tuple(_number(name, ftype, v, where) for v in values))
    out = []
    for v in values:
        if ftype == FieldType.BOOLEAN and not isinstance(v, bool):
            raise FilterError(f"{where}: field {name!r} is a boolean field; give true or false, not {v!r}")
        if not isinstance(v, (str, int, float, bool)) or (isinstance(v, float) and not math.isfinite(v)):
            raise FilterError(f"{where}: field {name!r} is a keyword field; give a string, not {v!r}")
        out.append(checked_value(v, f"{where}: field {name!r} value") if isinstance(v, str) else keyword_text(v))
    return KeywordIn(name, tuple(out))


def _number(name: str, ftype: FieldType, value: Any, where: str) -> float:
    if ftype == FieldType.DATE:
        millis = parse_date(value) if isinstance(value, str) else None
        if millis is None:
            raise FilterError(f"{where}: field {name!r} is a date field; give an ISO 8601 date such as "
                              f"\"2024-05-01\" or \"2024-05-01T12:00:00Z\", not {value!r}")
        return float(millis)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise FilterError(f"{where}: field {name!r} is a number field; give a finite number, not {value!r}")
    return float(value)


def _range(name: str, ftype: FieldType, bounds: Any, where: str) -> NumberRange:
    if ftype not in (FieldType.NUMBER, FieldType.DATE):
        raise FilterError(f"{where}: field {name!r} is a {ftype.value} field; range needs a number or date field")
    if not isinstance(bounds, Mapping) or not bounds or set(bounds) - {"gt", "gte", "lt", "lte"}:
        raise FilterError(f"{where}: field {name!r} expects bounds from gt, gte, lt, lte, e.g. {{\"gte\": 1990}}")
    if ("gt" in bounds and "gte" in bounds) or ("lt" in bounds and "lte" in bounds):
        raise FilterError(f"{where}: field {name!r} has two lower or two upper bounds; give one of each")
    low = high = None
    if "gte" in bounds:
        low = _number(name, ftype, bounds["gte"], where)
    if "gt" in bounds:
        low = math.nextafter(_number(name, ftype, bounds["gt"], where), math.inf)
    if "lte" in bounds:
        high = _number(name, ftype, bounds["lte"], where)
    if "lt" in bounds:
        high = math.nextafter(_number(name, ftype, bounds["lt"], where), -math.inf)
    return NumberRange(name, low, high)

