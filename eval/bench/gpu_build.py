"""The whole build timed, stage by stage (issue 33 item 5): generated text in, BM25 + SPLADE + dense out.

    python -m eval.bench.gpu_build --source eval/datasets/cranfield --docs 1000000 --work /tmp/gb \\
        --out reports/gpu_build/build_1M.json -- --device cuda --sparse-model M --dense-model M [--faiss Flat]

Generates ``--docs`` documents of text from ``--source`` (``eval.bench.scale --text-only``; timed apart, it is not
part of the build), then runs ``hybrid index build`` on them exactly as a user would (``python -m service.cli``, a
child process, the arguments after ``--`` passed through) and reads the index's manifest: the wall clock of the
whole command (Python start, reading the corpus, the document store, every retriever, the manifest's checksums),
each retriever's ``build_seconds`` / ``encode_seconds`` / ``index_seconds`` and writer stages, and
``build_wall_seconds`` (retrievers overlap on CUDA). While the build runs it samples the GPU's utilization and
memory (``nvidia-smi``, once a second, where there is one) and the host's busy cores (``/proc/stat``), so a stage
that starves the GPU shows. Writes one JSON report; the machine (GPU, driver, cores, torch) goes in it too.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Self

REPO = Path(__file__).resolve().parents[2]


def _cpu_busy() -> tuple[float, float]:
    """Busy and total jiffies of all cores (``/proc/stat``'s first line)."""
    fields = [float(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


class Sampler:
    """Once a second: GPU utilization % and memory MiB (``nvidia-smi``), and host cores busy, into ``samples``."""

    def __init__(self, period: float = 1.0) -> None:
        self.period = period
        self.samples: list[dict[str, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._smi = shutil.which("nvidia-smi")

    def _gpu(self) -> dict[str, float]:
        if not self._smi:
            return {}
        try:
            out = subprocess.run([self._smi, "--query-gpu=utilization.gpu,memory.used", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True, timeout=5, check=False).stdout.splitlines()[0]
            util, mem = (float(x) for x in out.split(","))
            return {"gpu_util": util, "gpu_mem_mib": mem}
        except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
            return {}

    def _run(self) -> None:
        start = time.perf_counter()
        busy0, total0 = _cpu_busy()
        cores = os.cpu_count() or 1
        while not self._stop.wait(self.period):
            busy1, total1 = _cpu_busy()
            sample = {"t": round(time.perf_counter() - start, 1),
                      "cores_busy": round(cores * (busy1 - busy0) / max(total1 - total0, 1.0), 2), **self._gpu()}
            busy0, total0 = busy1, total1
            self.samples.append(sample)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def summary(self) -> dict[str, Any]:
        def mean(key: str) -> float | None:
            values = [s[key] for s in self.samples if key in s]
            return round(sum(values) / len(values), 1) if values else None

        peak = [s["gpu_mem_mib"] for s in self.samples if "gpu_mem_mib" in s]
        return {"mean_gpu_util_pct": mean("gpu_util"), "mean_cores_busy": mean("cores_busy"),
                "peak_gpu_mem_mib": max(peak) if peak else None}


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"cpu_cores": os.cpu_count(), "python": sys.version.split()[0]}
    smi = shutil.which("nvidia-smi")
    if smi:
        out = subprocess.run([smi, "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, check=False).stdout.strip()
        info["gpu"] = out
    try:
        import torch

        info["torch"] = torch.__version__
    except ImportError:
        pass
    meminfo = Path("/proc/meminfo")
    if meminfo.exists():
        info["mem_total_gib"] = round(int(meminfo.read_text().split()[1]) / 2**20, 1)
    return info


def main() -> None:
    argv = sys.argv[1:]
    build_args = argv[argv.index("--") + 1:] if "--" in argv else []
    own = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, required=True, help="A BEIR folder the text is resampled from.")
    parser.add_argument("--docs", type=int, required=True)
    parser.add_argument("--work", type=Path, required=True, help="Scratch folder: the corpus and the index go there.")
    parser.add_argument("--out", type=Path, required=True, help="The JSON report.")
    parser.add_argument("--name", default="gbuild")
    parser.add_argument("--reuse-corpus", action="store_true", help="Keep WORK/corpus if it has --docs documents.")
    parser.add_argument("--timeout", type=float, default=None,
                        help="Stop the build after this many seconds and still write the report (what ran, samples).")
    args = parser.parse_args(own)

    from eval.bench.scale import generate_text
    from indexes.storage.docstore.manifest import Manifest

    corpus = args.work / "corpus"
    done = corpus / "generation.json"
    if args.reuse_corpus and done.exists() and json.loads(done.read_text())["documents"] == args.docs:
        generation = json.loads(done.read_text())
    else:
        generation = generate_text(args.source, args.docs, corpus)
    print(f"corpus: {args.docs} documents in {generation['seconds']} s", flush=True)

    root = args.work / "indexes"
    shutil.rmtree(root, ignore_errors=True)
    command = [sys.executable, "-m", "service.cli", "index", "build", str(corpus), "--name", args.name,
               "--index-root", str(root), "--quiet", *build_args]
    print("build:", " ".join(command), flush=True)
    with Sampler() as sampler:
        started = time.perf_counter()
        try:
            proc = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                  timeout=args.timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            text = exc.output.decode(errors="replace") if isinstance(exc.output, bytes) else (exc.output or "")
            proc = subprocess.CompletedProcess(command, 124, text + f"\nstopped after {args.timeout} s (--timeout)\n")
        wall = time.perf_counter() - started
    print(proc.stdout, flush=True)
    report: dict[str, Any] = {
        "command": " ".join(["python -m eval.bench.gpu_build", *own, "--", *build_args]),
        "build_command": " ".join(command[1:]), "machine": machine(), "generation": generation,
        "returncode": proc.returncode, "build_output": proc.stdout[-4000:], "wall_seconds": round(wall, 1),
        "target_seconds": 600, "utilization": sampler.summary(), "samples": sampler.samples}
    if proc.returncode == 0:
        manifest = Manifest.read(root / args.name)
        report.update({
            "documents": manifest.doc_count, "docs_per_s": round(manifest.doc_count / wall, 1),
            "build_wall_seconds": manifest.build_wall_seconds,
            "retrievers": {name: {"kind": r.kind, "model": r.model_id, "build_seconds": r.build_seconds,
                                  "encode_seconds": r.encode_seconds, "index_seconds": r.index_seconds,
                                  "size_mib": round(r.size_bytes / 2**20, 1), "stages": r.stages,
                                  "parameters": r.parameters}
                           for name, r in manifest.retrievers.items()},
            "docstore_mib": round(manifest.docstore_bytes / 2**20, 1),
            "outside_retrievers_seconds": round(wall - (manifest.build_wall_seconds or
                                                        sum(r.build_seconds for r in manifest.retrievers.values())), 1),
            "target_met": wall <= 600})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(json.dumps({k: report.get(k) for k in ("wall_seconds", "docs_per_s", "build_wall_seconds", "target_met",
                                                 "utilization", "machine")}, indent=1))
    sys.exit(proc.returncode)


if __name__ == "__main__":
    main()
