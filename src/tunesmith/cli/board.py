"""`tunesmith board`: one local web page to start, watch, compare and talk to runs (tunesmith.board)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from tunesmith.cli.common import TRUST_HELP, app, call, console


@app.command()
def board(
    run_dirs: Optional[list[Path]] = typer.Argument(None, help="Folders that hold run folders (searched recursively) [default: runs]."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on: this machine only unless you give another (then a warning)."),
    port: int = typer.Option(8766, "--port"),
    configs: Optional[Path] = typer.Option(None, "--configs", help="A folder of YAML configs offered on the start page [default: ./configs when it exists]."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help=TRUST_HELP),
):
    """Serve the board: the runs under RUN_DIRS, live curves, start/stop/resume, compare, try a run (Ctrl-C stops;
    the runs it started go on)."""
    import logging

    from rich.logging import RichHandler

    from tunesmith.board.server import serve
    from tunesmith.cli.common import err_console

    logging.basicConfig(level=logging.WARNING, format="%(message)s", handlers=[RichHandler(console=err_console, show_path=False)])
    logging.getLogger("tunesmith").setLevel(logging.INFO)
    dirs = list(run_dirs or [Path("runs")])
    if not run_dirs:
        Path("runs").mkdir(exist_ok=True)
    if configs is None and Path("configs").is_dir():
        configs = Path("configs")

    def ready(url: str):
        console.print(f"board of {', '.join(map(str, dirs))}: open [bold]{url}[/] (the token is the key; Ctrl-C stops)",
                      highlight=False, soft_wrap=True)

    call(serve, dirs, host=host, port=port, configs_dir=configs, trust_remote_code=trust_remote_code, on_ready=ready)
