"""The real server over real HTTP: ``python -m service.cli serve`` in a subprocess on a free loopback port."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """``hybrid serve`` over ``root``, ready (every index loaded) when the constructor returns."""

    def __init__(self, root: Path, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full_env = {**os.environ, **(env or {})}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "serve", "--index-root", str(root), "--port", str(self.port)],
            env=full_env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        keys = (env or {}).get("HYBRID_API_KEYS")
        headers = {"Authorization": f"Bearer {keys.split(',')[0]}"} if keys else {}
        deadline = time.time() + 180
        while time.time() < deadline:
            assert self.proc.poll() is None, self.proc.stderr.read() if self.proc.stderr else "server died"
            try:
                if httpx.get(f"{self.url}/v1/ready", headers=headers, timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        raise AssertionError("server not ready in time")

    def kill(self) -> None:
        """kill -9: no shutdown hook runs."""
        self.proc.kill()
        self.proc.wait(timeout=20)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
