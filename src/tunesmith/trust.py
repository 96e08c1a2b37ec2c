"""The --trust-remote-code of the command that is running, for the duration of a call: code that a config names (a
reward function's module) runs only inside `trusting(True)`. The commands that train or evaluate set it; hooks that
are not handed the flag read it with `trusted()` / `trust_decided()`."""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar

_TRUSTED: ContextVar[bool | None] = ContextVar("tunesmith_trust_remote_code", default=None)


@contextmanager
def trusting(trusted: bool):
    """Within the block, code that a config names (a reward function's module) may run if `trusted`: the person
    running the command said so (--trust-remote-code). The commands that train or evaluate (and so would run it) set
    this; hooks that are not handed the flag read it with trusted() / trust_decided()."""
    token = _TRUSTED.set(bool(trusted))
    try:
        yield
    finally:
        _TRUSTED.reset(token)


def trusted() -> bool:
    return bool(_TRUSTED.get())


def trust_decided() -> bool | None:
    """True or False inside `trusting` (a command that will run the reward); None outside (validate, preview),
    where nothing is run and the flag is not asked for."""
    return _TRUSTED.get()
