"""The `tunesmith` command. Each module adds its group of commands to the one app in cli/common.py."""

from tunesmith.cli import board, constitution, experiments, publish, run, serve, studio  # noqa: F401  (each adds its commands)
from tunesmith.cli.common import app

__all__ = ["app", "main"]


def main() -> None:  # pragma: no cover
    import sys

    sys.exit(app())
