#!/usr/bin/env python3
"""Every pin we ship must exist on the package index and resolve to wheels on each supported Python.

Two checks, both against the real index (not this machine's local mirrors):

1. Each exact pin (``name==version``) in pyproject.toml and in docker/Dockerfile* exists on the index.
2. For each supported Python (3.11-3.13, manylinux x86_64) the full dependency set resolves with
   ``pip install --dry-run --only-binary=:all:``: the CPU set (core + cpu + test + bench extras + the
   CPU image's pins) and the GPU set (core + gpu extra + the GPU image's pins). Versions run in parallel.

pyserini ships only an sdist; ``--only-binary`` cannot take it, so its declared metadata (PKG-INFO,
static Requires-Dist) is read from the sdist and stood in for by a metadata-only wheel, which lets the
resolver check pyserini's own dependencies for each Python too. ``fast-deps`` reads each wheel's metadata
with HTTP range requests instead of downloading it (torch alone is 0.5 GB per Python); older pips do
that with many tiny requests (minutes per set), so a pip >= 25 is used, from a cached venv if need be.

A failure prints one line per problem naming the package, and exits 1. Usage: .ci/check_pins.py [--python 3.12]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
import urllib.request
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

try:
    from packaging.markers import Marker
    from packaging.version import InvalidVersion, Version
except ImportError:  # a bare interpreter: pip vendors the same modules
    from pip._vendor.packaging.markers import Marker
    from pip._vendor.packaging.version import InvalidVersion, Version

REPO = Path(__file__).resolve().parent.parent
INDEX = "https://pypi.org/simple"
PYTHONS = ("3.11", "3.12", "3.13")
# glibc 2.35 (Ubuntu 22.04, the GPU base) is the oldest base we ship; bookworm has 2.36.
PLATFORMS = ["manylinux2014_x86_64"] + [f"manylinux_2_{n}_x86_64" for n in range(17, 36)]
CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "hybrid-retrieval" / "check_pins"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==([A-Za-z0-9.+!_-]+)$")


@dataclass(frozen=True)
class Requirement:
    text: str  # as pip takes it, marker included
    source: str  # where it is written: "pyproject.toml [gpu]", "docker/Dockerfile"

    @property
    def pin(self) -> tuple[str, str] | None:
        match = PIN.match(self.text.split(";", 1)[0].strip())
        return (normalize(match.group(1)), match.group(2)) if match else None


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pyproject_requirements(path: Path) -> dict[str, list[Requirement]]:
    """``core`` and each extra of pyproject.toml."""
    project = tomllib.loads(path.read_text())["project"]
    groups = {"core": [Requirement(r, "pyproject.toml dependencies") for r in project["dependencies"]]}
    for extra, reqs in project.get("optional-dependencies", {}).items():
        groups[extra] = [Requirement(r, f"pyproject.toml [{extra}]") for r in reqs]
    return groups


def dockerfile_pins(path: Path) -> list[Requirement]:
    """``name==version`` arguments of ``pip install`` lines (continuations joined) of one Dockerfile."""
    text = re.sub(r"\\\n", " ", path.read_text())
    reqs: list[Requirement] = []
    for line in text.splitlines():
        for command in re.split(r"&&|;", line):
            words = command.split()
            if "pip" not in words or "install" not in words:
                continue
            for word in words[words.index("install") + 1:]:
                word = word.strip("'\"")
                if PIN.match(word):
                    reqs.append(Requirement(word, f"docker/{path.name}"))
    return reqs


def dockerfile_extras(path: Path) -> list[str]:
    """The extras a Dockerfile installs the project with (``pip install ... '.[gpu]'``)."""
    return sorted({e.strip() for m in re.finditer(r"\.\[([a-z0-9_,-]+)\]", path.read_text()) for e in m[1].split(",")})


def sets(repo: Path) -> dict[str, list[Requirement]]:
    """The requirement sets that must resolve: what the CPU side (CI, CPU image) and the GPU image install."""
    groups = pyproject_requirements(repo / "pyproject.toml")
    cpu = groups["core"] + groups["cpu"] + groups["test"] + groups["bench"] + dockerfile_pins(repo / "docker/Dockerfile")
    gpu = groups["core"] + groups["gpu"] + dockerfile_pins(repo / "docker/Dockerfile.gpu")
    return {"cpu": cpu, "gpu": gpu}


def index_files(name: str) -> list[dict]:
    request = urllib.request.Request(f"{INDEX}/{name}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.load(response)["files"]
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return []
        raise


def file_version(name: str, filename: str) -> str | None:
    stem = re.sub(r"(\.tar\.gz|\.zip|\.whl)$", "", filename)
    prefix = re.sub(r"[-_.]+", "[-_.]", re.escape(name).replace("\\-", "-"))
    match = re.match(rf"(?i){prefix}-([^-]+)", stem)
    return match.group(1) if match else None


def _order(version: str) -> tuple[int, Version | str]:
    try:
        return (1, Version(version))
    except InvalidVersion:
        return (0, version)


def missing_pins(reqs: list[Requirement]) -> tuple[list[str], dict[str, list[dict]]]:
    """One line per exact pin the index does not have; and the index files of each pinned package."""
    pins = {r.pin: r for r in reqs if r.pin}
    names = sorted({name for name, _ in pins})
    with ThreadPoolExecutor(8) as pool:
        files = dict(zip(names, pool.map(index_files, names)))
    problems = []
    for (name, version), req in sorted(pins.items()):
        versions = {file_version(name, f["filename"]) for f in files[name] if not f.get("yanked")}
        if version not in versions:
            known = sorted((v for v in versions if v), key=_order)
            hint = f" (newest there: {', '.join(known[-3:])})" if known else " (no such package on the index)"
            problems.append(f"missing pin: {name}=={version} from {req.source} is not on {INDEX}{hint}")
    return problems, files


def sdist_stub(name: str, version: str, files: list[dict], out: Path) -> bool:
    """For a pin with no wheel at all: a metadata-only wheel from the sdist's PKG-INFO; False if it has wheels."""
    mine = [f for f in files if file_version(name, f["filename"]) == version]
    if any(f["filename"].endswith(".whl") for f in mine):
        return False
    sdist = next(f for f in mine if f["filename"].endswith(".tar.gz"))
    cached = CACHE / sdist["filename"]
    if not cached.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        urllib.request.urlretrieve(sdist["url"], cached.with_suffix(".part"))
        cached.with_suffix(".part").rename(cached)
    with tarfile.open(cached) as tar:
        member = next(m for m in tar if m.name.count("/") == 1 and m.name.endswith("/PKG-INFO"))
        pkg_info = tar.extractfile(member).read().decode()  # type: ignore[union-attr]
    metadata = pkg_info.split("\n\n", 1)[0] + "\n"
    dist = f"{name.replace('-', '_')}-{version}"
    wheel = out / f"{dist}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(f"{dist}.dist-info/METADATA", metadata)
        zf.writestr(f"{dist}.dist-info/WHEEL", "Wheel-Version: 1.0\nGenerator: check_pins\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr(f"{dist}.dist-info/RECORD", "")
    return True


def for_python(reqs: list[Requirement], python: str) -> list[Requirement]:
    """The requirements whose markers hold on ``python`` (linux x86_64), markers removed.

    pip evaluates markers against the interpreter running it, not ``--python-version``, so our own
    markers are applied here; those of dependencies are pip's, evaluated as for the running Python.
    """
    env = {"python_version": python, "python_full_version": f"{python}.0", "sys_platform": "linux",
           "platform_system": "Linux", "platform_machine": "x86_64", "implementation_name": "cpython"}
    kept = []
    for req in reqs:
        text, _, marker = req.text.partition(";")
        if not marker.strip() or Marker(marker.strip()).evaluate(env):
            kept.append(Requirement(text.strip(), req.source))
    return kept


def clean_env() -> dict[str, str]:
    """This machine's pip settings (mirrors, caps, find-links) must not stand in for the index; its CA stays."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") or k == "PIP_CERT"}
    env["PIP_CONFIG_FILE"] = os.devnull
    return env


def modern_pip() -> str:
    """A Python whose pip is >= 25 (fast range-request metadata): this one's, else a venv cached once."""
    import pip

    if int(pip.__version__.split(".")[0]) >= 25:
        return sys.executable
    venv = CACHE / "pip-venv"
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--index-url", INDEX, "pip>=25"], check=True,
                       env=clean_env())
    return str(python)


