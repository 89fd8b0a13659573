"""The workbench's assets as shipped: every file is package data, nothing is fetched from elsewhere (the service runs
offline), and every module the page imports is there. There is no build step, so nothing can be stale."""

from __future__ import annotations

import fnmatch
import re
import tomllib

from tests.support import REPO

STATIC = REPO / "service" / "ui" / "static"


def test_every_asset_is_package_data() -> None:
    patterns = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["service"]
    files = [p.relative_to(REPO / "service").as_posix() for p in STATIC.rglob("*") if p.is_file()]
    assert {"ui/static/index.html", "ui/static/app.js", "ui/static/style.css"} <= set(files)
    assert [f for f in files if not any(fnmatch.fnmatch(f, pattern) for pattern in patterns)] == []


def test_nothing_is_loaded_from_elsewhere_and_every_import_resolves() -> None:
    for path in STATIC.iterdir():
        text = path.read_text()
        assert not re.search(r"""(src|href)\s*=\s*["'](https?:)?//""", text), path.name  # no CDN, no remote asset
        assert not re.search(r"""\bimport\b[^;]*?from\s+["']https?:""", text), path.name
        for module in re.findall(r"""from\s+["'](\./[^"']+)["']""", text):
            assert (STATIC / module).is_file(), f"{path.name} imports {module}"
    page = (STATIC / "index.html").read_text()
    assert '<script type="module" src="app.js">' in page and 'href="style.css"' in page
