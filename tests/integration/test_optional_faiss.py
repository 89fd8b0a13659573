"""FAISS is an extra: without it, a dense retriever is refused in one line that names the extra to install."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support import cranfield_docs, write_jsonl

# sys.modules["faiss"] = None makes `import faiss` fail as it does where the package is not installed.
NO_FAISS = "import sys; sys.modules['faiss'] = None; from service.cli import main; sys.argv[0] = 'hybrid'; main()"


def test_dense_build_without_faiss_names_the_extra(tmp_path: Path) -> None:
    corpus = write_jsonl(tmp_path / "corpus.jsonl", cranfield_docs(3))
    proc = subprocess.run([sys.executable, "-c", NO_FAISS, "index", "build", str(corpus), "--name", "x",
                           "--retrievers", "dense", "--index-root", str(tmp_path / "root")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("hybrid: error:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "pip install 'hybrid-retrieval[cpu]'" in errors[0] and "[gpu]" in errors[0], errors[0]
