"""The one place that reaches into Anserini's private fields, guarded by a version check.

Live views point Anserini's ``SimpleSearcher``/``SimpleImpactSearcher`` at a near-real-time reader of
our ``IndexWriter``; Anserini has no public way to do that, so its private ``reader`` and ``searcher``
fields are swapped by reflection. That is only safe for an Anserini whose fields we have checked:
:func:`check_reflection` verifies, once per process, the bundled jar's version and the fields' types,
and refuses with a message instead of corrupting searches on an Anserini we have not seen.
"""

from __future__ import annotations

import re
import threading
from importlib import resources
from typing import Any

from retrieval.core.errors import UnavailableError
from retrieval.core.jvm import JNI_LOCK, ensure_pyserini

# Anserini versions whose private fields were read and tested (tests/integration/test_anserini_reflection.py).
CHECKED_VERSIONS = ("1.7.1",)
SEARCHERS = ("io.anserini.search.SimpleSearcher", "io.anserini.search.SimpleImpactSearcher")
FIELDS = {"reader": "org.apache.lucene.index.IndexReader", "searcher": "org.apache.lucene.search.IndexSearcher"}

_checked = False
_lock = threading.Lock()


class AnseriniVersionError(UnavailableError, RuntimeError):
    """The installed Anserini is not one whose private fields this version of the program knows."""


def anserini_version() -> str:
    """The version of the Anserini jar pyserini bundles (``anserini-X.Y.Z-fatjar.jar``)."""
    jars = resources.files("pyserini.resources.jars")
    for jar in jars.iterdir():
        match = re.fullmatch(r"anserini-(\d+(?:\.\d+)*)-fatjar\.jar", jar.name)
        if match:
            return match.group(1)
    raise AnseriniVersionError("pyserini bundles no Anserini jar; reinstall pyserini")


def check_reflection() -> None:
    """Refuse unless the fields :func:`point_at_reader` writes exist with the types it expects."""
    global _checked
    if _checked:
        return
    with _lock:
        if _checked:
            return
        version = anserini_version()
        if version not in CHECKED_VERSIONS:
            raise AnseriniVersionError(
                f"Anserini {version} is not a version live indexes were checked against ({', '.join(CHECKED_VERSIONS)}); "
                "install the pyserini version pyproject.toml pins"
            )
        ensure_pyserini()
        from jnius import autoclass

        utils = autoclass("org.apache.commons.lang3.reflect.FieldUtils")
        jclass = autoclass("java.lang.Class")
        with JNI_LOCK:
            for searcher in SEARCHERS:
                owner = jclass.forName(searcher)
                for name, type_name in FIELDS.items():
                    field = utils.getField(owner, name, True)
                    if field is None or field.getType().getName() != type_name:
                        raise AnseriniVersionError(f"{searcher} has no field {name} of type {type_name} in Anserini "
                                                   f"{version}; live index views cannot be built")
        _checked = True


def point_at_reader(jsearcher: Any, reader: Any) -> None:
    """Make an Anserini ``SimpleSearcher``/``SimpleImpactSearcher`` search ``reader`` instead of its own.

    The searcher takes over the reference: its ``close()`` releases ``reader``. Its own ``IndexSearcher``
    is dropped so that the next search builds one over the new reader with the searcher's similarity.
    """
    check_reflection()
    from jnius import autoclass

    fields = autoclass("org.apache.commons.lang3.reflect.FieldUtils")
    with JNI_LOCK:
        previous = fields.readField(jsearcher, "reader", True)
        fields.writeField(jsearcher, "reader", reader, True)
        fields.writeField(jsearcher, "searcher", None, True)
        if previous is not None:
            previous.close()
