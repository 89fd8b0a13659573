"""Metadata fields: how a document's metadata becomes filterable values, and the types an index records.

Every key of a document other than ``_id``/``title``/``text`` is metadata. Nested objects are flattened
to dotted names (``{"source": {"year": 2020}}`` is field ``source.year``); lists make a field
multi-valued; ``null`` is no value. Each scalar is stored in every form it has, so what a document
holds never depends on what other documents hold:

* a **keyword** form for every scalar: strings as they are (up to :data:`KEYWORD_LIMIT` characters, as
  Elasticsearch's ``ignore_above``), numbers as their JSON text, booleans as ``true``/``false``;
* a **numeric** form for numbers (float64) and for ISO 8601 date strings (epoch milliseconds, UTC).

A field's *type* (:class:`FieldType`) is the common type of all its values, recorded in the manifest at
build time; a field whose values disagree (numbers in one document, words in another) is a keyword
field. The type only decides how a filter reads the field (a ``range`` needs numbers or dates), so a
recorded type never requires re-indexing. A live write whose value does not fit a recorded number, date
or boolean field is refused, as Elasticsearch refuses it; a new field takes the type of its values.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from typing import Any

from retrieval.core.errors import HybridError

KEYWORD_LIMIT = 512  # longer strings are not indexed as keywords (still counted by ``exists``)
MAX_FIELDS = 1000  # distinct fields per index, as Elasticsearch's mapping limit
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?)?(Z|[+-]\d{2}:?\d{2})?$")


class FieldType(str, Enum):
    KEYWORD = "keyword"
    NUMBER = "number"
    DATE = "date"
    BOOLEAN = "boolean"


class FieldError(HybridError, ValueError):
    """A document's metadata does not fit the index's field types; the message names the field."""


def parse_date(text: str) -> float | None:
    """Epoch milliseconds of an ISO 8601 date or date-time (no zone: UTC); None if ``text`` is not one."""
    if not _DATE.match(text):
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=timezone.utc)
    return math.floor(value.timestamp() * 1000.0 + 0.5)


@dataclass(frozen=True)
class FieldValue:
    """One scalar of a field in the forms a filter can match: keyword text and/or a number."""

    keyword: str | None
    numeric: float | None
    type: FieldType


def field_value(value: Any) -> FieldValue | None:
    """The forms of one scalar (None for null and for values that are not scalars)."""
    if isinstance(value, bool):
        return FieldValue("true" if value else "false", None, FieldType.BOOLEAN)
    if isinstance(value, (int, float)):
        if not math.isfinite(value):
            return None
        return FieldValue(keyword_text(value), float(value), FieldType.NUMBER)
    if isinstance(value, str):
        date = parse_date(value)
        keyword = value if len(value) <= KEYWORD_LIMIT else None
        return FieldValue(keyword, date, FieldType.DATE if date is not None else FieldType.KEYWORD)
    return None


def keyword_text(value: Any) -> str:
    """The keyword form of a scalar; a filter's ``term`` on a keyword field compares this text."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)  # 2.0 stays "2.0", as JSON writes it
    return str(value)


def flatten(metadata: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted field name, scalar) for every value of ``metadata``; lists give one pair per element."""
    for key, value in metadata.items():
        name = f"{prefix}{key}"
        yield from _values(name, value)


def _values(name: str, value: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(value, Mapping):
        yield from flatten(value, f"{name}.")
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _values(name, item)
    elif value is not None:
        yield name, value


def document_fields(metadata: Mapping[str, Any]) -> list[tuple[str, FieldValue]]:
    """Every (field, value) of one document that an index stores for filtering."""
    out = []
    for name, raw in flatten(metadata):
        value = field_value(raw)
        if value is not None:
            out.append((name, value))
    return out


def merged(a: FieldType | None, b: FieldType) -> FieldType:
    """The type of a field holding values of types ``a`` and ``b``."""
    return b if a is None or a == b else FieldType.KEYWORD


class FieldSchema:
    """Field name -> type, as recorded in an index's manifest."""

    def __init__(self, types: Mapping[str, str] | None = None) -> None:
        self.types: dict[str, FieldType] = {name: FieldType(t) for name, t in (types or {}).items()}

    @classmethod
    def union(cls, recorded: Iterable[Mapping[str, str]]) -> FieldSchema:
        """The types of an index made of parts (shards) that recorded ``recorded``: a field's type widened over them."""
        out = cls()
        for types in recorded:
            for name, ftype in types.items():
                out.types[name] = merged(out.types.get(name), FieldType(ftype))
        return out

    def as_dict(self) -> dict[str, str]:
        return {name: t.value for name, t in sorted(self.types.items())}

    def __bool__(self) -> bool:
        return bool(self.types)

    def observe(self, metadata: Iterable[Mapping[str, Any]]) -> None:
        """Widen the types with every value of a batch build's documents (disagreeing values: keyword)."""
        for one in metadata:
            for name, value in document_fields(one):
                self.types[name] = merged(self.types.get(name), value.type)
        self._check_size()

    def accept(self, docs: Iterable[tuple[str, Mapping[str, Any]]]) -> FieldSchema:
        """The schema after a live write of ``(id, metadata)`` pairs, or a :class:`FieldError` naming the first
        value that does not fit a recorded type. New fields take the type of their values in this write."""
        out = FieldSchema()
        out.types = dict(self.types)
        fresh: dict[str, FieldType] = {}
        for doc_id, metadata in docs:
            for name, value in document_fields(metadata):
                recorded = self.types.get(name)
                if recorded is None:
                    fresh[name] = merged(fresh.get(name), value.type)
                elif not fits(recorded, value):
                    raise FieldError(f"document {doc_id!r}: metadata field {name!r} is a {recorded.value} field in "
                                     f"this index; {value.keyword or value.numeric!r} is a {value.type.value}")
        out.types.update(fresh)
        out._check_size()
        return out

    def _check_size(self) -> None:
        if len(self.types) > MAX_FIELDS:
            raise FieldError(f"documents hold {len(self.types)} distinct metadata fields; at most {MAX_FIELDS} can be "
                             "filtered on. Keep free-form data in 'text' or in fewer fields")


def fits(recorded: FieldType, value: FieldValue) -> bool:
    """Whether a value can go into a field of type ``recorded`` (every scalar fits a keyword field)."""
    if recorded == FieldType.KEYWORD:
        return True
    if recorded == FieldType.NUMBER:
        return value.type == FieldType.NUMBER
    if recorded == FieldType.DATE:
        return value.type == FieldType.DATE
    return value.type == FieldType.BOOLEAN
