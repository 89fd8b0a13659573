"""The client is light: ``import service.client`` in a fresh interpreter loads httpx and pydantic, and none of the
engine (torch, Java, FAISS, models, numpy's stack), so it runs on machines that have none of them."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.support import REPO

HEAVY = ("torch", "jnius", "pyserini", "faiss", "sentence_transformers", "transformers", "onnxruntime", "numpy",
         "numba", "scipy", "pytrec_eval", "fastapi", "starlette", "uvicorn")


def test_importing_the_client_loads_no_engine() -> None:
    code = ("import sys, json; from service.client import HybridClient, AsyncHybridClient; "
            "print(json.dumps(sorted(sys.modules)))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    loaded = set(json.loads(proc.stdout))
    assert "httpx" in loaded and "pydantic" in loaded
    assert sorted(m for m in loaded if m.split(".")[0] in HEAVY) == []
    ours = sorted(m for m in loaded if m.split(".")[0] in ("retrieval", "indexes", "service", "eval"))
    assert not [m for m in ours if m.startswith(("indexes", "eval", "retrieval.search.pipeline", "retrieval.encoders",
                                                 "service.app", "service.routers"))], ours


def test_the_client_shares_the_servers_models() -> None:
    """No second copy: the client's request and response types are the server's schema classes."""
    from retrieval.search import request
    from service import schemas
    from service.client import _base, sync

    assert _base.SearchRequest is schemas.SearchRequest is request.SearchRequest
    assert sync.SearchResponse is schemas.SearchResponse and _base.UpsertRequest is schemas.UpsertRequest
