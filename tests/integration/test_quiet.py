"""The CLI's stderr carries no JVM noise: no ``WARNING:`` lines of the JVM (sun.misc.Unsafe, restricted methods,
Lucene's java.util.logging) and no ``SLF4J`` lines. The JVM options that silence them are set in one place,
``retrieval.core.jvm.quiet_options``; nothing filters the output."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support import REPO, cranfield_docs, write_jsonl

HYBRID = [sys.executable, "-m", "service.cli"]


def noise(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("WARNING:") or "SLF4J" in line]


def test_build_and_search_print_no_jvm_warnings(tmp_path: Path) -> None:
    corpus = write_jsonl(tmp_path / "corpus.jsonl", cranfield_docs(5))
    root = tmp_path / "root"
    build = subprocess.run([*HYBRID, "index", "build", str(corpus), "--name", "tiny", "--retrievers", "bm25",
                            "--quiet", "--index-root", str(root)],
                           capture_output=True, text=True, check=False, timeout=300, cwd=REPO)
    assert build.returncode == 0, build.stderr
    assert noise(build.stderr) == [], build.stderr
    search = subprocess.run([*HYBRID, "search", "tiny", "boundary layer", "--index-root", str(root)],
                            capture_output=True, text=True, check=False, timeout=300, cwd=REPO)
    assert search.returncode == 0, search.stderr
    assert search.stdout.strip(), "the search printed no hits"
    assert noise(search.stderr) == [], search.stderr
