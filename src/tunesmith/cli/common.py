"""What every `tunesmith` command shares: the app, the consoles, `call` (a TunesmithError prints as one line and
exits 2), `start` (check what can be checked before torch loads, then set up logging), and shared help texts.
The commands themselves live beside this module, one module per group; cli/__init__.py imports them."""

from __future__ import annotations

import inspect
import logging
import os
import warnings
from pathlib import Path

import typer
from rich.console import Console
from rich.logging import RichHandler
from rich.markup import escape
from typer.models import ParameterInfo

from tunesmith.errors import TunesmithError


class Typer(typer.Typer):
    """typer.Typer whose help texts are text: Typer reads them as Rich markup, which ate any bracketed part
    ('[default: 96]', 'method.target_modules=[query,value]'). Every command's docstring or help and every
    parameter's help is escaped when the command is registered, so no help text needs escaping by hand."""

    def __init__(self, *args, help: str | None = None, **kwargs):  # noqa: A002 (typer's own name)
        super().__init__(*args, help=escape(help) if help else help, **kwargs)

    def command(self, name: str | None = None, *, help: str | None = None, **kwargs):  # noqa: A002
        register = super().command

        def decorator(fn):
            for param in inspect.signature(fn).parameters.values():
                info = param.default
                if isinstance(info, ParameterInfo) and info.help and not getattr(info, "_escaped", False):
                    info.help, info._escaped = escape(info.help), True
            text = help if help is not None else inspect.getdoc(fn)
            return register(name, help=escape(text) if text else text, **kwargs)(fn)

        return decorator


app = Typer(help="Fine-tune pretrained language models and measure what each method bought and cost.",
            no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
console = Console()
err_console = Console(stderr=True)


def setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(message)s", handlers=[RichHandler(console=err_console, show_path=False)])
    logging.getLogger("tunesmith").setLevel(logging.DEBUG if verbose else logging.INFO)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import datasets
    import transformers

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()  # weight-loading bars; the Trainer keeps its own
    hub_progress_bars()  # that call also silenced huggingface_hub's: downloads (models, datasets) show theirs
    warnings.filterwarnings("ignore", category=FutureWarning)
    datasets.logging.set_verbosity_error()
    datasets.disable_progress_bars()


def hub_progress_bars() -> None:
    """huggingface_hub's download bars on again (HF_HUB_DISABLE_PROGRESS_BARS=1 still wins): transformers'
    disable_progress_bar() turns them off with its own. The hub draws them only where stderr is a terminal."""
    from huggingface_hub.utils import are_progress_bars_disabled, enable_progress_bars

    from tunesmith.progress import shown

    if shown() and are_progress_bars_disabled() and os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS") is None:
        enable_progress_bars()


def start(verbose: bool = False, *, config: Path | None = None, overrides=None, runs: list[Path] = ()) -> None:
    """Check what can be checked without torch and transformers (the config, the run folders) so that a mistake is
    reported in about a second; then set up logging, which imports them."""
    if config is not None:
        from tunesmith.config import load_config

        quiet = logging.getLogger("tunesmith")
        level, quiet.level = quiet.level, logging.ERROR  # notes are logged once, when the command reads it again
        try:
            call(load_config, config, list(overrides or []))
        finally:
            quiet.setLevel(level)
    if runs:
        from tunesmith.runs import check_run_folder

        for run_dir in runs:
            call(check_run_folder, run_dir)
    setup_logging(verbose)


def call(fn, *args, **kwargs):
    """Call the API; a TunesmithError prints as one message without a traceback and exits 2."""
    try:
        return fn(*args, **kwargs)
    except TunesmithError as err:
        err_console.print(f"[bold red]error:[/] {err}", highlight=False, markup=True, soft_wrap=True)
        raise typer.Exit(2) from None


def fail(message: str):
    raise TunesmithError(message)


TRUST_HELP = ("Let the model run the Python code that ships with it (its auto_map). Off unless given here: a config's "
              "model.trust_remote_code alone never runs code.")


