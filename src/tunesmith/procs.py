"""Child processes, in one place: whether a pid is alive, dying with the parent that started us."""

from __future__ import annotations

import os
import sys


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies (elsewhere: nothing). Used as torchrun's preexec_fn
    and at the start of each worker, so that killing `tunesmith train --nproc N` takes torchrun and the workers down."""
    import ctypes
    import signal

    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the request took effect
        os.kill(os.getpid(), signal.SIGKILL)


