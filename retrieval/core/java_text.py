"""Text that may reach the JVM (and SQLite, the write-ahead log, the tokenizers), made safe in one place.

A Python ``str`` can hold what no other layer can: a lone surrogate (``"\\ud800"``, from a JSON escape or from
``sys.argv``'s surrogateescape) makes pyjnius's UTF-16 encoder raise, and so do UTF-8 encoders (the log, SQLite)
and the tokenizers (Rust strings); a NUL or another control character in an id breaks run files and logs. So
every string that crosses into Java passes one of three checks, chosen by what the string *is*:

* free text (queries, titles, texts): :func:`safe_text` cleans it: a surrogate pair written as two code points
  becomes its character, a lone surrogate becomes U+FFFD (what Java's own decoders put there), and a control
  character other than tab and newline becomes a space (no retriever reads meaning into one). Nothing is refused:
  a query or a document is still searched or indexed as near to what was sent as the engines can hold.
* identifiers (document ids, metadata field names): :func:`checked_key` refuses a lone surrogate or any control
  character with an :class:`UnsafeTextError` (HTTP 422, CLI exit 2): an id must round-trip exactly between the
  document store, Lucene, FAISS and the client, so it is never silently changed.
* values (metadata strings, filter values): :func:`checked_value` refuses a lone surrogate or a NUL; other
  control characters are kept (a value is compared, never tokenized).

The inputs (request models, corpus lines, :class:`~indexes.storage.docstore.corpus.Document`) apply these when a
string enters the program, so everything stored is already safe; the Java boundary (``lucene/direct.py``,
``lucene/writer.py``, ``lucene/filters.py``, ``lucene/analysis.py``, ``lucene/backend.py``) applies them again, so
a path that forgets its input check still cannot crash the JVM call.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from retrieval.core.errors import HybridError

_SURROGATE = re.compile(r"[\ud800-\udfff]")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # C0 and C1 controls, but tab and newline
_UNSAFE_TEXT = re.compile(r"[\ud800-\udfff\x00-\x08\x0b-\x1f\x7f-\x9f]")
_UNSAFE_KEY = re.compile(r"[\ud800-\udfff\x00-\x1f\x7f-\x9f]")  # tab and newline too
_UNSAFE_VALUE = re.compile(r"[\ud800-\udfff\x00]")
_LONE = re.compile(r"[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]")


class UnsafeTextError(HybridError, ValueError):
    """An identifier or value holding a character no engine can store as sent (a lone surrogate, a NUL)."""


def _joined(text: str) -> str:
    """Surrogate pairs written as two code points joined into their character; lone ones become U+FFFD."""
    return text.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")


def safe_text(text: str) -> str:
    """Free text as every engine can take it (see the module docstring); unchanged, and fast, when already safe."""
    if not _UNSAFE_TEXT.search(text):
        return text
    if _SURROGATE.search(text):
        text = _joined(text)
    return _CONTROL.sub(" ", text)


def _describe(char: str) -> str:
    if "\ud800" <= char <= "\udfff":
        return f"a lone surrogate (U+{ord(char):04X})"
    return "a NUL character" if char == "\x00" else f"a control character (U+{ord(char):04X})"


def _refuse(text: str, pattern: re.Pattern[str], what: str) -> str:
    if not pattern.search(text):
        return text
    bad = _LONE.search(text)
    if bad is None:
        if _SURROGATE.search(text):
            text = _joined(text)  # only well-formed pairs: now their characters
        bad = pattern.search(text)
        if bad is None:
            return text
    shown = "".join(c if c.isprintable() and not _SURROGATE.match(c) else f"\\u{ord(c):04x}" for c in text[:60])
    raise UnsafeTextError(f"{what} '{shown}' holds {_describe(bad.group())}, which cannot be stored; "
                          "send valid Unicode text without control characters")


def checked_key(text: str, what: str = "id") -> str:
    """An identifier (document id, metadata field name), refused if it holds a lone surrogate or a control char."""
    return _refuse(text, _UNSAFE_KEY, what)


def checked_value(text: str, what: str = "value") -> str:
    """A metadata or filter value, refused if it holds a lone surrogate or a NUL."""
    return _refuse(text, _UNSAFE_VALUE, what)


def checked_metadata(metadata: Mapping[str, Any], where: str = "metadata", strict: bool = True) -> None:
    """Every field name and string value of ``metadata`` (nested objects and lists too) checked; raises
    :class:`UnsafeTextError` naming the first one that is not safe. ``strict=False`` (the Java boundary, which also
    replays what older versions accepted) holds field names to the values' rule: no lone surrogate, no NUL."""
    keys = _UNSAFE_KEY if strict else _UNSAFE_VALUE
    stack: list[tuple[str, Any]] = [(where, metadata)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, str):
            if _UNSAFE_VALUE.search(value):
                checked_value(value, f"{path} value")
        elif isinstance(value, Mapping):
            for key, item in value.items():
                if isinstance(key, str) and keys.search(key):
                    _refuse(key, keys, f"{path} field name")
                stack.append((f"{path}.{key}", item))
        elif isinstance(value, (list, tuple)):
            stack.extend((path, item) for item in value)


def checked_strings(value: Any, text_fields: frozenset[str] = frozenset(), where: str = "") -> Any:
    """A request body (plain JSON values) made safe before it is validated: the top-level ``text_fields`` (a query,
    a list of queries, a title) cleaned with :func:`safe_text`, every other string and key checked with
    :func:`checked_value` (so an options key or a filter value with a lone surrogate is a 422, not a 500 where
    it is later encoded)."""
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            here = f"{where}.{key}" if where else str(key)
            if isinstance(key, str) and _UNSAFE_VALUE.search(key):
                _refuse(key, _UNSAFE_VALUE, f"{where or 'body'} key")
            if not where and key in text_fields:
                if isinstance(item, str):
                    item = safe_text(item)
                elif isinstance(item, list):
                    item = [safe_text(x) if isinstance(x, str) else x for x in item]
                out[key] = item
            else:
                out[key] = checked_strings(item, text_fields, here)
        return out
    if isinstance(value, str):
        return _refuse(value, _UNSAFE_VALUE, where or "value") if _UNSAFE_VALUE.search(value) else value
    if isinstance(value, list) and any(isinstance(item, (str, list, Mapping)) for item in value):
        return [checked_strings(item, text_fields, where) for item in value]
    return value
