"""`tunesmith compare / bench / pipeline / sweep`: experiments made of several runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from tunesmith.cli.common import TRUST_HELP, app, call, console, err_console, setup_logging, start
from tunesmith.cli.tables import fmt


@app.command()
def compare(
    config: Path = typer.Argument(..., help="YAML config of the task; its compare: section lists variants unless --methods."),
    overrides: Optional[list[str]] = typer.Argument(None, help="Dotted overrides for every variant, e.g. train.num_train_epochs=1"),
    methods: Optional[str] = typer.Option(None, "--methods", help="Comma-separated methods, e.g. full,head,lora (each with its defaults)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Comparison folder (default runs/compare-<config stem>)."),
    rerun: bool = typer.Option(False, "--rerun", help="Train finished variants again instead of skipping them."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help=TRUST_HELP),
):
    """Run the same task under several methods (same data, seed, budget); write compare.json and compare.html."""
    start(config=config, overrides=overrides)
    from rich.progress import Progress

    from tunesmith.experiments.compare import compare as run_compare

    names = [m.strip() for m in methods.split(",") if m.strip()] if methods else None
    with Progress(console=err_console, transient=True) as bar:
        task = bar.add_task("compare", total=None)

        def progress(i, total, name):
            bar.update(task, total=total, completed=i, description=f"training {name} ({i + 1}/{total})")

        summary = call(run_compare, config, names, out=out, rerun=rerun, overrides=list(overrides or []), progress=progress,
                       trust_remote_code=trust_remote_code)
    metric = summary["metric"]
    table = Table(title=f"comparison on {metric}")
    for col in ("run", f"{metric} base", f"{metric} tuned", "trainable", "train s", "tokens/s", "peak MB", "forgetting"):
        table.add_column(col, justify="left" if col == "run" else "right")
    for r in summary["rows"]:
        if r["status"] != "ok":
            table.add_row(r["name"], f"[red]failed: {r['error']}[/]", *[""] * 6)
            continue
        forget = r["forgetting_mean"]
        table.add_row(r["name"], fmt(r["base"].get(metric)), fmt(r["tuned"].get(metric)), f"{r['trainable_params']:,}",
                      f"{r['train_seconds']:.0f}", f"{r['tokens_per_second']:.0f}", f"{r['peak_memory_mb']:,.0f}",
                      "–" if forget is None else f"{forget:+.4f}")
    console.print(table)
    folder = out or Path("runs") / f"compare-{config.stem}"
    console.print(f"comparison folder: [bold]{folder}[/] (compare.html, compare.json)")


@app.command()
def bench(
    model_or_run: str = typer.Argument(..., help="A run folder (scores base and tuned), or a model: catalog name, local folder or hub id."),
    tasks: str = typer.Option(..., "--tasks", help="Comma-separated: boolq, openbookqa, commonsenseqa, mmlu, or files/datasets with question, choices, answer."),
    limit: Optional[int] = typer.Option(None, "--limit", min=1, help="Questions per task: the first N after a seeded shuffle (the same for every model)."),
    shots: int = typer.Option(0, "--shots", min=0, help="Solved examples of the same task before each question (k-shot)."),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="(context, choice) pairs per forward pass."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="JSON file (default RUN_DIR/bench.json for a run, else bench-<model>.json here)."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help=TRUST_HELP),
):
    """Multiple-choice benchmarks scored by log-likelihood (acc, acc_norm) for a model, or a run's base and tuned model."""
    setup_logging()
    import time

    import tunesmith.api as api

    task_names = [t.strip() for t in tasks.split(",") if t.strip()]
    if out is None:
        from tunesmith.runs.start import is_run_folder

        is_run = is_run_folder(model_or_run)
        out = Path(model_or_run) / "bench.json" if is_run else Path(f"bench-{Path(model_or_run.rstrip('/')).name}.json")
    if out.exists() and not _is_bench_file(out):
        err_console.print(f"[bold red]error:[/] --out {out}: exists and is not a `tunesmith bench` result; refusing to overwrite it. "
                          "Choose another --out")
        raise typer.Exit(2)
    start = time.time()
    results = call(api.bench, model_or_run, task_names, limit=limit, shots=shots, batch_size=batch_size,
                   trust_remote_code=trust_remote_code)
    seconds = time.time() - start
    sides = list(results)
    table = Table(title=f"{model_or_run}: {shots}-shot multiple choice, scored by log-likelihood")
    table.add_column("task")
    table.add_column("n", justify="right")
    for side in sides:
        for metric in ("acc", "acc_norm"):
            table.add_column(metric if side == "model" else f"{side} {metric}", justify="right")
    if sides == ["base", "tuned"]:
        table.add_column("change (acc_norm)", justify="right")
    for task, first in results[sides[0]].items():
        cells = [fmt(results[side][task][m]) for side in sides for m in ("acc", "acc_norm")]
        if sides == ["base", "tuned"]:
            cells.append(f"{results['tuned'][task]['acc_norm'] - first['acc_norm']:+.4f}")
        table.add_row(task, str(first["n"]), *cells)
    console.print(table)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    console.print(f"wrote [bold]{out}[/] ({seconds:.1f} s)")


