"""The real server over real HTTP: ``python -m service.cli serve`` in a subprocess on a free loopback port."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``hybrid serve`` over ``root``, ready (every index loaded) when the constructor returns. ``args`` are more
    ``serve`` flags; with ``--ssl-certfile`` the URL is https and ``verify`` is that certificate. ``key`` is the
    API key readiness is asked with (default: the first of ``HYBRID_API_KEYS``)."""

    def __init__(self, root: Path, env: dict[str, str] | None = None, args: Sequence[str] = (),
                 port: int | None = None, key: str | None = None,
                 preexec: Callable[[], None] | None = None) -> None:
        self.root = root
        self.port = port or free_port()
        tls = "--ssl-certfile" in args
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.verify: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=str(args[list(args).index("--ssl-certfile") + 1])) if tls else True)
        self.env = {**os.environ, **(env or {})}
        self.args = list(args)
        self.preexec = preexec  # run in the child before exec (a resource limit)
        keys = self.env.get("HYBRID_API_KEYS")
        self.key = key or (keys.split(",")[0] if keys else None)
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "serve", "--index-root", str(self.root), "--port", str(self.port),
             *self.args],
            env=self.env, stdout=subprocess.DEVNULL, stderr=self._log_file(), text=True, preexec_fn=self.preexec,
        )
        headers = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        deadline = time.time() + 180
        while time.time() < deadline:
            assert self.proc.poll() is None, self.log()[-5000:] or "server died"
            try:
                if httpx.get(f"{self.url}/v1/ready", headers=headers, timeout=2, verify=self.verify).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        raise AssertionError("server not ready in time")

    def _log_file(self):  # type: ignore[no-untyped-def]
        """stderr to a file, not a pipe nobody reads (a chatty server would block once the pipe is full)."""
        self._log = tempfile.TemporaryFile(mode="w+")
        return self._log

    def log(self) -> str:
        """What the server wrote to stderr since it was (re)started."""
        self._log.flush()
        self._log.seek(0)
        return self._log.read()

    def kill(self) -> None:
        """kill -9: no shutdown hook runs."""
        self.proc.kill()
        self.proc.wait(timeout=20)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
