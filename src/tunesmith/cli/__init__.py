"""The `tunesmith` command. Each module adds its group of commands to the one app in cli/common.py."""

from tunesmith.cli import board, constitution, experiments, publish, run, serve, studio  # noqa: F401  (each adds its commands)
from tunesmith.cli.common import app

__all__ = ["app", "main"]


def main() -> None:  # pragma: no cover
    import sys

    from tunesmith.procs import answer_ctrl_c

    answer_ctrl_c()  # Ctrl-C, a board's Stop and `kill -INT` stop a run even when it was started with `&`
    sys.exit(app())
