"""docs/configuration.md is what the settings render, and every ``HYBRID_*`` variable the code names is documented."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from retrieval.core.settings import Settings
from retrieval.core.settings_reference import CONFIG_VARIABLE, render, variable
from tests.support import REPO

REFERENCE = REPO / "docs" / "configuration.md"
PACKAGES = ("retrieval", "indexes", "service", "eval")
VARIABLE = re.compile(r"HYBRID_[A-Z0-9_]+")
SKIPPED_DIRS = {".venv", "venv", "build", "dist", "node_modules", "data"}


def markdown_files() -> list[Path]:
    """The repository's .md files: git's tracked and not-ignored ones, or a walk where there is no git."""
    try:
        listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z", "--", "*.md"],
                                cwd=REPO, capture_output=True, text=True, check=True, timeout=60).stdout
        return [REPO / name for name in listed.split("\0") if name and (REPO / name).is_file()]
    except (OSError, subprocess.SubprocessError):
        return [p for p in REPO.rglob("*.md") if not any(part.startswith(".") or part in SKIPPED_DIRS
                                                         or part.endswith(".egg-info")
                                                         for part in p.relative_to(REPO).parts[:-1])]


def code_variables() -> dict[str, list[str]]:
    """Every ``HYBRID_*`` name in the packages' .py files -> the files naming it."""
    found: dict[str, list[str]] = {}
    for package in PACKAGES:
        for file in sorted((REPO / package).rglob("*.py")):
            for name in set(VARIABLE.findall(file.read_text(encoding="utf-8"))):
                if not name.endswith("_"):  # the bare prefix, as in f"HYBRID_{name}"
                    found.setdefault(name, []).append(str(file.relative_to(REPO)))
    return found


def test_configuration_reference_is_current() -> None:
    current = REFERENCE.read_text(encoding="utf-8") if REFERENCE.is_file() else ""
    assert current == render(), ("docs/configuration.md differs from what retrieval/core/settings.py renders; "
                                 "run `make docs` and commit the file")


def test_every_variable_in_the_code_is_documented() -> None:
    found = code_variables()
    assert found, "no HYBRID_* variable found in the code: the scan is broken"
    docs = "\n".join(path.read_text(encoding="utf-8") for path in markdown_files())
    missing = {name: files for name, files in found.items() if name not in docs}
    assert not missing, f"HYBRID_* variables named in the code but in no .md file: {missing}"


def test_every_setting_is_in_the_reference() -> None:
    text = REFERENCE.read_text(encoding="utf-8")
    names = [variable(name) for name in Settings.model_fields] + [CONFIG_VARIABLE]
    assert [n for n in names if f"`{n}`" not in text] == []
