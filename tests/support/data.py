"""The test corpus: Cranfield documents from the bundled dataset, JSONL files and a tiny BEIR-format dataset."""

from __future__ import annotations

import csv
import functools
import gzip
import itertools
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CRANFIELD = REPO / "eval" / "datasets" / "cranfield"
SMALL_DOCS = 60  # the session index's documents: the first 60 non-empty Cranfield documents


@functools.lru_cache(maxsize=None)
def _lines(limit: int) -> tuple[str, ...]:
    with gzip.open(CRANFIELD / "corpus.jsonl.gz", "rt", encoding="utf-8") as handle:
        return tuple(itertools.islice((line for line in handle if json.loads(line)["text"].strip()), limit))


def cranfield_docs(limit: int) -> list[dict]:
    """The first ``limit`` Cranfield documents with text, as fresh dicts (callers may change them)."""
    return [json.loads(line) for line in _lines(limit)]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def make_dataset(folder: Path, name: str = "tiny") -> Path:
    """A BEIR-format dataset of 40 Cranfield documents and five queries (one unjudged), graded judgments."""
    root = folder / name
    (root / "qrels").mkdir(parents=True)
    docs = cranfield_docs(40)
    write_jsonl(root / "corpus.jsonl", docs)
    queries = [{"_id": "1", "text": "similarity laws aeroelastic models heated high speed aircraft"},
               {"_id": "2", "text": "boundary layer transition"}, {"_id": "3", "text": "slipstream wing lift"},
               {"_id": "4", "text": "heat conduction composite slabs"}, {"_id": "99", "text": "unjudged query"}]
    write_jsonl(root / "queries.jsonl", queries)
    qrels = [("1", docs[11]["_id"], 2), ("1", docs[28]["_id"], 1), ("2", docs[6]["_id"], 1),
             ("3", docs[0]["_id"], 3), ("4", docs[4]["_id"], 1), ("4", docs[5]["_id"], 0)]
    with (root / "qrels" / "test.tsv").open("w", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t")
        writer.writerow(["query-id", "corpus-id", "score"])
        writer.writerows(qrels)
    return root
