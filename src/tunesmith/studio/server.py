"""Serving a studio under Uvicorn: `serve` in the foreground (the CLI), `background` in a thread (tests, the demo).

`serve` binds 127.0.0.1 unless told otherwise, and warns when it is told otherwise: the links are the only key,
and over plain HTTP anyone on the network path can read them. Responses still missing are generated in a
background thread while the app serves (raters answer what exists; their queue grows), unless generate=False.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from tunesmith.errors import TunesmithError

log = logging.getLogger("tunesmith")
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _uvicorn():
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError:
        raise TunesmithError("tunesmith studio needs FastAPI and Uvicorn: pip install 'tunesmith[studio]'") from None
    return uvicorn


def host_warning(host: str) -> str | None:
    if host in LOOPBACK:
        return None
    return (f"serving on {host}, not only this machine: anyone who can reach it and holds a link can rate, and over "
            "plain HTTP the links travel unencrypted; put it behind HTTPS (a reverse proxy) or keep --host 127.0.0.1")


def serve(studio_dir: str | Path, host: str = "127.0.0.1", port: int = 8765, generate: bool = True,
          trust_remote_code: bool = False, on_ready=None) -> None:
    """Serve the studio until interrupted; with `generate`, fill in missing responses meanwhile."""
    uvicorn = _uvicorn()
    from tunesmith.studio.app import create_app
    from tunesmith.studio.db import open_studio
    from tunesmith.studio.generate import GenerationJob, missing_rows

    conn = open_studio(studio_dir)
    try:
        gap = missing_rows(conn)
    finally:
        conn.close()
    job = GenerationJob(studio_dir, trust_remote_code=trust_remote_code).start() if generate and gap else None
    warning = host_warning(host)
    if warning:
        log.warning(warning)
    if on_ready is not None:
        on_ready(gap if job else 0)
    try:
        config = uvicorn.Config(create_app(studio_dir, generation=job), host=host, port=port, log_level="warning")
        uvicorn.Server(config).run()
    finally:
        if job is not None:
            job.stop(timeout=120)


@contextmanager
def background(app, host: str = "127.0.0.1"):
    """Serve `app` on a free port in a thread; yields the base URL. Shuts down gracefully on exit."""
    uvicorn = _uvicorn()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="studio-uvicorn")
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        if not thread.is_alive() or time.time() > deadline:
            raise RuntimeError("the studio server did not start")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
