"""Renders ``docs/configuration.md``, the reference of every setting, from :class:`~retrieval.core.settings.Settings`.

``python -m retrieval.core.settings_reference`` (``make docs``) writes the file; ``--check`` exits 1 when the file
differs from what the settings render (tests/unit/test_configuration_reference.py checks the same). The page depends on
the code only, never on the machine it is rendered on: defaults computed at start-up are described, not shown.
"""

from __future__ import annotations

import argparse
import sys
import types
import typing
from pathlib import Path
from typing import Any, Literal

import annotated_types
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from retrieval.core.settings import Settings

OUTPUT = Path("docs/configuration.md")
CONFIG_VARIABLE = "HYBRID_CONFIG"

# Defaults computed when the settings load: what they come to, in words (a new one must be described here).
FACTORY_DEFAULTS = {
    "index_root": "`hybrid-retrieval/indexes` in the user data folder (platformdirs; on Linux "
                  "`$XDG_DATA_HOME` or `~/.local/share`)",
    "threads": "number of CPUs",
    "max_concurrent": "half the number of CPUs (at least 1)",
    "max_queued": "half the number of CPUs (at least 1)",
}

INTRO = f"""\
# Configuration

<!-- Generated from retrieval/core/settings.py by `make docs` (python -m retrieval.core.settings_reference);
     edit the settings' descriptions there, not this file. -->

Every setting of the CLI and the server lives in one typed object, `Settings` (`retrieval/core/settings.py`).
Each setting is read from, highest precedence first:

1. a flag of a `hybrid` command (`--index-root`, `--device`, `--port`, ...), where the command has one;
2. the environment variable `HYBRID_` + the setting's name in capitals (`batch_size`: `HYBRID_BATCH_SIZE`);
3. the file named by `{CONFIG_VARIABLE}`: TOML (`.toml`) or JSON (any other suffix), its keys the settings' names
   (`batch_size = 64`); keys that are no setting are ignored, and a `{CONFIG_VARIABLE}` that names no file is an error;
4. the default below.

In the environment, a list is written comma-separated (`HYBRID_API_KEYS=key-one,key-two`), a map as comma-separated
`NAME=VALUE` pairs (`HYBRID_QUERY_MODES=splade=onnx-int8,dense=onnx`), a flag as `true` or `false` (`1`/`0` too).
In a TOML or JSON file they are the file's own arrays, tables and booleans (`api_keys = ["key-one", "key-two"]`,
`query_modes = {{ splade = "onnx-int8" }}`). A setting with an allowed range refuses values outside it at start-up.

`hybrid serve` prints an example `curl` command; where API keys are set, that command reads the key from
`$HYBRID_KEY`, a shell variable of yours to hold one of `api_keys` (no setting of the service).

| Variable | Type | Default | What it does |
| --- | --- | --- | --- |
| `{CONFIG_VARIABLE}` | path | unset | A TOML or JSON file of settings, read at start-up (see above). |

## Settings

| Setting | Variable | Type | Default | What it does |
| --- | --- | --- | --- | --- |
"""


def variable(name: str) -> str:
    """The environment variable of setting ``name``."""
    return f"{Settings.model_config.get('env_prefix', '')}{name}".upper()


def type_text(annotation: Any) -> str:
    """``annotation`` in words: ``int``, ``path``, ``list of str``, ``one of: auto, cpu, cuda``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Literal:
        return "one of: " + ", ".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        kept = [a for a in args if a is not type(None)]
        text = " or ".join(type_text(a) for a in kept)
        return f"{text}, optional" if len(kept) < len(args) else text
    if origin is list:
        return f"list of {type_text(args[0])}"
    if origin is dict:
        return f"map of {type_text(args[0])} to {type_text(args[1])}"
    if origin is typing.Annotated:
        return type_text(args[0])
    if isinstance(annotation, type) and issubclass(annotation, Path):
        return "path"
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation)


def bounds_text(field: FieldInfo) -> str:
    """The field's allowed range: ``1 to 4096``, ``> 0``."""
    low = high = ""
    for item in field.metadata:
        if isinstance(item, annotated_types.Ge):
            low = f">= {item.ge}"
        elif isinstance(item, annotated_types.Gt):
            low = f"> {item.gt}"
        elif isinstance(item, annotated_types.Le):
            high = f"<= {item.le}"
        elif isinstance(item, annotated_types.Lt):
            high = f"< {item.lt}"
    if low.startswith(">=") and high.startswith("<="):
        return f"{low[3:]} to {high[3:]}"
    return ", ".join(part for part in (low, high) if part)


def default_text(name: str, field: FieldInfo) -> str:
    if field.default_factory is not None:
        if name in FACTORY_DEFAULTS:
            return FACTORY_DEFAULTS[name]
        if field.default_factory in (list, dict):
            return "empty"
        raise ValueError(f"setting {name!r}: describe its computed default in FACTORY_DEFAULTS "
                         f"(retrieval/core/settings_reference.py)")
    value = field.default
    if value is None or value is PydanticUndefined:
        return "unset"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def render() -> str:
    """The whole of ``docs/configuration.md``."""
    rows = []
    for name, field in Settings.model_fields.items():
        if not field.description:
            raise ValueError(f"setting {name!r} has no description; give its Field one in retrieval/core/settings.py")
        kind = type_text(field.annotation)
        bounds = bounds_text(field)
        if bounds:
            kind = f"{kind} ({bounds})"
        rows.append(f"| `{name}` | `{variable(name)}` | {cell(kind)} | {cell(default_text(name, field))} "
                    f"| {cell(field.description)} |")
    return INTRO + "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m retrieval.core.settings_reference", description=__doc__)
    parser.add_argument("--check", action="store_true", help="exit 1 if the file differs instead of writing it")
    parser.add_argument("--output", type=Path, default=OUTPUT, help=f"the file (default: {OUTPUT})")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.is_file() else None
        if current != text:
            print(f"{args.output} is out of date with retrieval/core/settings.py; run `make docs`", file=sys.stderr)
            return 1
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
