"""Running the app under Uvicorn: `serve` in the foreground (the CLI); `background` (from tunesmith.web) in a thread
for tests and benchmarks.

The port is taken first, before any model loads, so a port in use is reported at once. Uvicorn's shutdown is
graceful: on Ctrl-C or SIGTERM it stops accepting connections, lets the requests in flight (streams included)
finish, then returns; the model workers finish what they hold before the process ends.
"""

from __future__ import annotations

import logging

from tunesmith.web import LOOPBACK, background, bind, run, uvicorn

__all__ = ["serve", "background"]
log = logging.getLogger("tunesmith")


def serve(specs, models=(), *, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None,
          trust_remote_code: bool = False, limits=None, batching=None, sock=None, on_ready=None,
          dtype: str | None = None) -> None:
    """Load the runs and models, then serve them until interrupted (Ctrl-C finishes the requests in flight).
    `limits` (serve.limits.Limits) caps what one request may ask; `batching` (serve.batching.Batching) says how
    requests share a model (batch size and window, queue, timeout); `sock`: a socket already bound to host:port (the
    CLI binds it before anything else), else it is bound here before the models load. `on_ready(registry)` is called
    once the models are loaded, before the port opens. `dtype` (registry.serve_dtype): every model's weights cast to
    it (None: as each run loads them)."""
    uvicorn("serve")
    sock = sock if sock is not None else bind(host, port)
    try:
        from tunesmith.serve.app import create_app
        from tunesmith.serve.registry import load_registry

        registry = load_registry(specs, models, trust_remote_code=trust_remote_code, batching=batching, dtype=dtype)
    except BaseException:
        sock.close()
        raise
    try:
        if on_ready is not None:
            on_ready(registry)
        if host not in LOOPBACK and not api_key:
            log.warning("Serving on %s without an API key: anyone who reaches this address can use the models "
                        "(set --api-key or TUNESMITH_API_KEY)", host)
        run(create_app(registry, api_key, limits), sock, "serve")
    finally:
        registry.close()
