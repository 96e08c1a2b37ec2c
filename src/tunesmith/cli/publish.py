"""`tunesmith push`: a finished run (or an export of it) to a Hugging Face Hub model repo, with its model card."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.markup import escape

from tunesmith.cli.common import TRUST_HELP, app, call, console, setup_logging


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


@app.command()
def push(
    source: Path = typer.Argument(..., help="A finished run folder, or a folder `tunesmith export` wrote."),
    repo: str = typer.Option(..., "--repo", help="The Hub model repo, OWNER/NAME (created if absent)."),
    private: bool = typer.Option(False, "--private", help="Create the repo private (an existing repo keeps its visibility)."),
    revision: Optional[str] = typer.Option(None, "--revision", help="Push to this branch (created if absent) instead of main."),
    merge: bool = typer.Option(False, "--merge", help="A run's LoRA/DoRA/IA3 adapter folded into the base first: a standalone model."),
    dry_run: bool = typer.Option(False, "--dry-run", help="List what would be uploaded, and upload nothing."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help=TRUST_HELP),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
):
    """Upload a run's tuned model to the Hugging Face Hub: its model files, model card and config (never its data,
    checkpoints or metrics). The token comes from HF_TOKEN or `hf auth login`; HF_ENDPOINT names another hub."""
    setup_logging(verbose)
    from tunesmith.report.card import write_card
    from tunesmith.runs.publish import push as push_run

    result = call(push_run, source, repo, private=private, revision=revision, merge=merge, dry_run=dry_run,
                  card=write_card, trust_remote_code=trust_remote_code)
    head = "would upload" if dry_run else "uploaded"
    console.print(f"{head} to [bold]{escape(repo)}[/] ({escape(result['revision'])}):")
    for path, size in result["files"].items():
        note = "  (the model card, written again for this repo)" if path == "README.md" and dry_run else ""
        console.print(f"  {escape(path)}  {_size(size)}{note}", highlight=False)
    if result["left_out"]:
        console.print(f"not uploaded: {escape(', '.join(result['left_out']))}", highlight=False)
    if result["commit_url"]:
        console.print(f"commit: {escape(result['commit_url'])}", highlight=False)
