"""The relevance workbench: a web page at ``/ui`` that compares rankings through the public REST API alone.

Its assets are plain HTML, CSS and JavaScript modules in ``static/`` (no framework, no build step, no CDN: the
service runs offline), shipped as package data and served as they are. The page holds no secret: it asks for an API
key, sends it as the API's other clients do, and a search-scoped key is enough. A content security policy keeps
every request of the page on this server.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

STATIC = Path(__file__).resolve().parent / "static"
POLICY = (b"default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; "
          b"frame-ancestors 'none'; base-uri 'self'; form-action 'self'")


class _Headers:
    """The policy and no sniffing on every asset; the page is small, so browsers revalidate it each load."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"content-security-policy", POLICY),
                                      (b"x-content-type-options", b"nosniff"), (b"cache-control", b"no-cache")]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def mount_workbench(app: FastAPI) -> None:
    """``GET /ui`` (redirected to ``/ui/``) serves the page, ``/ui/NAME`` its assets."""
    app.mount("/ui", _Headers(StaticFiles(directory=STATIC, html=True)), name="ui")
