"""`tunesmith studio ...`: thin commands over the studio package (cli_more.py adds this sub-app to `tunesmith`)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer

from tunesmith.cli.common import TRUST_HELP, Typer, app, call, console, err_console, start

studio_app = Typer(help="The feedback studio: people rate and compare model outputs; export reward/DPO/KTO data.",
                   no_args_is_help=True)
URL = "http://127.0.0.1:8765"
URL_HELP = "The address raters open (where `tunesmith studio serve` listens), used to print links."


@studio_app.command()
def init(
    studio_dir: Path = typer.Argument(..., help="The studio folder (created; a second init adds to it)."),
    prompts: Optional[str] = typer.Option(None, "--prompts", help="Prompts: a file, saved dataset, catalog name or hub id."),
    column: str = typer.Option("prompt", "--column", help="The column of --prompts that holds the prompts."),
    split: Optional[str] = typer.Option(None, "--split", help="Split of --prompts (default: train, or its only split)."),
    limit: Optional[int] = typer.Option(None, "--limit", help="Use the first N distinct prompts."),
    run: Optional[list[str]] = typer.Option(None, "--run", help="A run that answers: RUN_DIR or NAME=RUN_DIR (repeatable)."),
    model: Optional[list[str]] = typer.Option(None, "--model", help="A plain model that answers: catalog name, folder or hub id, or NAME=MODEL (repeatable)."),
    samples: Optional[int] = typer.Option(None, "--samples", "-k", help="K responses per prompt and model [default: 1]."),
    rate: Optional[str] = typer.Option(None, "--rate", help="Single-sided tasks: thumbs, stars or none [default: thumbs]."),
    compare: Optional[bool] = typer.Option(None, "--compare/--no-compare", help="Side-by-side tasks [default: on]."),
    max_new_tokens: Optional[int] = typer.Option(None, "--max-new-tokens", help="[default: 96]"),
    temperature: Optional[float] = typer.Option(None, "--temperature", help="0 is greedy [default: 0.7]."),
    top_p: Optional[float] = typer.Option(None, "--top-p", help="[default: 0.95]"),
    seed: Optional[int] = typer.Option(None, "--seed", help="[default: 0]"),
    generate: bool = typer.Option(True, "--generate/--no-generate", help="Generate the missing responses now (else `serve` does)."),
    url: str = typer.Option(URL, "--url", help=URL_HELP),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help=TRUST_HELP),
):
    """Create a study (or add prompts, models and samples to one) and generate the responses that are missing."""
    from tunesmith.studio.db import db_path
    from tunesmith.studio.study import init_study, parse_model_spec, read_prompts

    specs = [(*call(parse_model_spec, r, "run"), "run") for r in run or []]
    specs += [(*call(parse_model_spec, m, "model"), "model") for m in model or []]
    if prompts is None and not db_path(studio_dir).exists():
        err_console.print("[bold red]error:[/] a new study needs --prompts SOURCE (and --column if it is not 'prompt')")
        raise typer.Exit(2)
    start()
    texts = call(read_prompts, prompts, column, split, limit) if prompts else []
    info = call(init_study, studio_dir, texts, prompts or "", [(n, k, s) for n, s, k in specs], rate=rate,
                compare=compare, samples=samples, max_new_tokens=max_new_tokens, temperature=temperature,
                top_p=top_p, seed=seed)
    console.print(f"{'created' if info['new'] else 'extended'} [bold]{studio_dir}[/]: {info['prompts']} prompts "
                  f"(+{info['added_prompts']}), {info['models']} models (+{len(info['added_models'])}), "
                  f"K={info['samples']}; {info['responses']} of {info['responses_wanted']} responses cached", highlight=False)
    if info["owner_token"]:
        console.print(f"owner page (keep it private; shown once): [bold]{url}/o/{info['owner_token']}[/]", highlight=False)
    if generate:
        _generate(studio_dir, trust_remote_code)
    console.print(f"next: `tunesmith studio rater {studio_dir} NAME` for each rater, then `tunesmith studio serve {studio_dir}`")


def _generate(studio_dir: Path, trust_remote_code: bool) -> None:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from tunesmith.studio.generate import GenerationJob

    job = GenerationJob(studio_dir, trust_remote_code=trust_remote_code).start()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    try:
        with Progress(*columns, console=err_console, transient=True) as bar:
            task = bar.add_task("generating", total=None)
            while job.alive():
                done, total, model = job.progress
                bar.update(task, completed=done, total=total or None, description=f"generating ({model})")
                time.sleep(0.2)
    except KeyboardInterrupt:
        err_console.print("stopping after the chunk in flight... (run init again to carry on)")
        job.stop()
        raise typer.Exit(130) from None
    if job.error is not None:
        call(_raise, job.error)  # a TunesmithError prints as one line (exit 2); anything else with its traceback
    console.print(f"generated {job.result['generated']} responses")


def _raise(err: BaseException):
    raise err


@studio_app.command()
def serve(
    studio_dir: Path = typer.Argument(..., help="A studio folder made by `tunesmith studio init`."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on: this machine only unless you give another (then a warning)."),
    port: int = typer.Option(8765, "--port"),
    generate: bool = typer.Option(True, "--generate/--no-generate", help="Generate missing responses in the background while serving."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help=TRUST_HELP),
):
    """Serve the rater and owner pages (Ctrl-C stops)."""
    from tunesmith.studio.db import open_studio
    from tunesmith.studio.generate import missing_rows

    conn = call(open_studio, studio_dir)
    try:
        gap = missing_rows(conn)
    finally:
        conn.close()
    if generate and gap:
        start()  # models will load: the full logging set-up, which imports transformers
    else:  # nothing to generate: start in about a second
        import logging

        from rich.logging import RichHandler

        logging.basicConfig(level=logging.WARNING, format="%(message)s", handlers=[RichHandler(console=err_console, show_path=False)])
        logging.getLogger("tunesmith").setLevel(logging.INFO)
    from tunesmith.studio.server import serve as run_server

    def ready(generating: int):
        note = f"; generating {generating} missing responses in the background" if generating else ""
        console.print(f"studio [bold]{studio_dir}[/] on http://{host}:{port}{note} (Ctrl-C stops)", highlight=False)

    call(run_server, studio_dir, host=host, port=port, generate=generate, trust_remote_code=trust_remote_code,
         on_ready=ready)


@studio_app.command()
def rater(
    studio_dir: Path = typer.Argument(..., help="A studio folder."),
    name: str = typer.Argument(..., help="The rater's name (shown on the owner page)."),
    new_link: bool = typer.Option(False, "--new-link", help="Give an existing rater a new link (the old one stops working)."),
    url: str = typer.Option(URL, "--url", help=URL_HELP),
):
    """Add a rater and print their personal link (the token is stored hashed: this is the only time it is shown)."""
    from tunesmith.studio.queue import add_rater

    token = call(add_rater, studio_dir, name, new_link)
    console.print(f"{name}: {url}/r/{token}", highlight=False, soft_wrap=True)


@studio_app.command()
def owner(
    studio_dir: Path = typer.Argument(..., help="A studio folder."),
    url: str = typer.Option(URL, "--url", help=URL_HELP),
):
    """Print a new owner link (the old one stops working)."""
    from tunesmith.studio.queue import new_owner_token

    token = call(new_owner_token, studio_dir)
    console.print(f"owner page: {url}/o/{token}", highlight=False, soft_wrap=True)


@studio_app.command()
def export(
    studio_dir: Path = typer.Argument(..., help="A studio folder."),
    fmt: str = typer.Option(..., "--format", help="pairs (reward, dpo), ratings (reward) or kto."),
    out: Path = typer.Option(..., "--out", "-o", help="The JSON Lines file to write."),
    majority: bool = typer.Option(False, "--majority", help="pairs: one row per pair of responses, by majority vote."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace --out if it exists."),
):
    """Write the answers as training data: prompt/chosen/rejected, prompt/response/rating or prompt/completion/label."""
    from tunesmith.studio.export import export as write

    info = call(write, studio_dir, fmt, out, overwrite=overwrite, majority=majority)
    skipped = ", ".join(f"{n} {why}" for why, n in info["skipped"].items()) or "none"
    console.print(f"wrote {info['rows']} {fmt} rows to [bold]{info['out']}[/] (skipped: {skipped})", highlight=False)


app.add_typer(studio_app, name="studio")
