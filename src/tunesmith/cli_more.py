"""More `tunesmith` commands, kept out of cli.py so each file stays short: they use cli.py's app and helpers.
Each command is thin: it parses, calls the code that does the work, and prints."""

from __future__ import annotations

from pathlib import Path  # noqa: F401
from typing import Optional  # noqa: F401

import typer

from tunesmith.cli import TRUST_HELP, _run, _start, app, console, err_console  # noqa: F401


@app.command()
def pipeline(
    config: Path = typer.Argument(..., help="A pipeline file: stages, each a config, in order (e.g. configs/rlhf-positive-reviews.yaml)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Pipeline folder (default runs/<file stem>)."),
    rerun: bool = typer.Option(False, "--rerun", help="Train finished stages again instead of skipping them."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help=TRUST_HELP),
):
    """Run named stages in order (sft, reward model, RL...), each a run that may start from an earlier one."""
    from rich.table import Table

    from tunesmith.stages import read_stages

    _run(read_stages, config)  # a mistake in the file is reported before torch loads
    _start()
    from rich.progress import Progress

    from tunesmith.stages import run_pipeline

    with Progress(console=err_console, transient=True) as bar:
        task = bar.add_task("pipeline", total=None)

        def progress(i, total, name):
            bar.update(task, total=total, completed=i, description=f"stage {name} ({i + 1}/{total})")

        summary = _run(run_pipeline, config, out=out, rerun=rerun, progress=progress, trust_remote_code=trust_remote_code)
    table = Table(title="pipeline")
    for col in ("stage", "objective", "method", "status", "train s", "what it bought (base → tuned)"):
        table.add_column(col)
    for s in summary["stages"]:
        directions = s.get("directions") or {}
        bought = ", ".join(f"{m} {s['base'][m]:.3f} → {v:.3f}" for m, v in (s.get("tuned") or {}).items()
                           if m in directions and isinstance(v, (int, float)) and isinstance(s["base"].get(m), (int, float)))
        table.add_row(s["stage"], s.get("objective") or "", s.get("method") or "",
                      "skipped (finished before)" if s["skipped"] else "trained",
                      f"{s['train_seconds']:.0f}" if s.get("train_seconds") is not None else "", bought)
    console.print(table)
    console.print(f"pipeline folder: [bold]{out or Path('runs') / config.stem}[/] (report.html, pipeline.json)")


def validate_pipeline(path: Path, overrides) -> None:
    from tunesmith.stages import checkable_config, pending_runs, read_stages

    stages = _run(read_stages, path)
    _start()
    from tunesmith import api
    from tunesmith.config import load_config

    out = Path("runs") / path.stem
    for stage in stages:
        raw = checkable_config(stage, stages, out)
        waiting = pending_runs(stage, out)
        if waiting:  # its data checks read those runs: the config alone now, the rest when the stage starts
            cfg = _run(load_config, raw, list(overrides or []))
            console.print(f"[green]ok[/] stage {stage['name']}: {cfg.method.name} / {cfg.objective.name} (the config; "
                          f"its data is checked when {', '.join(waiting)} has run)", highlight=False)
            continue
        info = _run(api.validate, raw, list(overrides or []))
        cfg = info["config"]
        console.print(f"[green]ok[/] stage {stage['name']}: {cfg.method.name} / {cfg.objective.name} on "
                      f"{cfg.model.name}; splits {info['splits']}", highlight=False)
