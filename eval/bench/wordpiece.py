"""The compiled WordPiece tokenizer against Hugging Face's ``tokenizers``, one thread each, on Cranfield.

    python -m eval.bench.wordpiece --out reports/bench/wordpiece_cpu.json

Every Cranfield document (title + text), repeated ``--repeat`` times, tokenized as the GPU pipeline tokenizes it
(truncation at each built-in model's ``max_seq_length``): ``tokenizers``' ``encode_batch_fast`` with its own threads
off (``TOKENIZERS_PARALLELISM=false``) against ``WordPiece.tokenize`` (one thread), best of three passes each, and
how many documents got different ids (must be 0). Also single texts (queries), p50 over Cranfield's queries, and
the seconds ``WordPiece.from_json`` takes (parsing the tokenizer, building its vocabulary table). Prints
a table and writes a JSON report.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

CRANFIELD = Path(__file__).resolve().parents[1] / "datasets" / "cranfield"


def _texts() -> tuple[list[str], list[str]]:
    with gzip.open(CRANFIELD / "corpus.jsonl.gz", "rt", encoding="utf-8") as handle:
        docs = [json.loads(line) for line in handle]
    with gzip.open(CRANFIELD / "queries.jsonl.gz", "rt", encoding="utf-8") as handle:
        queries = [json.loads(line)["text"] for line in handle]
    return [f"{d.get('title', '')} {d['text']}".strip() for d in docs], queries


def _best(fn: Any, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def run(repeat: int) -> dict[str, Any]:
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    from tokenizers import Tokenizer

    from retrieval.encoders.models import resolve_model
    from retrieval.encoders.wordpiece import WordPiece

    docs, queries = _texts()
    texts = docs * repeat
    report: dict[str, Any] = {"documents": len(texts), "queries": len(queries), "cpus": os.cpu_count()}
    for model, max_length in (("all-MiniLM-L6-v2", 256), ("splade-tiny", 512)):
        spec = (resolve_model(model).path / "tokenizer.json").read_text(encoding="utf-8")
        library = Tokenizer.from_str(spec)
        library.no_padding()
        library.enable_truncation(max_length=max_length)
        started = time.perf_counter()  # the first model's includes loading the table builder's compiled code
        compiled = WordPiece.from_json(spec, max_length)
        table_s = time.perf_counter() - started
        assert compiled is not None
        compiled.warm()
        want = [e.ids for e in library.encode_batch_fast(texts)]
        ids, lengths = compiled.tokenize(texts)
        ends = np.cumsum(lengths)
        differ = sum(ids[e - n:e].tolist() != w for e, n, w in zip(ends, lengths, want))
        library_s = _best(lambda: library.encode_batch_fast(texts))
        compiled_s = _best(lambda: compiled.tokenize(texts))
        single_library = statistics.median(_each(lambda q: library.encode(q).ids, queries))
        single_compiled = statistics.median(_each(lambda q: compiled.tokenize([q]), queries))
        row = {"max_length": max_length, "table_build_s": table_s, "documents_with_other_ids": differ,
               "tokenizers_docs_per_s": len(texts) / library_s, "compiled_docs_per_s": len(texts) / compiled_s,
               "speedup": library_s / compiled_s, "query_us_p50_tokenizers": single_library * 1e6,
               "query_us_p50_compiled": single_compiled * 1e6, "fallback_texts": compiled.fallback_texts}
        report[model] = row
        print(f"{model:18} tokenizers {row['tokenizers_docs_per_s']:9,.0f} docs/s   compiled "
              f"{row['compiled_docs_per_s']:9,.0f} docs/s   x{row['speedup']:.1f}   query p50 "
              f"{row['query_us_p50_tokenizers']:.1f} / {row['query_us_p50_compiled']:.1f} us   other ids {differ}")
    return report


def _each(fn: Any, items: list[str]) -> list[float]:
    for item in items[:20]:
        fn(item)
    times = []
    for item in items:
        started = time.perf_counter()
        fn(item)
        times.append(time.perf_counter() - started)
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=10, help="passes over Cranfield's 1,400 documents")
    parser.add_argument("--out", type=Path, default=Path("reports/bench/wordpiece_cpu.json"))
    args = parser.parse_args(argv)
    report = run(args.repeat)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
