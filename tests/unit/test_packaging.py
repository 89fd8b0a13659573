"""Packaging facts that must hold together, checked offline: supported Pythons, the FAISS extras, and the
Docker images installing those same extras. ``.ci/check_pins.py`` checks the pins against the index."""

from __future__ import annotations

import importlib.util
import re
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from tests.support import REPO

PROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
EXTRAS = PROJECT["optional-dependencies"]


def _checker():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("check_pins", REPO / ".ci" / "check_pins.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("check_pins", module)  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _names(reqs: list[str]) -> set[str]:
    return {Requirement(r).name for r in reqs}


def test_python_versions_3_11_to_3_13() -> None:
    supported = SpecifierSet(PROJECT["requires-python"])
    assert all(v in supported for v in ("3.11.0", "3.12.5", "3.13.1")) and "3.10.9" not in supported
    for version in ("3.11", "3.12", "3.13"):
        assert f"Programming Language :: Python :: {version}" in PROJECT["classifiers"]


def test_pyserini_and_torch_pinned_for_every_python() -> None:
    core = {Requirement(r).name: Requirement(r) for r in PROJECT["dependencies"]}
    assert str(core["pyserini"].specifier) == "==1.6.0" and core["pyserini"].marker is None
    assert str(core["torch"].specifier) == "==2.13.0"


def test_faiss_is_an_extra() -> None:
    assert not {"faiss-cpu", "faiss-gpu"} & _names(PROJECT["dependencies"])
    for extra in ("cpu", "test", "bench"):
        assert "faiss-cpu" in _names(EXTRAS[extra]), extra
    assert "faiss-gpu" in _names(EXTRAS["gpu"]) and "faiss-cpu" not in _names(EXTRAS["gpu"])


def test_gpu_image_installs_the_gpu_extra_on_the_cuda_it_pins() -> None:
    checker = _checker()
    dockerfile = REPO / "docker" / "Dockerfile.gpu"
    assert checker.dockerfile_extras(dockerfile) == ["gpu"]
    assert checker.dockerfile_extras(REPO / "docker" / "Dockerfile") == ["cpu"]
    base = re.search(r"^FROM nvidia/cuda:(\d+\.\d+)\.\d+-\S+", dockerfile.read_text(), re.M)
    runtime = next(Requirement(r) for r in EXTRAS["gpu"] if r.startswith("nvidia-cuda-runtime-cu12"))
    assert base and str(runtime.specifier).startswith(f"=={base[1]}."), (base, runtime)
    # No pip pin in the GPU image beside the extra: one source of truth.
    assert checker.dockerfile_pins(dockerfile) == []


def test_checker_reads_pins_and_markers(tmp_path: Path) -> None:
    checker = _checker()
    sample = tmp_path / "Dockerfile"
    sample.write_text("FROM x\nRUN python -m venv /v \\\n    && pip install --no-cache-dir torch==2.13.0 'faiss-gpu-cu12==1.15.1'"
                      " numpy>=1 && pip uninstall -y foo==1\n")
    assert [r.pin for r in checker.dockerfile_pins(sample)] == [("torch", "2.13.0"), ("faiss-gpu-cu12", "1.15.1")]
    assert checker.file_version("faiss-gpu-cu12", "faiss_gpu_cu12-1.14.1.post1-cp310-abi3-manylinux_2_28_x86_64.whl") \
        == "1.14.1.post1"
    assert checker.file_version("pyserini", "pyserini-1.6.0.tar.gz") == "1.6.0"
    reqs = [checker.Requirement("pyseismic-lsr>=0.5; python_version < '3.12'", "x"), checker.Requirement("bm25s>=0.2", "x")]
    assert [r.text for r in checker.for_python(reqs, "3.11")] == ["pyseismic-lsr>=0.5", "bm25s>=0.2"]
    assert [r.text for r in checker.for_python(reqs, "3.13")] == ["bm25s>=0.2"]
    sets = checker.sets(REPO)
    assert {r.text for r in sets["gpu"]} >= {"faiss-gpu==1.15.1", "torch==2.13.0", "pyserini==1.6.0"}


def test_ci_checks_pins_before_the_tests() -> None:
    lines = (REPO / ".ci" / "run").read_text().splitlines()
    pins = next(i for i, line in enumerate(lines) if "check_pins.py" in line)
    assert pins < lines.index("make test")
