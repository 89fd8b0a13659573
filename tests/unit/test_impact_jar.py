"""The impact writer's committed jar is built from the Java sources beside it (``make jar``), and ships."""

from __future__ import annotations

import tomllib
import zipfile

from indexes.storage.lucene import jar
from tests.support import REPO


def test_the_committed_jar_is_built_from_the_sources() -> None:
    manifest = jar.jar_manifest()
    assert manifest.get(jar.SOURCE_KEY) == jar.source_sha256(), (
        "indexes/storage/lucene/java/hybrid-lucene.jar is stale against its sources: run 'make jar' and commit it")
    with zipfile.ZipFile(jar.JAR) as archive:
        classes = {n.removesuffix(".class").replace("/", ".") for n in archive.namelist() if n.endswith(".class")}
    sources = {p.relative_to(jar.SOURCES).with_suffix("").as_posix().replace("/", ".") for p in jar.source_files()}
    assert sources <= classes  # every source compiled (nested classes besides)


def test_the_digest_changes_with_a_source(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import shutil

    copy = tmp_path / "src"
    shutil.copytree(jar.SOURCES, copy)
    monkeypatch.setattr(jar, "SOURCES", copy)
    before = jar.source_sha256()
    first = jar.source_files()[0]
    first.write_text(first.read_text() + "\n// changed\n")
    assert jar.source_sha256() != before


def test_the_jar_and_its_sources_are_package_data() -> None:
    data = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["indexes"]
    assert "storage/lucene/java/hybrid-lucene.jar" in data
    assert jar.JAR.relative_to(REPO / "indexes").as_posix() in data
