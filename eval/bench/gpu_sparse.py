"""Exact SPLADE top-10 on the GPU as sparse-matrix products (issue 37 item 4), at 1M and 8.8M generated rows.

    # here (CPU): real document rows and real query vectors, small enough to carry
    python -m eval.bench.gpu_sparse sample --vectors data/scale/100k/vectors --queries eval/datasets/cranfield \\
        --rows 20000 --out .gpucode/sparse_sample.npz
    # on the GPU machine
    python3 -m eval.bench.gpu_sparse run --sample sparse_sample.npz --rows 1000000 8800000 --out $OUT/gpu_sparse.json

Rows: ``--rows`` documents resampled (seeded) from the sample's real SPLADE-tiny rows of the 100k scale corpus
(impacts as indexed, scale 100), each term dropped with probability 0.1, as ``eval.bench.scale`` resamples: the
nnz per row (about 400) and the terms' document frequencies stay the real corpus's. Queries: the source's
queries encoded by SPLADE-tiny here (every term kept, scale 100).

Two exact layouts, both in shards of at most ``--shard-rows`` rows (int32 offsets; top-10 merged over shards):

* *doc-major*: the rows as an N x V CSR (torch ``sparse_csr``, fp32 values) times the queries as a dense V x B
  matrix (cuSPARSE SpMM), then ``topk``. It reads the whole matrix for any batch: bound = CSR bytes (offsets,
  column indices, values) + scores written and read, over the copy bandwidth measured in the same run.
* *term-major*: the same impacts as a V x N CSR (an inverted index): each query reads only its terms' postings,
  gathered and scattered into a dense score row with ``index_add_``, then ``topk``. Bound = postings bytes read +
  score rows zeroed, updated and read by ``topk``.

Every variant is checked against a float64 scipy product on the CPU for a few queries (top-10 scores equal to
1e-4 relative). Timings: CUDA events, median of repeats, batch 1 rotating over the queries, and batches of 32.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

DROP_TERM = 0.1
K = 10
DEVICE = "cuda"  # "cpu" only for a smoke test of the code here (--device cpu): timings there mean nothing


def sample(vectors: Path, queries: Path, rows: int, out: Path) -> dict[str, Any]:
    """The first ``rows`` SPLADE rows of a ``hybrid encode`` folder and the queries' SPLADE vectors, as term ids."""
    import orjson

    from indexes.storage.docstore.corpus import read_jsonl_objects
    from retrieval.core.settings import DEFAULT_SPARSE_MODEL
    from retrieval.encoders.models import resolve_model
    from retrieval.encoders.sparse import Quantization, SpladeEncoder

    encoder = SpladeEncoder(resolve_model(DEFAULT_SPARSE_MODEL), device="cpu")
    vocab = {term: i for i, term in enumerate(encoder._vocab.tolist())}
    indptr, indices, values = [0], [], []
    with (vectors / "splade.jsonl").open("rb") as handle:
        for line in handle:
            vector = orjson.loads(line)["vector"]
            indices.extend(vocab[t] for t in vector)
            values.extend(vector.values())
            indptr.append(len(indices))
            if len(indptr) > rows:
                break
    query_file = queries / "queries.jsonl"
    texts = [obj["text"] for _, obj in read_jsonl_objects(query_file if query_file.exists()
                                                           else queries / "queries.jsonl.gz")]
    q_indptr, q_indices, q_values = [0], [], []
    for vector in encoder.encode_queries(texts, Quantization(scale=100.0)):
        q_indices.extend(vocab[t] for t in vector)
        q_values.extend(vector.values())
        q_indptr.append(len(q_indices))
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, indptr=np.array(indptr, np.int64), indices=np.array(indices, np.int16),
                        values=np.array(values, np.uint16), q_indptr=np.array(q_indptr, np.int64),
                        q_indices=np.array(q_indices, np.int16), q_values=np.array(q_values, np.uint16),
                        vocab_size=np.array(len(vocab)))
    info = {"rows": len(indptr) - 1, "nnz_per_row": len(indices) / (len(indptr) - 1), "queries": len(texts),
            "nnz_per_query": len(q_indices) / len(texts), "vocab": len(vocab)}
    print(json.dumps(info))
    return info


class Shard:
    """``rows`` resampled documents in both layouts on the GPU (int32 offsets, fp32 impacts)."""

    def __init__(self, doc_csr: Any, term_csr: Any | None, offset: int) -> None:
        self.doc = doc_csr
        self.term = term_csr
        self.offset = offset
        self.rows = doc_csr.shape[0]

    def doc_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in
                   (self.doc.crow_indices(), self.doc.col_indices(), self.doc.values()))


