"""`tunesmith constitution`: answer, critique, revise by principles; train on it; measure."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from tunesmith.cli.common import TRUST_HELP, app, call, console, err_console, start
from tunesmith.cli.tables import fmt


@app.command()
def constitution(
    config: Path = typer.Argument(..., help="A constitution config: constitution, policy, critic, prompts, generation, stages (e.g. configs/constitutional-ai.yaml)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder (default runs/<config stem>)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace generated examples made with other prompts or settings."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help=TRUST_HELP),
):
    """Constitutional AI: answer -> critique -> revise by principles, train sft then dpo on it, measure base vs tuned."""
    from tunesmith.experiments.constitution.recipe import read_config, read_constitution

    cfg = call(read_config, config)  # a mistake in the config or the constitution is reported before torch loads
    call(read_constitution, cfg.constitution)
    start()
    from tunesmith.experiments.constitution.recipe import run_constitution

    result = call(run_constitution, config, out=out, overwrite=overwrite, trust_remote_code=trust_remote_code,
                  progress=lambda what: err_console.print(f"constitution: {what}"))
    table = Table(title=f"held-out prompts, base → tuned (critic: {result['critic']})")
    for col in ("prompts", "measure", "better", "base", "tuned"):
        table.add_column(col, justify="left" if col in ("prompts", "measure") else "right")
    for kind, m in result["measures"].items():
        for metric, base in m["base"].items():
            better = {"max": "higher", "min": "lower"}.get(result["directions"][kind].get(metric), "–")
            table.add_row(f"{kind} (n={m['n']})", metric, better, fmt(base), fmt(m["tuned"][metric]))
    console.print(table)
    d = result["data"]
    console.print(f"data: {d['examples']} examples ({d['generated']} generated now), {d['sft']} sft rows, {d['pairs']} pairs; "
                  f"folder: [bold]{out or Path('runs') / config.stem}[/] (report.md, constitution.json)")
