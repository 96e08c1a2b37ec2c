"""Running the app under Uvicorn: `serve` in the foreground (the CLI), `background` in a thread (tests, benchmarks).

Uvicorn's shutdown is graceful: on Ctrl-C or SIGTERM it stops accepting connections, lets the requests in flight
(streams included) finish, then returns; the model workers finish what they hold before the process ends.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from contextlib import contextmanager

from tunesmith.errors import TunesmithError

log = logging.getLogger("tunesmith")
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _uvicorn():
    try:
        import fastapi  # noqa: F401
        import uvicorn
    except ImportError:
        raise TunesmithError("tunesmith serve needs FastAPI and Uvicorn: pip install 'tunesmith[serve]'") from None
    return uvicorn


def serve(specs, models=(), *, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
          trust_remote_code: bool = False, on_ready=None) -> None:
    """Load the runs and models, then serve them until interrupted (Ctrl-C finishes the requests in flight).
    `on_ready(registry)` is called once the models are loaded, before the port opens."""
    uvicorn = _uvicorn()
    from tunesmith.serve.app import create_app
    from tunesmith.serve.registry import load_registry

    registry = load_registry(specs, models, trust_remote_code=trust_remote_code)
    if on_ready is not None:
        on_ready(registry)
    if host not in LOOPBACK and not api_key:
        log.warning("Serving on %s without an API key: anyone who reaches this address can use the models "
                    "(set --api-key or TUNESMITH_API_KEY)", host)
    try:
        config = uvicorn.Config(create_app(registry, api_key), host=host, port=port, log_level="info",
                                timeout_graceful_shutdown=None)
        uvicorn.Server(config).run()
    finally:
        registry.close()


@contextmanager
def background(app, host: str = "127.0.0.1", log_level: str = "warning"):
    """Serve `app` on a free port of `host` in a thread; yields (base URL "http://host:port", the uvicorn Server).
    On exit the server shuts down gracefully, as on Ctrl-C: requests in flight finish first."""
    uvicorn = _uvicorn()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, 0))  # the kernel picks a free port; no race with other processes
    server = uvicorn.Server(uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=None))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name="uvicorn")
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        if not thread.is_alive() or time.time() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://{host}:{sock.getsockname()[1]}", server
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        sock.close()
