"""Serving a studio under Uvicorn: `serve` in the foreground (the CLI), `background` in a thread (tests, the demo).

`serve` binds 127.0.0.1 unless told otherwise, and warns when it is told otherwise: the links are the only key,
and over plain HTTP anyone on the network path can read them. One server per study folder: `serve` holds the
folder's server.lock (tunesmith.web.claim_folder) and refuses to start beside another server, naming its pid and
port. Responses still missing are generated in a background thread while the app serves (raters answer what
exists; their queue grows), unless generate=False.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from pathlib import Path

from tunesmith import web
from tunesmith.web import LOOPBACK

log = logging.getLogger("tunesmith")


def host_warning(host: str) -> str | None:
    if host in LOOPBACK:
        return None
    return (f"serving on {host}, not only this machine: anyone who can reach it and holds a link can rate, and over "
            "plain HTTP the links travel unencrypted; put it behind HTTPS (a reverse proxy) or keep --host 127.0.0.1")


def serve(studio_dir: str | Path, host: str = "127.0.0.1", port: int = 8765, generate: bool = True,
          trust_remote_code: bool = False, on_ready=None) -> None:
    """Serve the studio until interrupted; with `generate`, fill in missing responses meanwhile. The folder's lock
    and the port are taken before anything else, so a second server or a busy port is refused at once."""
    web.uvicorn("studio")
    from tunesmith.studio.app import create_app
    from tunesmith.studio.db import open_studio
    from tunesmith.studio.generate import GenerationJob, missing_rows

    conn = open_studio(studio_dir)  # a folder that holds no studio is refused before it gets a lock file
    try:
        gap = missing_rows(conn)
    finally:
        conn.close()
    with web.claim_folder(studio_dir, "tunesmith studio serve", host=host, port=port):
        sock = web.bind(host, port)
        job = GenerationJob(studio_dir, trust_remote_code=trust_remote_code).start() if generate and gap else None
        warning = host_warning(host)
        if warning:
            log.warning(warning)
        if on_ready is not None:
            on_ready(gap if job else 0)
        try:
            web.run(create_app(studio_dir, generation=job), sock, "studio", log_level="warning")
        finally:
            if job is not None:
                job.stop(timeout=120)


@contextmanager
def background(app, host: str = "127.0.0.1"):
    """Serve `app` on a free port in a thread; yields the base URL. Shuts down gracefully on exit."""
    with web.background(app, host, extra="studio") as (url, _):
        yield url
