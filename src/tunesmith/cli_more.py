"""More `tunesmith` commands, kept out of cli.py so each file stays short: they use cli.py's app and helpers.
Each command is thin: it parses, calls the code that does the work, and prints."""

from __future__ import annotations

from pathlib import Path  # noqa: F401
from typing import Optional  # noqa: F401

import typer

from tunesmith.cli import TRUST_HELP, _run, _start, app, console, err_console  # noqa: F401
