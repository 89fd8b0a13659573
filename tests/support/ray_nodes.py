"""A Ray cluster of several nodes on this machine, each ``ray start --block`` a process group of its own with its own
temporary folder (``--temp-dir``, and ``TMPDIR`` for what its workers write), so that nodes share no folder: what a
task or a replica writes lands under its node's folder, and a node is lost by killing its process group."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.support.data import REPO
from tests.support.server import free_port

RAY = str(Path(sys.executable).with_name("ray"))
TOKEN = secrets.token_hex(16)  # this session's clusters' token (Ray's token authentication), never ~/.ray's


def ray_env() -> dict[str, str]:
    """What every process of these clusters (nodes and drivers) needs in its environment."""
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": TOKEN, "RAY_USAGE_STATS_ENABLED": "0"}


def node_ip() -> str:
    from ray.util import get_node_ip_address

    return str(get_node_ip_address())


class RayNode:
    def __init__(self, name: str, base: Path, head: str | None = None, cpus: int = 1) -> None:
        self.name = name
        self.folder = base / name  # short: Ray's socket paths under --temp-dir must stay under 107 characters
        self.tmp = self.folder / "tmp"
        self.tmp.mkdir(parents=True, exist_ok=True)
        self.head = head
        self.cpus = cpus
        self.port = free_port()
        self.address = head or f"{node_ip()}:{self.port}"
        self.start()

    def start(self) -> None:
        ports = ["--node-manager-port", str(free_port()), "--object-manager-port", str(free_port()),
                 "--metrics-export-port", str(free_port()), "--dashboard-agent-listen-port", str(free_port()),
                 "--dashboard-agent-grpc-port", str(free_port()), "--runtime-env-agent-port", str(free_port())]
        role = ["--address", self.head] if self.head else ["--head", "--port", str(self.port), "--include-dashboard",
                                                           "false", "--ray-client-server-port", str(free_port())]
        env = {**os.environ, **ray_env(), "TMPDIR": str(self.tmp), "PYTHONPATH": str(REPO),
               "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        self.log = (self.folder / "node.log").open("ab")
        self.proc = subprocess.Popen(
            [RAY, "start", "--block", *role, "--num-cpus", str(self.cpus),
             "--temp-dir", str(self.folder / "ray"), "--object-store-memory", str(256 * 2**20),
             "--disable-usage-stats", *ports],
            env=env, stdout=self.log, stderr=self.log, start_new_session=True, cwd=str(self.folder))

    def kill(self) -> None:
        """The node is lost: SIGKILL to every process of its group (its raylet, object store and workers)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)
        for pid in _descendants_gone(self.folder):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        self.kill()
        self.log.close()

    def seen(self, prefix: str) -> list[str]:
        """Entries of this node's temporary folder (and its ``hybrid-shards``) whose names start with ``prefix``."""
        found = [p.name for p in self.tmp.iterdir() if p.name.startswith(prefix)]
        shards = self.tmp / "hybrid-shards"
        if shards.is_dir():
            found += [p.name for p in shards.iterdir() if p.name.startswith(prefix)]
        return found


def _descendants_gone(folder: Path) -> list[int]:
    """Processes still running whose command line or environment names ``folder`` (workers a raylet started in a
    session of their own)."""
    pids = []
    marker = str(folder).encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if marker in (entry / "cmdline").read_bytes() or marker in (entry / "environ").read_bytes():
                pids.append(int(entry.name))
        except OSError:
            continue
    return [p for p in pids if p != os.getpid()]


class RayCluster:
    """A head (no CPUs: it holds the driver's files, Serve's proxy and the ingress) and ``workers`` nodes."""

    def __init__(self, workers: int = 2) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="hr-", dir="/tmp"))
        self.head = RayNode("head", self.base, cpus=0)
        self.workers = [RayNode(f"w{i}", self.base, head=self.head.address) for i in range(workers)]
        self.wait_for(1 + workers)

    @property
    def address(self) -> str:
        return self.head.address

    def alive_nodes(self) -> int:
        probe = ("import ray; ray.init(address=%r, log_to_driver=False, configure_logging=False); "
                 "print(sum(1 for n in ray.nodes() if n['Alive']))" % self.address)
        out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                             env={**os.environ, **ray_env()})
        return int(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 and out.stdout.strip() else 0

    def wait_for(self, nodes: int, timeout: float = 180) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.alive_nodes() == nodes:
                return
            time.sleep(2)
        raise AssertionError(f"the Ray cluster did not reach {nodes} alive nodes; "
                             + (self.head.folder / "node.log").read_text(errors="replace")[-2000:])

    def stop(self) -> None:
        for node in [*self.workers, self.head]:
            node.stop()
        shutil.rmtree(self.base, ignore_errors=True)
