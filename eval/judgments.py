"""The judgments of an index built from a BEIR folder: its queries and graded qrels, for the workbench (``/ui``).

An index records the corpus file it was built from (``Manifest.corpus_path``). When that file sits in a BEIR
dataset folder (``queries.jsonl`` and ``qrels/SPLIT.tsv`` beside it, gzipped or not: the harness's indexes and the
bundled Cranfield), the service serves the split's judged queries and their qrels, read the way the harness reads
them (:func:`eval.beir_data.load_dataset`), once per file change.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

from eval.beir_data import Qrels, load_dataset
from indexes.storage.docstore.corpus import CorpusError
from retrieval.core.errors import NotFoundError


class NoJudgmentsError(NotFoundError):
    """The index was not built from a BEIR folder with queries and qrels (or the folder is gone)."""


@dataclass(frozen=True)
class Judgments:
    dataset: str
    split: str
    queries: dict[str, str]  # the split's judged queries, as the harness evaluates them
    qrels: Qrels


def _stamp(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return -1


def _folder(corpus_path: str) -> Path | None:
    if not corpus_path:
        return None
    folder = Path(corpus_path).parent
    has_queries = any((folder / name).is_file() for name in ("queries.jsonl", "queries.jsonl.gz"))
    return folder if has_queries and (folder / "qrels").is_dir() else None


def judgments_for(index: str, corpus_path: str, split: str = "test") -> Judgments:
    """The judgments beside ``corpus_path`` (an index's recorded corpus file); NoJudgmentsError where there are none."""
    folder = _folder(corpus_path)
    if folder is None:
        raise NoJudgmentsError(f"index {index!r} has no judgments: it was not built from a BEIR folder with "
                               f"queries.jsonl and qrels/{split}.tsv (or that folder has moved)")
    stamps = tuple(_stamp(folder / name) for name in ("queries.jsonl", "queries.jsonl.gz", f"qrels/{split}.tsv",
                                                      f"qrels/{split}.tsv.gz"))
    try:
        return _load(str(folder), split, stamps)
    except CorpusError as exc:
        raise NoJudgmentsError(f"index {index!r} has no readable judgments: {exc}") from None


@functools.lru_cache(maxsize=16)
def _load(folder: str, split: str, stamps: tuple[int, ...]) -> Judgments:  # stamps: a changed file reads again
    dataset = load_dataset(Path(folder), split)
    return Judgments(dataset.name, split, dataset.queries, dataset.qrels)
