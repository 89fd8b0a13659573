"""The API keys a server accepts, per scope (search, admin), as SHA-256 digests (:mod:`service.auth` checks them).

Keys are held as SHA-256 digests only: a configured key is either ``sha256:HEX`` (the digest of the key, so the
key itself is never written in a settings file or an environment) or a plain key, hashed when loaded. A request's
key is hashed and compared in constant time against every digest.

Keys come from the settings (``api_keys``, ``admin_keys``) and from ``keys_file``: lines ``search KEY`` or
``admin KEY`` (``#`` starts a comment). The file is checked for changes at most once a second and re-read when it
changed, so keys rotate without a restart: add the new key, move clients to it, remove the old one. A file that
cannot be read or parsed at a later check keeps the keys of the last good read (and logs why).

With no key configured at all (and no keys file), auth is off.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import threading
import time
from pathlib import Path

from retrieval.core.errors import HybridError
from retrieval.core.settings import Settings

log = logging.getLogger("hybrid.service")
_HASHED = re.compile(r"^sha256:([0-9a-fA-F]{64})$")
SCOPES = ("search", "admin")


class KeysError(HybridError, ValueError):
    """A key or keys file that cannot be used; the message says what to fix."""


def digest(key: str) -> bytes:
    """The stored form of one configured key: ``sha256:HEX`` as given, a plain key hashed."""
    key = key.strip()
    match = _HASHED.match(key)
    return bytes.fromhex(match.group(1)) if match else hashlib.sha256(key.encode()).digest()


def read_keys_file(path: Path) -> dict[str, list[bytes]]:
    """``{scope: [digest, ...]}`` from a keys file; :class:`KeysError` names the first line that is wrong."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise KeysError(f"keys file {path}: cannot read it ({exc.__class__.__name__})") from None
    keys: dict[str, list[bytes]] = {scope: [] for scope in SCOPES}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        scope, _, key = line.partition(" ")
        if scope not in SCOPES or not key.strip():
            raise KeysError(f"keys file {path}:{number}: expected 'search KEY' or 'admin KEY' (KEY plain or "
                            "sha256:HEX)")
        keys[scope].append(digest(key))
    return keys


class KeyRing:
    """The digests a server accepts, per scope, with the keys file followed as it changes."""

    CHECK_SECONDS = 1.0

    def __init__(self, settings: Settings) -> None:
        self._fixed = {"search": [digest(k) for k in settings.api_keys],
                       "admin": [digest(k) for k in settings.admin_keys]}
        self.file = settings.keys_file
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._checked = 0.0
        self._from_file: dict[str, list[bytes]] = {scope: [] for scope in SCOPES}
        if self.file is not None:
            self._stamp = self._file_stamp()
            self._from_file = read_keys_file(self.file)  # at start a bad file is an error, not a warning
            self._checked = time.monotonic()

    @property
    def enabled(self) -> bool:
        return self.file is not None or any(self._fixed.values())

    def _file_stamp(self) -> tuple[int, int, int]:
        assert self.file is not None
        try:
            st = os.stat(self.file)
        except OSError as exc:
            raise KeysError(f"keys file {self.file}: cannot read it ({exc.__class__.__name__})") from None
        return st.st_mtime_ns, st.st_size, st.st_ino

    def _refresh(self) -> None:
        now = time.monotonic()
        if self.file is None or now - self._checked < self.CHECK_SECONDS:
            return
        with self._lock:
            if now - self._checked < self.CHECK_SECONDS:
                return
            self._checked = now
            try:
                stamp = self._file_stamp()
                if stamp != self._stamp:
                    self._from_file = read_keys_file(self.file)
                    self._stamp = stamp
                    log.info("keys file %s re-read: %d search, %d admin key(s)", self.file,
                             len(self._from_file["search"]), len(self._from_file["admin"]))
            except KeysError as exc:  # mid-rotation (a file being replaced): keep the last good keys
                log.warning("%s; keeping the keys read before", exc)

    def scope_of(self, token: str) -> str | None:
        """``"admin"``, ``"search"`` or None for a presented key; every digest is compared (constant time)."""
        self._refresh()
        presented = hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()
        found: dict[str, bool] = {}
        for scope in SCOPES:
            hit = False
            for stored in self._fixed[scope] + self._from_file[scope]:
                hit |= hmac.compare_digest(presented, stored)
            found[scope] = hit
        return "admin" if found["admin"] else "search" if found["search"] else None
