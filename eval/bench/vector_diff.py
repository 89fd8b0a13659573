"""Dense vectors from elsewhere (``hybrid encode`` on a GPU, say) against the ones an index holds, document by document.

    python -m eval.bench.vector_diff --index data/indexes/beir-cranfield --vectors VEC [--retriever dense]

Prints and returns, as JSON, the per-document cosine between the vectors folder's row and the index's stored
vector (FAISS ``reconstruct``: exact for flat and HNSW indexes): minimum, mean and the share at or above 0.999,
the issue-12 bar for GPU encoding.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from indexes.storage.docstore.store import DocStore
from indexes.storage.faiss.backend import FaissIndex
from indexes.storage.vectors.files import DenseVectors, VectorsManifest


def compare(index: Path, vectors: Path, retriever: str = "dense") -> dict[str, Any]:
    store = DocStore.open(index)
    try:
        ids = store.live_ids()
    finally:
        store.close()
    found = VectorsManifest.read(vectors).sets[retriever]
    theirs = DenseVectors(vectors / found.files[0], ids, int(found.parameters["dimension"])).rows(ids)
    ours = FaissIndex(index / retriever).reconstruct(np.arange(len(ids), dtype=np.int64))
    cosine = (theirs * ours).sum(1) / np.linalg.norm(theirs, axis=1) / np.linalg.norm(ours, axis=1)
    return {"docs": len(ids), "cosine_min": float(cosine.min()), "cosine_mean": float(cosine.mean()),
            "share_at_least_0.999": float((cosine >= 0.999).mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--index", type=Path, required=True, help="An index folder (or a published index's link).")
    parser.add_argument("--vectors", type=Path, required=True, help="A vectors folder of 'hybrid encode'.")
    parser.add_argument("--retriever", default="dense")
    args = parser.parse_args()
    print(json.dumps(compare(args.index.resolve(), args.vectors, args.retriever), indent=1))


if __name__ == "__main__":
    main()