def _is_bench_file(path: Path) -> bool:
    """A JSON file that `tunesmith bench` wrote (it may be replaced by a new result)."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and bool(data) and set(data) <= {"base", "tuned", "model"}


@app.command()
def pipeline(
    config: Path = typer.Argument(..., help="A pipeline file: stages, each a config, in order (e.g. configs/rlhf-positive-reviews.yaml)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Pipeline folder (default runs/<file stem>)."),
    rerun: bool = typer.Option(False, "--rerun", help="Train finished stages again instead of skipping them."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help=TRUST_HELP),
):
    """Run named stages in order (sft, reward model, RL...), each a run that may start from an earlier one."""
    from rich.table import Table

    from tunesmith.experiments.stages import read_stages

    call(read_stages, config)  # a mistake in the file is reported before torch loads
    start()
    from rich.progress import Progress

    from tunesmith.experiments.stages import run_pipeline

    with Progress(console=err_console, transient=True) as bar:
        task = bar.add_task("pipeline", total=None)

        def progress(i, total, name):
            bar.update(task, total=total, completed=i, description=f"stage {name} ({i + 1}/{total})")

        summary = call(run_pipeline, config, out=out, rerun=rerun, progress=progress, trust_remote_code=trust_remote_code)
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
    from tunesmith.experiments.stages import checkable_config, pending_runs, read_stages

    stages = call(read_stages, path)
    start()
    import tunesmith.api as api
    from tunesmith.config import load_config

    out = Path("runs") / path.stem
    for stage in stages:
        raw = checkable_config(stage, stages, out)
        waiting = pending_runs(stage, out)
        if waiting:  # its data checks read those runs: the config alone now, the rest when the stage starts
            cfg = call(load_config, raw, list(overrides or []))
            console.print(f"[green]ok[/] stage {stage['name']}: {cfg.method.name} / {cfg.objective.name} (the config; "
                          f"its data is checked when {', '.join(waiting)} has run)", highlight=False)
            continue
        info = call(api.validate, raw, list(overrides or []))
        cfg = info["config"]
        console.print(f"[green]ok[/] stage {stage['name']}: {cfg.method.name} / {cfg.objective.name} on "
                      f"{cfg.model.name}; splits {info['splits']}", highlight=False)


@app.command()
def sweep(
    config: Path = typer.Argument(..., help="A run config with a sweep: section (e.g. configs/sweep-sentiment-lora.yaml)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Sweep folder (default runs/sweep-<config stem>); run the sweep again to continue it."),
    trials: Optional[int] = typer.Option(None, "--trials", min=1, help="Trials to finish (default: sweep.trials)."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help=TRUST_HELP),
):
    """Search hyperparameters with Optuna: each trial a run in its own process; writes sweep.json and sweep.html."""
    start(config=config)
    from rich.markup import escape
    from rich.progress import Progress
    from rich.table import Table

    from tunesmith.cli.tables import fmt
    from tunesmith.experiments.sweep import sweep as run_sweep

    try:
        with Progress(console=err_console, transient=True) as bar:
            task = bar.add_task("sweep", total=None)

            def progress(done, total, number):
                bar.update(task, total=total, completed=done, description=f"trial {number} ({done + 1}/{total})")

            summary = call(run_sweep, config, out=out, trials=trials, progress=progress,
                           trust_remote_code=trust_remote_code)
    except KeyboardInterrupt:
        err_console.print("sweep interrupted; the trial in flight will be retried: run the same command to continue",
                          highlight=False)
        raise typer.Exit(130) from None
    best, keys = (summary["best"] or {}).get("number"), list(summary["parameters"])
    short = [k.split(".")[-1] for k in keys]  # learning_rate, r, target_modules: the full keys head sweep.html
    table = Table(title=f"sweep on {summary['metric']} ({summary['direction']}; best marked *)")
    for col in ("trial", "state", summary["metric"], *(short if len(set(short)) == len(short) else keys), "train s"):
        table.add_column(col, justify="right" if col != "state" else "left", overflow="fold")
    for t in summary["trials"]:
        table.add_row(f"{t['number']}{' *' if t['number'] == best else ''}", t["state"],
                      "–" if t["value"] is None else fmt(t["value"]),
                      *[escape(f"{v:.3g}" if isinstance(v := t["labels"].get(k, ""), float) else str(v)) for k in keys],
                      "" if t["train_seconds"] is None else f"{t['train_seconds']:.0f}")
    console.print(table)
    if summary["importances"]:
        console.print("importances: " + ", ".join(f"{k} {v:.2f}" for k, v in summary["importances"].items()))
    console.print(f"sweep folder: [bold]{summary['folder']}[/] (sweep.html, sweep.json)")


