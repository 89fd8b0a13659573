"""The structure the code promises: layers that only import downwards, every setting reaching a
consumer, one error base class for both faces. (The one guarded place that reaches into Anserini is checked in
tests/integration/test_anserini_reflection.py: it needs the JVM.)"""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from tests.support import REPO


def test_import_linter_contracts_hold() -> None:
    lint = Path(sys.executable).parent / "lint-imports"
    proc = subprocess.run([str(lint), "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "Contracts: 2 kept, 0 broken." in proc.stdout


def test_no_module_import_circle() -> None:
    """No module reaches itself through imports, across the four packages too (the acyclic_siblings contract
    looks inside each package); imports inside functions count, as grimp reads them."""
    import grimp

    graph = grimp.build_graph("retrieval", "indexes", "service", "eval", cache_dir=None)
    edges = {m: graph.find_modules_directly_imported_by(m) for m in graph.modules}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []

    def visit(module: str) -> None:  # Tarjan's strongly connected components
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for other in edges[module]:
            if other not in index:
                visit(other)
                low[module] = min(low[module], low[other])
            elif other in on_stack:
                low[module] = min(low[module], index[other])
        if low[module] == index[module]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == module:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for module in sorted(edges):
        if module not in index:
            visit(module)
    assert circles == [], f"modules that import each other: {circles}"


def _settings_attributes() -> set[str]:
    """Every ``<...>settings.<field>`` read in the code outside the settings module itself."""
    names: set[str] = set()
    for folder in ("retrieval", "indexes", "service", "eval"):
        for path in (REPO / folder).rglob("*.py"):
            if path.name == "settings.py":
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Attribute):
                    value = node.value
                    owner = value.id if isinstance(value, ast.Name) else value.attr if isinstance(value, ast.Attribute) else ""
                    if owner == "settings":
                        names.add(node.attr)
    return names


def test_every_setting_reaches_a_consumer() -> None:
    from retrieval.core.options import BuildOptions, OpenOptions
    from retrieval.core.settings import Settings

    through_options = {f.name for cls in (BuildOptions, OpenOptions) for f in fields(cls)}
    read = _settings_attributes()
    unused = [name for name in Settings.model_fields if name not in through_options and name not in read]
    assert unused == [], f"settings nobody reads: {unused}"


def test_from_settings_copies_every_shared_field() -> None:
    from retrieval.core.options import BuildOptions, OpenOptions
    from retrieval.core.settings import Settings

    settings = Settings(device="cpu", batch_size=7, sparse_model="m1", dense_model="m2", faiss_factory="HNSW8",
                        splade_scale=50, splade_doc_top_k=12, threads=3, depth=33, rrf_k=9, verify="off",
                        checkpoint_mb=5, compact_fraction=0.5)
    build = BuildOptions.from_settings(settings, progress=False)
    assert (build.batch_size, build.sparse_model, build.dense_model, build.faiss_factory, build.splade_scale,
            build.splade_doc_top_k, build.threads, build.device, build.progress) == (
            7, "m1", "m2", "HNSW8", 50, 12, 3, "cpu", False)
    opened = OpenOptions.from_settings(settings)
    assert (opened.depth, opened.rrf_k, opened.verify, opened.checkpoint_bytes, opened.compact_fraction) == (
        33, 9, "off", 5 * 2**20, 0.5)
    with pytest.raises(TypeError):
        BuildOptions.from_settings(settings, no_such_field=1)


def test_every_user_error_has_one_base() -> None:
    """The CLI and the API map errors through HybridError alone: every error class we raise derives from it."""
    from retrieval.core.errors import HybridError

    defined = []
    for folder in ("retrieval", "indexes", "service", "eval"):
        for path in (REPO / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ClassDef) and node.name.endswith("Error") and node.name != "ApiError":
                    module = ".".join(path.relative_to(REPO).with_suffix("").parts)
                    defined.append((module, node.name))
    assert len(defined) > 15
    import importlib

    for module, name in defined:
        cls = getattr(importlib.import_module(module), name)
        assert issubclass(cls, HybridError), f"{module}.{name} does not derive from HybridError"
        assert 400 <= cls.http_status < 600 and cls.exit_code == 2
