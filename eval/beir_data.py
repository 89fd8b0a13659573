"""BEIR dataset folders: queries and qrels, read the way BEIR's GenericDataLoader reads them."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from indexes.storage.docstore.corpus import CorpusError, open_text_lines, read_jsonl_objects, resolve_corpus_file

Qrels = dict[str, dict[str, int]]


@dataclass
class Dataset:
    name: str
    folder: Path
    corpus: Path
    queries: dict[str, str]  # only queries that have judgments in the split, as BEIR keeps them
    qrels: Qrels


def _find(folder: Path, stem: str) -> Path:
    for candidate in (folder / stem, folder / f"{stem}.gz"):
        if candidate.is_file():
            return candidate
    raise CorpusError(f"{folder}: missing {stem} (or {stem}.gz); a BEIR dataset folder is expected")


def read_qrels(path: Path) -> Qrels:
    """``query-id  corpus-id  score`` TSV with a header line; graded integer relevance."""
    qrels: Qrels = {}
    with open_text_lines(path) as handle:
        reader = csv.reader(io.TextIOWrapper(handle, encoding="utf-8"), delimiter="\t", quoting=csv.QUOTE_NONE)
        for number, row in enumerate(reader, start=1):
            if number == 1 and row and not row[-1].lstrip("-").isdigit():
                continue  # header
            if not row:
                continue
            if len(row) != 3:
                raise CorpusError(f"{path}:{number}: expected 3 tab-separated fields, got {len(row)}")
            try:
                score = int(row[2])
            except ValueError:
                raise CorpusError(f"{path}:{number}: relevance {row[2]!r} is not an integer") from None
            qrels.setdefault(row[0], {})[row[1]] = score
    return qrels


def load_dataset(folder: Path, split: str = "test") -> Dataset:
    folder = Path(folder)
    if not folder.is_dir():
        raise CorpusError(f"{folder}: not a folder (a BEIR dataset folder is expected)")
    corpus = resolve_corpus_file(folder)
    qrels = read_qrels(_find(folder / "qrels", f"{split}.tsv"))
    all_queries = {str(obj["_id"]): str(obj.get("text", "")) for _, obj in read_jsonl_objects(_find(folder, "queries.jsonl"))}
    missing = sorted(set(qrels) - set(all_queries))
    if missing:
        raise CorpusError(f"{folder}: qrels name {len(missing)} queries missing from queries.jsonl (e.g. {missing[0]!r})")
    queries = {qid: all_queries[qid] for qid in qrels}  # BEIR keeps exactly the judged queries
    return Dataset(folder.name, folder, corpus, queries, qrels)
