"""README.md's Python examples run as written: the library's five lines (a real build of the bundled Cranfield and a
search in a ``with`` block) and the client's (against the real server of the session index)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.server import Server

REPO = Path(__file__).resolve().parents[2]


def _block(section: str) -> str:
    """The first ```python block under README's ``## section`` heading."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    body = text.split(f"\n## {section}\n", 1)[1]
    match = re.search(r"```python\n(.*?)```", body, flags=re.S)
    assert match, f"README's '{section}' has no python block"
    return match.group(1)


def _run(code: str, cwd: Path) -> str:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.slow  # builds Cranfield with BM25 and SPLADE (about a minute)
def test_the_python_api_example_runs_as_written(tmp_path: Path) -> None:
    code = _block("Python API")
    assert len(code.strip().splitlines()) <= 6 and "with Searcher.open(" in code
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "datasets").symlink_to(REPO / "eval" / "datasets")  # the README's relative corpus path
    lines = _run(code, tmp_path).splitlines()
    assert len(lines) == 3  # k=3 hits, one line each: rank, id, score, each retriever's rank
    assert [line.split()[0] for line in lines] == ["1", "2", "3"]
    assert "'bm25'" in lines[0] or "'splade'" in lines[0]


def test_the_client_example_runs_as_written(server: Server) -> None:
    code = _block("Workbench and Python client")
    code = code.replace("http://127.0.0.1:8000", server.url).replace('"cranfield"', '"small"')
    out = _run(code, REPO)
    assert "'1': [" in out and "'2': [" in out
