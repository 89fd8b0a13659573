"""Regenerate ``eval/anchors.json`` from the BEIR 2CR table that ships inside Pyserini.

    python -m eval.make_anchors            # reads pyserini/2cr/beir.yaml of the installed pyserini

Anchors are published nDCG@10 (and R@100, R@1000) numbers; ``method`` says which of our methods a
row is comparable with (``bm25`` for BM25 flat; SPLADE++ ED and bge-base are stronger models than our
defaults and are listed for context, comparable only when the same model is indexed).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
from pathlib import Path

import yaml

CONDITIONS = {
    "bm25-flat": {"method": "bm25", "model": "BM25 (Anserini, k1=0.9, b=0.4, title+text in one field)"},
    "splade-pp-ed": {"method": "splade", "model": "naver/splade-cocondenser-ensembledistil"},
    "bge-base-en-v1.5.faiss": {"method": "dense", "model": "BAAI/bge-base-en-v1.5"},
}
OUT = Path(__file__).resolve().parent / "anchors.json"


def main() -> None:
    spec = importlib.util.find_spec("pyserini")
    assert spec and spec.origin
    table = yaml.safe_load((Path(spec.origin).parent / "2cr" / "beir.yaml").read_text())
    version = importlib.metadata.version("pyserini")
    anchors = []
    for condition in table["conditions"]:
        info = CONDITIONS.get(condition["name"])
        if not info:
            continue
        for entry in condition["datasets"]:
            scores = entry["scores"][0]
            anchors.append({
                "dataset": entry["dataset"], "method": info["method"], "model": info["model"],
                "ndcg@10": scores["nDCG@10"], "recall@100": scores.get("R@100"), "recall@1000": scores.get("R@1000"),
                "source": f"pyserini=={version} pyserini/2cr/beir.yaml, condition {condition['name']}",
                "command": condition["command"],
            })
    if OUT.exists():  # keep the reference numbers computed here (eval/pyserini_reference.py)
        anchors += [a for a in json.loads(OUT.read_text())["anchors"] if a["source"].startswith("computed")]
    OUT.write_text(json.dumps({"anchors": anchors}, indent=1) + "\n")
    print(f"wrote {len(anchors)} anchors to {OUT}")


if __name__ == "__main__":
    main()
