"""BM25-flat reference numbers computed with Pyserini's own command-line tools, for data sets that
have no published anchor (Cranfield): the same recipe as Pyserini's BEIR 2CR ``bm25-flat`` condition.

    python -m eval.pyserini_reference ../shared/data/cranfield [--out reports/pyserini_reference]

It writes Pyserini's JsonCollection (``contents`` = title + " " + text), indexes it with
``python -m pyserini.index.lucene`` and searches with ``python -m pyserini.search.lucene --bm25
--hits 1000`` (each in its own process, with only this repo's JVM preparation in front), then scores
the run with pytrec_eval and prints an anchor entry for ``eval/anchors.json``. None of our indexing
or search code runs, so agreement with ``hybrid eval beir``'s bm25 row is a real cross-check.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

from eval.beir_data import load_dataset
from eval.metrics import evaluate, mean, parse_metrics
from indexes.storage.docstore.corpus import iter_documents

ANCHORS = Path(__file__).resolve().parent / "anchors.json"
RUNNER = ("import sys, runpy; from retrieval.core.jvm import ensure_pyserini; ensure_pyserini(); "
          "mod = sys.argv[1]; sys.argv = [mod] + sys.argv[2:]; runpy.run_module(mod, run_name='__main__')")


def pyserini(module: str, *args: str) -> list[str]:
    return [sys.executable, "-c", RUNNER, module, *args]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", type=Path)
    parser.add_argument("--out", type=Path, default=Path("reports/pyserini_reference"))
    parser.add_argument("--split", default="test")
    parser.add_argument("--write-anchor", action="store_true", help="Add or replace the entry in eval/anchors.json.")
    args = parser.parse_args()

    dataset = load_dataset(args.dataset, args.split)
    work = args.out / dataset.name
    (work / "collection").mkdir(parents=True, exist_ok=True)
    with (work / "collection" / "docs.jsonl").open("w") as handle:
        for doc in iter_documents(dataset.corpus):
            handle.write(json.dumps({"id": doc.id, "contents": f"{doc.title} {doc.text}".strip()}) + "\n")
    with (work / "topics.tsv").open("w") as handle:
        for qid, text in dataset.queries.items():
            handle.write(f"{qid}\t{' '.join(text.split())}\n")
    index_cmd = pyserini("pyserini.index.lucene", "--collection", "JsonCollection", "--input", str(work / "collection"),
                         "--index", str(work / "index"), "--generator", "DefaultLuceneDocumentGenerator",
                         "--threads", "2", "--storePositions", "--storeDocvectors", "--storeRaw")
    search_cmd = pyserini("pyserini.search.lucene", "--index", str(work / "index"), "--topics", str(work / "topics.tsv"),
                          "--output", str(work / "run.bm25-flat.txt"), "--output-format", "trec", "--hits", "1000",
                          "--bm25", "--threads", "2", "--batch-size", "64")
    for cmd in (index_cmd, search_cmd):
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    run: dict[str, dict[str, float]] = {}
    for line in (work / "run.bm25-flat.txt").read_text().splitlines():
        qid, _, doc, _, score, _ = line.split()
        run.setdefault(qid, {})[doc] = float(score)
    scores = {m: round(mean(v), 4) for m, v in evaluate(run, dataset.qrels, parse_metrics("ndcg@10,recall@100,recall@1000")).items()}
    anchor = {"dataset": dataset.name, "method": "bm25", "model": "BM25 (Pyserini CLI, k1=0.9, b=0.4, title+text)",
              **scores, "source": "computed: python -m eval.pyserini_reference " + shlex.quote(str(args.dataset)),
              "command": " ".join(shlex.quote(c) for c in search_cmd[3:])}
    (work / "anchor.json").write_text(json.dumps(anchor, indent=1))
    if args.write_anchor:
        table = json.loads(ANCHORS.read_text())
        table["anchors"] = [a for a in table["anchors"]
                            if not (a["dataset"] == dataset.name and a["source"].startswith("computed"))] + [anchor]
        ANCHORS.write_text(json.dumps(table, indent=1) + "\n")
    print(json.dumps(anchor, indent=1))


if __name__ == "__main__":
    main()
