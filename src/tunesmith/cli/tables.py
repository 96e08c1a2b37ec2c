"""The tables the CLI prints with rich: base vs tuned (each change coloured by the metric's direction), probes, and
token-length statistics."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

console = Console()


def fmt(v) -> str:
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def print_side_by_side(results: dict, title: str = "base vs tuned", directions: dict | None = None) -> None:
    """Base vs tuned; each change marked green (better) or red (worse) by the metric's direction."""
    from tunesmith.eval.metrics import direction

    base, tuned = results["base"], results["tuned"]
    directions = directions or results.get("directions")
    table = Table(title=title)
    for col in ("metric", "base", "tuned", "change"):
        table.add_column(col, justify="left" if col == "metric" else "right")
    for name, b in base.items():
        t = tuned.get(name)
        if isinstance(b, (int, float)) and isinstance(t, (int, float)) and name not in ("eval_tokens", "generated_examples"):
            way = direction(name, directions)  # "neither": a description (a length), not a score
            better = (t < b) if way == "min" else (t > b)
            style = "" if way == "neither" else "green" if better else ("red" if t != b else "")
            table.add_row(name, fmt(b), fmt(t), f"[{style}]{t - b:+.4f}[/]" if style else f"{t - b:+.4f}")
    console.print(table)


def print_probes(probes: dict) -> None:
    if not probes.get("inputs"):
        return
    table = Table(title="probes: before and after tuning", show_lines=True)
    for col in ("input", "base", "tuned"):
        table.add_column(col, overflow="fold")
    for row in zip(probes["inputs"], probes["base"], probes["tuned"]):
        table.add_row(*row)
    console.print(table)


def print_stats(stats: dict) -> None:
    table = Table(title="token lengths (before truncation)")
    for col in ("split", "examples", "min", "mean", "p50", "p95", "max", "max_length", "truncated"):
        table.add_column(col, justify="right")
    for split, s in stats.items():
        table.add_row(split, *(str(s[k]) for k in ("examples", "min", "mean", "p50", "p95", "max", "max_length", "truncated")))
    console.print(table)
