"""The one guarded place that reaches into Anserini's private fields (indexes/storage/lucene/anserini.py): the fields
exist with the expected types in the installed jar, and a version it was not checked against is refused."""

from __future__ import annotations

import pytest


def test_anserini_reflection_is_checked() -> None:
    from indexes.storage.lucene import anserini

    assert anserini.anserini_version() in anserini.CHECKED_VERSIONS
    anserini.check_reflection()  # the fields exist with the expected types in the installed jar
    saved = anserini.CHECKED_VERSIONS
    try:
        anserini._checked = False
        anserini.CHECKED_VERSIONS = ("0.0.1",)
        with pytest.raises(anserini.AnseriniVersionError, match="not a version live indexes were checked against"):
            anserini.check_reflection()
    finally:
        anserini.CHECKED_VERSIONS = saved
        anserini._checked = False
    anserini.check_reflection()
