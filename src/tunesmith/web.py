"""Starting a web server, for `tunesmith serve` and `tunesmith studio serve` alike.

- `bind(host, port)`: the listening address, taken before anything slow happens (a port already in use is an error
  naming --port at once, not after every model has loaded); the socket is handed to Uvicorn (`run`);
- `run(app, sock)`: serve in the foreground until Ctrl-C or SIGTERM (graceful: requests in flight finish);
- `background(app)`: serve on a free port in a thread (tests, benchmarks, the studio demo);
- `claim_folder(folder, ...)`: one server per folder (a lock file that names the server holding it).

Importing this module imports neither FastAPI nor Uvicorn; `uvicorn()` does, with an error that says what to install.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from tunesmith.errors import TunesmithError
from tunesmith.procs import alive

LOOPBACK = ("127.0.0.1", "localhost", "::1")


# The headers every page of the studio and the board carries: scripts and styles only from the app's own /static,
# no framing, no referrer, nothing cached.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "form-action 'self'; connect-src 'self'; base-uri 'none'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


def uvicorn(extra: str = "serve"):
    """The uvicorn module; missing FastAPI or Uvicorn is a TunesmithError naming the extra that installs them."""
    try:
        import fastapi  # noqa: F401
        import uvicorn as module
    except ImportError:
        raise TunesmithError(f"tunesmith {extra} needs FastAPI and Uvicorn: pip install 'tunesmith[{extra}]'") from None
    return module


def bind(host: str, port: int) -> socket.socket:
    """A socket bound to host:port (port 0: a free one), as Uvicorn binds it; not listening yet, so clients are
    refused until the server starts. An address in use or not available is a TunesmithError naming --port/--host."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    if os.name != "nt":  # restart at once on the port just left (on Windows the option would share a busy port)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as err:
        sock.close()
        if err.errno in (errno.EADDRINUSE, getattr(errno, "WSAEADDRINUSE", None)):
            raise TunesmithError(f"--port {port}: the port is already in use on {host} (another server listens "
                                 f"there); stop that server or choose another port, e.g. --port {port + 1}") from None
        if err.errno == errno.EACCES:
            raise TunesmithError(f"--port {port}: not allowed to listen on {host}:{port} (ports below 1024 need "
                                 "administrator rights); choose another port with --port, e.g. --port 8000") from None
        raise TunesmithError(f"--host {host} --port {port}: cannot listen there ({err.strerror or err}); give an "
                             "address of this machine with --host (127.0.0.1: this machine only) or another --port") from None
    return sock


def address(sock: socket.socket) -> str:
    """The base URL of a bound socket: http://host:port."""
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def run(app, sock: socket.socket, extra: str = "serve", **options) -> None:
    """Serve `app` on `sock` until interrupted; Ctrl-C and SIGTERM let the requests in flight (streams too) finish."""
    module = uvicorn(extra)
    config = module.Config(app, log_level=options.pop("log_level", "info"), timeout_graceful_shutdown=None, **options)
    try:
        module.Server(config).run(sockets=[sock])
    finally:
        sock.close()


@contextmanager
def background(app, host: str = "127.0.0.1", log_level: str = "warning", extra: str = "serve"):
    """Serve `app` on a free port of `host` in a thread; yields (base URL "http://host:port", the uvicorn Server).
    On exit the server shuts down gracefully, as on Ctrl-C: requests in flight finish first."""
    module = uvicorn(extra)
    sock = bind(host, 0)  # the kernel picks a free port; no race with other processes
    server = module.Server(module.Config(app, log_level=log_level, timeout_graceful_shutdown=None))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True, name=f"{extra}-uvicorn")
    thread.start()
    deadline = time.time() + 30
    while not server.started:
        if not thread.is_alive() or time.time() > deadline:
            sock.close()
            raise RuntimeError(f"the {extra} server did not start")
        time.sleep(0.02)
    try:
        yield address(sock), server
    finally:
        server.should_exit = True
        thread.join(timeout=60)
        sock.close()


# --- one server per folder -----------------------------------------------------------------------------------------


@contextmanager
def claim_folder(folder: str | Path, what: str, *, host: str, port: int, name: str = "server.lock"):
    """Hold FOLDER/server.lock while serving it: the file names this process (pid, host, port) and is locked by the
    operating system, so a second server on the folder is refused with the first one's pid and port, and a lock left
    by a process that died (killed, crashed) is free again and simply taken over. `what` names the command."""
    path = Path(folder) / name
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        locked = _lock(fd)
        other = _read_lock(path, wait=locked is False)
        if locked is None:  # no OS locks on this file system: held while the pid written there lives (this machine)
            locked = other.get("hostname", socket.gethostname()) != socket.gethostname() or not (alive(other.get("pid")) or other.get("pid") == os.getpid())
        if not locked:
            held = (f"pid {other.get('pid', '?')}, port {other.get('port', '?')}"
                    + (f" on {other['hostname']}" if other.get("hostname") not in (None, socket.gethostname()) else ""))
            host_ = str(other.get("host", "127.0.0.1"))
            url = f"http://{f'[{host_}]' if ':' in host_ else host_}:{other.get('port', '?')}"
            raise TunesmithError(f"{folder}: another `{what}` is already serving this folder ({held}); one server per "
                                 f"folder. Use that one ({url}), or stop it (kill {other.get('pid', 'PID')}) first")
        mine = {"pid": os.getpid(), "host": host, "port": port, "hostname": socket.gethostname(), "started": time.time()}
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps(mine).encode() + b"\n")
    except BaseException:
        os.close(fd)
        raise
    try:
        yield path
    finally:
        try:
            os.ftruncate(fd, 0)  # a reader sees no owner; the lock itself goes with the descriptor
        finally:
            os.close(fd)


def _lock(fd: int) -> bool | None:
    """Take the operating system's lock on an open file without waiting; False when another process holds it, None
    when the file system has no such locks. The lock ends with the process, however it ends."""
    try:
        import fcntl
    except ImportError:  # Windows: lock one byte far past the text, so that readers can still read it
        import msvcrt

        os.lseek(fd, 1 << 20, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        finally:
            os.lseek(fd, 0, os.SEEK_SET)
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        return False if err.errno in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES) else None
    return True


def _read_lock(path: Path, wait: bool = False) -> dict:
    """What the lock file says; with `wait`, give a server that has just taken the lock a moment to write it."""
    for _ in range(20 if wait else 1):
        try:
            found = json.loads(path.read_text() or "{}")
        except (OSError, ValueError):
            found = {}
        if found or not wait:
            break
        time.sleep(0.05)
    return found if isinstance(found, dict) else {}
