"""``hybrid serve``: the REST API over every index under the index root (uvicorn, or Ray Serve)."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import click

from retrieval.core.errors import HybridError
from retrieval.core.settings import query_modes_text
from service.cli.common import QUERY_MODE_HELP, index_root_of, index_root_option, parse_query_modes, settings_from


@click.command("serve")
@index_root_option
@click.option("--host", default=None, help="Bind address (default 127.0.0.1).")
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="Port (default 8000).")
@click.option("--workers", type=click.IntRange(min=1), default=None, help="Worker processes; each loads every index.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default=None)
@click.option("--query-mode", "mode_specs", multiple=True, metavar="NAME=MODE",
              help="Default query mode of one retriever (name or kind), repeatable; requests may choose another. "
                   + QUERY_MODE_HELP.split(", repeatable: ")[1])
@click.option("--access-log/--no-access-log", default=None,
              help="Log every request (default: the access_log setting, off; /metrics counts requests either way).")
@click.option("--ray", "ray_address", default=None, metavar="local|auto|ADDRESS",
              help="Serve as a Ray Serve application: one deployment per shard, one of query encoders, an ingress "
                   "(--workers replicas). Needs the [ray] extra; README 'Scale-out'.")
@click.option("--replicas", type=click.IntRange(min=1), default=1, show_default=True,
              help="With --ray: replicas per shard (more than 1: read-only, as of each shard's last checkpoint).")
@click.option("--encoder-replicas", type=click.IntRange(min=1), default=1, show_default=True,
              help="With --ray: replicas of each index's query encoders (one GPU each with --device cuda).")
@click.option("--shards-from", default="auto", show_default=True, metavar="auto|path|object-store|URI",
              help="With --ray: where shard replicas get their shards: 'path' (a disk every node mounts), "
                   "'object-store' (copied onto each node through Ray's object store, checked against the "
                   "manifest; read-only), a URI mirroring the index root (s3://, gs://, file://; read-only), or "
                   "'auto' (path on one machine, the object store across nodes). docs/ray.md.")
@click.option("--max-concurrent", type=click.IntRange(min=1), default=None,
              help="Searches run at once; more wait (default: the max_concurrent setting, one per two cores).")
@click.option("--max-queued", type=click.IntRange(min=0), default=None,
              help="Searches that may wait for a slot; beyond, 429 with Retry-After (default: max_queued, one per "
                   "two cores).")
@click.option("--drain-seconds", type=click.FloatRange(min=0), default=None,
              help="On SIGTERM, how long requests in flight may take before the server checkpoints and exits 0 "
                   "(default 30).")
@click.option("--ssl-keyfile", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Serve HTTPS with this private key (PEM); needs --ssl-certfile.")
@click.option("--ssl-certfile", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Serve HTTPS with this certificate chain (PEM); needs --ssl-keyfile.")
def serve(index_root: Path | None, host: str | None, port: int | None, workers: int | None, device: str | None,
          mode_specs: tuple[str, ...], access_log: bool | None, ray_address: str | None, replicas: int,
          encoder_replicas: int, shards_from: str, **limits: Any) -> None:
    """Serve every index under the index root over HTTP (REST API under /v1, docs at /docs)."""
    import uvicorn

    modes = parse_query_modes(mode_specs)
    settings = settings_from(index_root, host=host, port=port, workers=workers, device=device, query_modes=modes,
                             access_log=access_log, **limits)
    tls = (settings.ssl_keyfile, settings.ssl_certfile)
    if any(tls) and not all(tls):
        raise HybridError("HTTPS needs both --ssl-keyfile and --ssl-certfile (or HYBRID_SSL_KEYFILE and "
                          "HYBRID_SSL_CERTFILE)")
    for path in tls:
        if path is not None and not path.is_file():
            raise HybridError(f"TLS file {path} does not exist")
    from service.keys import KeyRing

    keys = KeyRing(settings)  # a keys file that cannot be read is one line here, not a traceback in a worker
    # Worker processes rebuild the settings from the environment; pass the resolved values on.
    os.environ.update({"HYBRID_INDEX_ROOT": str(settings.index_root), "HYBRID_DEVICE": settings.device,
                       "HYBRID_MAX_CONCURRENT": str(settings.max_concurrent),
                       "HYBRID_MAX_QUEUED": str(settings.max_queued)})
    if settings.query_modes:
        os.environ["HYBRID_QUERY_MODES"] = query_modes_text(settings.query_modes)
    names = index_root_of(settings).names()
    if not names:
        click.echo(f"warning: no indexes under {settings.index_root}; build one with 'hybrid index build'", err=True)
    base = f"{'https' if all(tls) else 'http'}://{settings.host}:{settings.port}"
    example = names[0] if names else "NAME"
    auth = " -H 'Authorization: Bearer $HYBRID_KEY'" if keys.enabled else ""
    click.echo(f"serving {len(names)} index(es) from {settings.index_root} on {base} (docs: {base}/docs)")
    click.echo("try:")
    click.echo(f"  curl -s {base}/v1/indexes/{example}/search{auth} -H 'Content-Type: application/json' "
               "-d '{\"query\": \"heat transfer in laminar boundary layers\", \"k\": 5, \"explain\": true}'")
    if ray_address:
        from service.ray_serve import serve_on_ray

        click.echo(f"on Ray ({ray_address}): {replicas} replica(s) per shard, {encoder_replicas} encoder replica(s), "
                   f"{settings.workers} ingress replica(s); Ctrl-C stops the application")
        serve_on_ray(settings, ray_address, replicas, encoder_replicas, shards_from=shards_from)
        return
    # uvicorn drains on SIGTERM (stops listening, lets requests in flight finish within drain_seconds, runs the
    # app's shutdown: writes checkpointed), then raises the signal again; this handler makes that exit status 0.
    signal.signal(signal.SIGTERM, _drained)
    uvicorn.run("service.app:create_app", factory=True, host=settings.host, port=settings.port,
                workers=settings.workers, log_level="info", access_log=settings.access_log,
                timeout_graceful_shutdown=settings.drain_seconds,
                ssl_keyfile=str(settings.ssl_keyfile) if settings.ssl_keyfile else None,
                ssl_certfile=str(settings.ssl_certfile) if settings.ssl_certfile else None)


def _drained(signum: int, frame: Any) -> None:
    raise SystemExit(0)
