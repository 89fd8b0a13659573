"""Metadata field types: the schema a build records and live writes are checked against, and the filter parser's
limits. No index needed."""

from __future__ import annotations

import pytest

from retrieval.core.fields import FieldError, FieldSchema
from retrieval.core.filters import FilterError, parse_filter


def test_schema_widens_at_build_and_refuses_misfits_live() -> None:
    schema = FieldSchema()
    schema.observe([{"a": 1, "b": "2020-01-01", "c": True}, {"a": "one", "b": "2021-02-03T04:05:06Z"}])
    assert schema.as_dict() == {"a": "keyword", "b": "date", "c": "boolean"}
    with pytest.raises(FieldError, match="document 'x': metadata field 'b' is a date field"):
        schema.accept([("x", {"b": "soon"})])
    assert schema.accept([("y", {"a": 5, "d": [1, 2.5]})]).as_dict()["d"] == "number"
    with pytest.raises(FilterError, match="at most 1024"):
        parse_filter({"terms": {"a": [str(i) for i in range(2000)]}}, schema)
