"""What the tests share: the corpus and paths (:mod:`tests.support.data`), the server subprocess
(:mod:`tests.support.server`), the ``hybrid`` command in this process or in its own (:mod:`tests.support.cli`) and
writable copies of the session index (:mod:`tests.support.live`). Test modules import from here, never from each
other; fixtures live in ``tests/conftest.py``."""

from tests.support.data import CRANFIELD, REPO, SMALL_DOCS, cranfield_docs, make_dataset, write_jsonl

__all__ = ["CRANFIELD", "REPO", "SMALL_DOCS", "cranfield_docs", "make_dataset", "write_jsonl"]