def make_rows(src: dict[str, Any], rows: int, seed: int, chunk: int = 500_000) -> tuple[Any, Any, Any]:
    """CSR parts (int64 crow, int32 cols, fp32 values) of ``rows`` resampled rows, built chunk by chunk on the GPU."""
    import torch

    gen = torch.Generator(device=DEVICE).manual_seed(seed)
    s_ptr, s_idx, s_val = src["indptr"], src["indices"], src["values"]
    lengths = s_ptr[1:] - s_ptr[:-1]
    crows, cols, vals = [], [], []
    for start in range(0, rows, chunk):
        n = min(chunk, rows - start)
        t = torch.randint(0, lengths.numel(), (n,), device=DEVICE, generator=gen)
        lens = lengths[t]
        total = int(lens.sum())
        starts = s_ptr[t]
        row_of = torch.repeat_interleave(torch.arange(n, device=DEVICE), lens, output_size=total)
        first = torch.cumsum(lens, 0) - lens
        pos = torch.arange(total, device=DEVICE) - first[row_of] + starts[row_of]
        keep = torch.rand(total, device=DEVICE, generator=gen) >= DROP_TERM
        row_of, pos = row_of[keep], pos[keep]
        counts = torch.bincount(row_of, minlength=n)
        crows.append(counts)
        cols.append(s_idx[pos].to(torch.int32))
        vals.append(s_val[pos].to(torch.float32))
        del t, lens, starts, row_of, first, pos, keep
    counts = torch.cat(crows)
    crow = torch.zeros(rows + 1, dtype=torch.int64, device=DEVICE)
    crow[1:] = torch.cumsum(counts, 0)
    return crow, torch.cat(cols), torch.cat(vals)


