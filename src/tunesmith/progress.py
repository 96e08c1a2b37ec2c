"""Progress bars for work a user waits on (benchmarks, generation metrics, rollouts, constitution generation, GGUF
conversion): tqdm, as transformers, datasets and huggingface_hub use, always on stderr.

A bar is shown when stderr is a terminal, or for long work (`long=True`: a job that runs for minutes, whose log
file should say how far it got; there a bar redraws at most every LOG_INTERVAL seconds). TUNESMITH_PROGRESS=1
shows every bar, TUNESMITH_PROGRESS=0 none (the variable wins over both rules)."""

from __future__ import annotations

import os
import sys

ENV = "TUNESMITH_PROGRESS"
LOG_INTERVAL = 30.0  # seconds between redraws when stderr is not a terminal (a log file)


def _forced() -> bool | None:
    value = os.environ.get(ENV, "").strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    return None


def _terminal() -> bool:
    isatty = getattr(sys.stderr, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


def shown(long: bool = False) -> bool:
    """Whether a bar for this work is drawn: TUNESMITH_PROGRESS if set, else a terminal or long work."""
    forced = _forced()
    return forced if forced is not None else (_terminal() or long)


def bar(iterable=None, *, total: int | None = None, desc: str | None = None, unit: str = "it", long: bool = False,
        **options):
    """A tqdm bar on stderr (a disabled one, which costs nothing, where `shown` says no); use as tqdm: iterate, or
    `with bar(total=n) as b: b.update(k)`."""
    from tqdm.auto import tqdm

    terminal = _terminal()
    options.setdefault("mininterval", 0.1 if terminal else LOG_INTERVAL)
    return tqdm(iterable, total=total, desc=desc, unit=unit, file=sys.stderr, disable=not shown(long),
                dynamic_ncols=terminal, **options)
