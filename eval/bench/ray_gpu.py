"""Distributed encoding on the GPUs of one host (issue 17): the Ray build's encode step with 1, 2, ... encoder actors.

    python3 -m eval.bench.ray_gpu --corpus eval/datasets/cranfield --docs 200000 \\
        --dense-model DENSE_DIR --sparse-model SPLADE_DIR --workers 1,2 --out $OUT/ray_gpu.json

Runs :func:`indexes.indexing.ray_build.encode_on_ray` (what ``hybrid index build --ray local --device cuda``
runs: a Ray Data actor pool over 16,384-document chunks, each actor on the GPU pipeline of issue 12, vectors
written per chunk and joined into one vectors folder) on ``--docs`` documents resampled from the corpus, once per
model and per actor count. With at least as many GPUs as actors each actor owns a GPU; with fewer, the actors
share them (Ray's fractional GPUs), which exercises the code path but cannot scale. Documents per second cover
the whole encode step (reading the corpus into the build's store, actors' start and model loads, encoding,
joining), as a build pays it; scaling efficiency is rate(N) / (N x rate(1)). Speed does not depend on the
weights: random-weight copies of the architectures are fine. Never runs in CI (needs CUDA and Ray).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import time
from pathlib import Path
from typing import Any


def resample(corpus: Path, docs: int, target: Path, seed: int = 0) -> Path:
    """``docs`` documents drawn with replacement from ``corpus`` (BEIR folder or jsonl[.gz]), each with a new id."""
    from indexes.storage.docstore.corpus import read_jsonl_objects, resolve_corpus_file

    rows = [row for _, row in read_jsonl_objects(resolve_corpus_file(corpus)) if str(row.get("text", "")).strip()]
    rng = random.Random(seed)
    with target.open("w", encoding="utf-8") as handle:
        for i in range(docs):
            row = rng.choice(rows)
            handle.write(json.dumps({"_id": f"d{i}", "title": row.get("title", ""), "text": row["text"]}) + "\n")
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", required=True)
    parser.add_argument("--docs", type=int, default=200000)
    parser.add_argument("--dense-model", required=True)
    parser.add_argument("--sparse-model", required=True)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--work", default="/tmp/ray_gpu")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    import ray
    import torch

    from indexes.indexing.ray_build import encode_on_ray
    from retrieval.core.options import BuildOptions
    from retrieval.core.types import RetrieverSpec

    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    corpus = resample(Path(args.corpus), args.docs, work / "corpus.jsonl")
    gpus = torch.cuda.device_count()
    ray.init(num_gpus=gpus, include_dashboard=False, configure_logging=False, log_to_driver=False)
    runs: dict[str, Any] = {}
    for kind in ("dense", "splade"):
        rates = {}
        for workers in [int(w) for w in args.workers.split(",")]:
            options = BuildOptions(retrievers=(RetrieverSpec(kind, kind),), device="cuda", progress=False,
                                   dense_model=args.dense_model, sparse_model=args.sparse_model, ray="local",
                                   ray_workers=workers)
            out = work / f"vectors-{kind}-{workers}"
            started = time.perf_counter()
            manifest = encode_on_ray(corpus, out, options)
            seconds = time.perf_counter() - started
            assert manifest.documents == args.docs
            rates[workers] = args.docs / seconds
            runs[f"{kind}/{workers}"] = {"actors": workers, "gpus": gpus, "gpu_per_actor": min(1.0, gpus / workers),
                                         "seconds": round(seconds, 2), "docs_per_s": round(rates[workers], 1),
                                         "efficiency": round(rates[workers] / (workers * rates[min(rates)]), 3)}
            print(f"{kind}: {workers} actor(s) on {gpus} GPU(s): {seconds:.1f} s, {rates[workers]:,.0f} docs/s", flush=True)
            shutil.rmtree(out, ignore_errors=True)
    report = {"command": " ".join(["python3 -m eval.bench.ray_gpu", *sys.argv[1:]]), "docs": args.docs,
              "gpus": [torch.cuda.get_device_name(i) for i in range(gpus)], "cpus": os.cpu_count(),
              "ray": ray.__version__, "torch": torch.__version__, "runs": runs}
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
