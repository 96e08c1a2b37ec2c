"""Child processes, in one place: whether a pid is alive, dying with the parent that started us, and the line of a
child's log that says why it failed."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path


def alive(pid) -> bool:
    """Whether `pid` is a live process other than this one. A zombie (exited, not yet reaped: an orphaned --nproc
    worker in a container without an init) is not alive; a process of another user is."""
    if not isinstance(pid, int) or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[-1][:1] != "Z"
    except OSError:
        return True


def die_with_parent(sig: int | None = None) -> None:
    """Ask Linux to send `sig` (default SIGKILL) to this process when its parent dies (elsewhere: nothing). Used as
    a child's preexec_fn (see `parent_death_hook`) and at the start of each worker, so that killing `tunesmith train
    --nproc N` takes torchrun and the workers down, and a killed sweep does not leave a trial training on unseen."""
    import ctypes
    import signal

    if not sys.platform.startswith("linux"):
        return
    sig = signal.SIGKILL if sig is None else sig
    parent = os.getppid()
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, sig)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the request took effect
        os.kill(os.getpid(), sig)


def answer_ctrl_c() -> None:
    """Make SIGINT raise KeyboardInterrupt again where this process inherited it ignored. A shell ignores SIGINT in
    the jobs it starts with `&` (and Python then keeps it ignored), so a board's Stop or `kill -INT` would reach a
    run that never ends as "interrupted"; a job in the background gets no Ctrl-C from the terminal either way."""
    import signal

    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def parent_death_hook(sig: int | None = None):
    """The preexec_fn that makes a child process get `sig` when this process dies: `die_with_parent` on POSIX, None
    elsewhere (subprocess refuses preexec_fn on Windows)."""
    return functools.partial(die_with_parent, sig) if os.name == "posix" else None


def error_line(log_path: Path, returncode: int | None) -> str:
    """Why a child process failed, from the log it wrote: its last line that starts with 'error:' or names an
    Error, else its last line, else the exit status."""
    try:
        text = Path(log_path).read_text(errors="replace")
    except OSError:
        text = ""
    lines = [line for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:") or "Error" in line]
    return (errors[-1] if errors else lines[-1] if lines else f"exit status {returncode}").strip()
