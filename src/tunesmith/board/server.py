"""Serving the board under Uvicorn: `serve` in the foreground (the CLI), `background` in a thread (tests).

`serve` binds the port first (127.0.0.1 unless --host, with a warning otherwise: the token is the only key, and over
plain HTTP it travels unencrypted), then builds the app and prints the address with its token."""

from __future__ import annotations

import logging
import secrets
from contextlib import contextmanager
from pathlib import Path

from tunesmith import web
from tunesmith.web import LOOPBACK

log = logging.getLogger("tunesmith")


def host_warning(host: str) -> str | None:
    if host in LOOPBACK:
        return None
    return (f"serving on {host}, not only this machine: anyone who can reach it and holds the token can start and stop "
            "runs, and over plain HTTP the token travels unencrypted; put it behind HTTPS or keep --host 127.0.0.1")


def serve(run_dirs, host: str = "127.0.0.1", port: int = 8766, configs_dir: Path | None = None,
          trust_remote_code: bool = False, on_ready=None) -> None:
    """Serve the board until interrupted; `on_ready(url_with_token)` is called once the port is bound."""
    web.uvicorn("board")
    from tunesmith.board.app import create_app

    sock = web.bind(host, port)
    token = secrets.token_urlsafe(24)
    app = create_app(run_dirs, token=token, configs_dir=configs_dir, trust_remote_code=trust_remote_code)
    warning = host_warning(host)
    if warning:
        log.warning(warning)
    if on_ready is not None:
        on_ready(f"{web.address(sock)}/?token={token}")
    web.run(app, sock, "board", log_level="warning")


@contextmanager
def background(app, host: str = "127.0.0.1"):
    """Serve `app` on a free port in a thread; yields the base URL (without the token)."""
    with web.background(app, host, extra="board") as (url, _):
        yield url