def build_shards(src: dict[str, Any], rows: int, shard_rows: int, vocab: int, term_major: bool,
                 seed: int) -> list[Shard]:
    import torch

    shards = []
    for k, start in enumerate(range(0, rows, shard_rows)):
        n = min(shard_rows, rows - start)
        crow, col, val = make_rows(src, n, seed + k)
        doc = torch.sparse_csr_tensor(crow.to(torch.int32), col, val, size=(n, vocab))
        term = None
        if term_major:
            order = torch.sort(col.to(torch.int64) * n + torch.repeat_interleave(
                torch.arange(n, device=DEVICE), crow[1:] - crow[:-1], output_size=col.numel()))
            keys = order.values
            t_crow = torch.zeros(vocab + 1, dtype=torch.int64, device=DEVICE)
            t_crow[1:] = torch.cumsum(torch.bincount(keys // n, minlength=vocab), 0)
            term = (t_crow, (keys % n).to(torch.int32), val[order.indices])
            del order, keys
        shards.append(Shard(doc, term, start))
        del crow
        if DEVICE == "cuda":
            torch.cuda.empty_cache()
    return shards


def queries_dense(src: dict[str, Any], which: list[int], vocab: int) -> Any:
    import torch

    q = torch.zeros(vocab, len(which), device=DEVICE)
    for j, i in enumerate(which):
        a, b = int(src["q_indptr"][i]), int(src["q_indptr"][i + 1])
        q[src["q_indices"][a:b].long(), j] = src["q_values"][a:b].float()
    return q


def search_doc_major(shards: list[Shard], q: Any) -> tuple[Any, Any]:
    """Top-10 per query column of ``q`` (V x B): SpMM per shard, top-k per shard, merged."""
    import torch

    scores_all, ids_all = [], []
    for shard in shards:
        scores = torch.sparse.mm(shard.doc, q)  # rows x B
        top = torch.topk(scores, K, dim=0)
        scores_all.append(top.values)
        ids_all.append(top.indices + shard.offset)
    scores, ids = torch.cat(scores_all), torch.cat(ids_all)
    top = torch.topk(scores, K, dim=0)
    return top.values, torch.gather(ids, 0, top.indices)


def search_term_major(shards: list[Shard], src: dict[str, Any], which: list[int]) -> tuple[Any, Any]:
    """Top-10 per query: each query's postings gathered, scattered into a score row per query, top-k, merged."""
    import torch

    b = len(which)
    terms, weights, owner = [], [], []
    for j, i in enumerate(which):
        a, e = int(src["q_indptr"][i]), int(src["q_indptr"][i + 1])
        terms.append(src["q_indices"][a:e].long())
        weights.append(src["q_values"][a:e].float())
        owner.append(torch.full((e - a,), j, device=DEVICE, dtype=torch.int64))
    t, w, o = torch.cat(terms), torch.cat(weights), torch.cat(owner)
    scores_all, ids_all = [], []
    for shard in shards:
        crow, col, val = shard.term
        starts, lens = crow[t], crow[t + 1] - crow[t]
        total = int(lens.sum())
        seg = torch.repeat_interleave(torch.arange(t.numel(), device=DEVICE), lens, output_size=total)
        pos = torch.arange(total, device=DEVICE) - (torch.cumsum(lens, 0) - lens)[seg] + starts[seg]
        scores = torch.zeros(b * shard.rows, device=DEVICE)
        scores.index_add_(0, o[seg] * shard.rows + col[pos].long(), val[pos] * w[seg])
        top = torch.topk(scores.view(b, shard.rows), K, dim=1)
        scores_all.append(top.values)
        ids_all.append(top.indices + shard.offset)
    scores, ids = torch.cat(scores_all, 1), torch.cat(ids_all, 1)
    top = torch.topk(scores, K, dim=1)
    return top.values.T, torch.gather(ids, 1, top.indices).T


def postings_bytes(shards: list[Shard], src: dict[str, Any], which: list[int]) -> int:
    """Bytes the term-major search must move: postings (int32 doc + fp32 impact) and the score rows (zero, update
    is at most the postings, top-k read)."""
    total = 0
    for shard in shards:
        crow = shard.term[0]
        for i in which:
            a, e = int(src["q_indptr"][i]), int(src["q_indptr"][i + 1])
            t = src["q_indices"][a:e].long()
            total += int((crow[t + 1] - crow[t]).sum()) * 8
        total += 2 * 4 * shard.rows * len(which)
    return total


def reference(shards: list[Shard], src: dict[str, Any], which: list[int], vocab: int) -> np.ndarray:
    """Float64 top-10 scores (K x len(which)) of the queries ``which`` by scipy on the CPU."""
    import scipy.sparse as sp

    q = np.zeros((vocab, len(which)))
    for j, i in enumerate(which):
        a, e = int(src["q_indptr"][i]), int(src["q_indptr"][i + 1])
        q[src["q_indices"][a:e].cpu().numpy(), j] = src["q_values"][a:e].cpu().numpy()
    best = []
    for shard in shards:
        m = sp.csr_matrix((shard.doc.values().cpu().numpy().astype(np.float64), shard.doc.col_indices().cpu().numpy(),
                           shard.doc.crow_indices().cpu().numpy()), shape=(shard.rows, vocab))
        best.append(np.sort(m @ q, axis=0)[-K:])
        del m
    return np.sort(np.concatenate(best), axis=0)[::-1][:K]


def timed(fn: Any, repeat: int, warmup: int = 3) -> list[float]:
    import torch

    for _ in range(warmup):
        fn()
    out = []
    if DEVICE == "cpu":
        for _ in range(repeat):
            begin = time.perf_counter()
            fn()
            out.append((time.perf_counter() - begin) * 1e3)
        return out
    for _ in range(repeat):
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        out.append(begin.elapsed_time(end))
    return out


def copy_bandwidth() -> float:
    """Device-to-device copy, bytes read + written per second (median of 10), of a 4 GiB random buffer."""
    import torch

    a = torch.rand(2**30 if DEVICE == "cuda" else 2**24, device=DEVICE)
    b = torch.empty_like(a)
    a_numel = a.numel()
    ms = float(np.median(timed(lambda: b.copy_(a), 10)))
    return 2 * 4 * a_numel / (ms / 1e3)


def run(sample_file: Path, sizes: list[int], shard_rows: int, batch: int, repeat: int, term_major: bool,
        out: Path) -> dict[str, Any]:
    import torch

    raw = np.load(sample_file)
    vocab = int(raw["vocab_size"])
    src = {k: torch.from_numpy(raw[k].astype(np.int64 if k.endswith("indptr") else np.int32)).to(DEVICE)
           for k in ("indptr", "indices", "values", "q_indptr", "q_indices", "q_values")}
    nq = src["q_indptr"].numel() - 1
    bandwidth = copy_bandwidth()
    report: dict[str, Any] = {"gpu": torch.cuda.get_device_name() if DEVICE == "cuda" else "cpu", "torch": torch.__version__,
                              "copy_bandwidth_gbs": round(bandwidth / 1e9, 1), "shard_rows": shard_rows,
                              "queries": nq, "batch": batch, "sizes": []}
    print(f"{report['gpu']}: copy bandwidth {bandwidth / 1e9:.0f} GB/s", flush=True)
    for rows in sizes:
        started = time.perf_counter()
        shards = build_shards(src, rows, shard_rows, vocab, term_major, seed=13)
        if DEVICE == "cuda":
            torch.cuda.synchronize()
        nnz = sum(s.doc.values().numel() for s in shards)
        entry: dict[str, Any] = {"rows": rows, "nnz": nnz, "nnz_per_row": round(nnz / rows, 1),
                                 "shards": len(shards), "build_s": round(time.perf_counter() - started, 1),
                                 "gpu_mem_gib": round(torch.cuda.memory_allocated() / 2**30, 1) if DEVICE == "cuda" else None}
        check = [0, 1, 2]
        ref = reference(shards, src, check, vocab)
        variants: dict[str, Any] = {"doc_major": lambda w, s=shards: search_doc_major(s, queries_dense(src, w, vocab))}
        if term_major:
            variants["term_major"] = lambda w, s=shards: search_term_major(s, src, w)
        doc_bytes = sum(s.doc_bytes() for s in shards)
        for name, fn in variants.items():
            got = fn(check)[0].double().cpu().numpy()
            err = float(np.max(np.abs(got - ref) / np.abs(ref).max(axis=0)))
            res: dict[str, Any] = {"max_rel_err_top10": err, "correct": err < 1e-4}
            for b in (1, batch):
                groups = [[(g * b + j) % nq for j in range(b)] for g in range(max(1, nq // b))]
                cursor = iter(range(10**9))
                ms = timed(lambda f=fn, g=groups, c=cursor: f(g[next(c) % len(g)]), repeat)
                p50 = float(np.median(ms))
                moved = (doc_bytes + 2 * 4 * rows * b if name == "doc_major"
                         else int(np.mean([postings_bytes(shards, src, g) for g in groups[:8]])))
                bound_ms = moved / bandwidth * 1e3
                res[f"batch{b}"] = {"p50_ms": round(p50, 3), "p90_ms": round(float(np.percentile(ms, 90)), 3),
                                    "queries_per_s": round(b / (p50 / 1e3), 1), "bytes": moved,
                                    "bound_ms": round(bound_ms, 3), "fraction_of_bound": round(bound_ms / p50, 3)}
            entry[name] = res
            print(f"{rows:>9} {name:<11} err {err:.1e}  b1 p50 {res['batch1']['p50_ms']:.3f} ms "
                  f"(bound {res['batch1']['bound_ms']:.3f}, {res['batch1']['fraction_of_bound']:.2f})  "
                  f"b{batch} {res[f'batch{batch}']['queries_per_s']:.0f} q/s "
                  f"({res[f'batch{batch}']['fraction_of_bound']:.2f} of bound)", flush=True)
        entry["doc_major_bytes"] = doc_bytes
        report["sizes"].append(entry)
        shards, variants = [], {}  # free the GPU memory before the next size
        if DEVICE == "cuda":
            torch.cuda.empty_cache()
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=1))
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("sample", help="Real rows and query vectors into one .npz (here, on the CPU).")
    s.add_argument("--vectors", type=Path, required=True)
    s.add_argument("--queries", type=Path, required=True, help="A BEIR folder with queries.jsonl[.gz].")
    s.add_argument("--rows", type=int, default=20000)
    s.add_argument("--out", type=Path, required=True)
    r = sub.add_parser("run", help="The benchmark, on the GPU.")
    r.add_argument("--sample", type=Path, required=True)
    r.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 8_800_000])
    r.add_argument("--shard-rows", type=int, default=1_000_000)
    r.add_argument("--batch", type=int, default=32)
    r.add_argument("--repeat", type=int, default=30)
    r.add_argument("--no-term-major", action="store_true")
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--device", choices=["cuda", "cpu"], default="cuda", help="cpu: a smoke test of the code only.")
    args = parser.parse_args()
    if args.command == "sample":
        sample(args.vectors, args.queries, args.rows, args.out)
    else:
        global DEVICE
        DEVICE = args.device
        run(args.sample, args.rows, args.shard_rows, args.batch, args.repeat, not args.no_term_major, args.out)


if __name__ == "__main__":
    main()