def resolve(python: str, label: str, reqs: list[Requirement], stubs: Path, work: Path,
            pip_python: str = sys.executable) -> tuple[str, str | None, float]:
    """Resolve one set for one Python; returns (what, problem or None, seconds)."""
    started = time.monotonic()
    tag = f"{label}-py{python}"
    (work / f"{tag}.txt").write_text("".join(r.text + "\n" for r in for_python(reqs, python)))
    platforms = [arg for p in PLATFORMS for arg in ("--platform", p)]
    env = clean_env()
    cmd = [pip_python, "-m", "pip", "install", "--dry-run", "--quiet", "--ignore-installed",
           "--disable-pip-version-check", "--use-feature=fast-deps", "--index-url", INDEX, "--find-links", str(stubs),
           "--only-binary=:all:", "--python-version", python, "--implementation", "cp", *platforms,
           "--target", str(work / tag), "--report", str(work / f"{tag}.json"), "-r", str(work / f"{tag}.txt")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    seconds = time.monotonic() - started
    if proc.returncode == 0:
        return tag, None, seconds
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("ERROR:")] or \
        [ln for ln in proc.stderr.strip().splitlines() if not ln.startswith("WARNING:")][-1:]
    culprit = next((m[1] for ln in lines if (m := re.search(r"requirement (\S+)", ln))), None)
    what = f"{culprit} " if culprit else ""
    return tag, f"{label} set does not resolve on Python {python}: {what}— {lines[-1] if lines else 'pip failed'}", seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--python", action="append", help="only these versions (default: 3.11, 3.12, 3.13)")
    args = parser.parse_args(argv)
    started = time.monotonic()
    requirement_sets = sets(REPO)
    everything = [r for reqs in requirement_sets.values() for r in reqs]
    problems, files = missing_pins(everything)
    if problems:
        print("\n".join(problems))
        return 1
    with tempfile.TemporaryDirectory(prefix="check-pins-") as tmp:
        work, stubs = Path(tmp), Path(tmp) / "stubs"
        stubs.mkdir()
        stubbed = [f"{n}=={v}" for r in everything if r.pin for n, v in [r.pin] if sdist_stub(n, v, files[n], stubs)]
        pip_python = modern_pip()
        jobs = [(py, label, reqs) for py in (args.python or PYTHONS) for label, reqs in requirement_sets.items()]
        with ThreadPoolExecutor(len(jobs)) as pool:
            results = list(pool.map(lambda job: resolve(*job, stubs, work, pip_python), jobs))
    for tag, problem, seconds in results:
        print(f"{tag}: {'FAIL ' + problem if problem else 'ok'} ({seconds:.0f} s)")
    failed = [problem for _, problem, _ in results if problem]
    stub_note = f"; sdist-only, checked through their metadata: {', '.join(sorted(set(stubbed)))}" if stubbed else ""
    print(f"check_pins: {len(results) - len(failed)}/{len(results)} sets resolve in {time.monotonic() - started:.0f} s{stub_note}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
