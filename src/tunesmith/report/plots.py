"""Plots drawn from the run folder's files (metrics.jsonl, eval.json), never from live training state."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _label_metric_axes(ax, xlabel: str, metric: str, higher_is_better: bool) -> None:
    """A metric (y) against a cost or a parameter (x): the axis names, the grid and the legend."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"{metric} ({'higher' if higher_is_better else 'lower'} is better)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


def loss_curves(records: list[dict], path: Path) -> Path | None:
    """Training loss and eval loss against step."""
    train = [(r["step"], r["loss"]) for r in records if "loss" in r]
    evals = [(r["step"], r["eval_loss"]) for r in records if "eval_loss" in r]
    if not train and not evals:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.6))
    if train:
        ax.plot(*zip(*train), label="train loss", color="#1f77b4")
    if evals:
        ax.plot(*zip(*evals), "o-", label="eval loss", color="#d62728")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def eval_metric_curve(records: list[dict], metric: str, path: Path) -> Path | None:
    """An eval metric (e.g. accuracy) against epoch."""
    points = [(r["epoch"], r[f"eval_{metric}"]) for r in records if f"eval_{metric}" in r]
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(*zip(*points), "o-", color="#2ca02c")
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"eval {metric}")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def confusion(matrix: list[list[int]], labels: list[str], title: str, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(3.8, 3.4))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    top = max(max(row) for row in matrix) or 1
    for i, row in enumerate(matrix):
        for j, v in enumerate(row):
            ax.text(j, i, str(v), ha="center", va="center", color="white" if v > top / 2 else "black")
    return _save(fig, path)


def pareto_front(points: list[tuple[float, float]], higher_is_better: bool) -> list[tuple[float, float]]:
    """The points no other point beats on both cost (x, lower is better) and metric (y)."""
    front, best = [], None
    for x, y in sorted(points, key=lambda p: (p[0], -p[1] if higher_is_better else p[1])):
        if best is None or (y > best if higher_is_better else y < best):
            front.append((x, y))
            best = y
    return front


def tradeoff(rows: list[dict], cost: str, cost_label: str, metric: str, higher_is_better: bool, path: Path,
             log_x: bool = False) -> Path | None:
    """The task metric against a cost (trainable parameters, seconds, memory), one labelled point per run, with
    the Pareto front."""
    points = [(r[cost], r["tuned"][metric], r["name"]) for r in rows if r.get(cost) and metric in r.get("tuned", {})]
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.scatter([p[0] for p in points], [p[1] for p in points], color="#1f77b4", zorder=3)
    for x, y, name in points:
        ax.annotate(name, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    front = pareto_front([(p[0], p[1]) for p in points], higher_is_better)
    ax.step([p[0] for p in front], [p[1] for p in front], where="post", color="#d62728", alpha=0.7)
    ax.scatter([p[0] for p in front], [p[1] for p in front], s=120, facecolors="none", edgecolors="#d62728",
               label="Pareto front", zorder=4)
    if log_x:
        ax.set_xscale("log")
    _label_metric_axes(ax, cost_label, metric, higher_is_better)
    return _save(fig, path)


def overlaid_losses(curves: dict[str, list[tuple[float, float]]], path: Path) -> Path | None:
    """Training loss of several runs against epoch, on one plot."""
    curves = {name: points for name, points in curves.items() if points}
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, points in curves.items():
        ax.plot(*zip(*points), label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("train loss")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def forgetting_bars(rows: list[dict], path: Path) -> Path | None:
    """Change of each general benchmark's score after tuning, grouped by run (below zero: forgotten)."""
    rows = [r for r in rows if r.get("forgetting")]
    if not rows:
        return None
    tasks = sorted({t for r in rows for t in r["forgetting"]})
    width = 0.8 / len(tasks)
    fig, ax = plt.subplots(figsize=(6, 4))
    for j, task in enumerate(tasks):
        ax.bar([i + j * width for i in range(len(rows))], [r["forgetting"].get(task, 0) for r in rows], width, label=task)
    ax.set_xticks([i + width * (len(tasks) - 1) / 2 for i in range(len(rows))], [r["name"] for r in rows], rotation=30, ha="right")
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_ylabel("tuned - base (normalized accuracy)")
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    return _save(fig, path)


def metric_vs_parameter(points: list[tuple], parameter: str, metric: str, higher_is_better: bool, path: Path,
                        log_x: bool = False, categories: list[str] | None = None, integer: bool = False) -> Path | None:
    """A sweep's metric against one parameter: (value, metric, state) per trial, the completed trials filled,
    the pruned ones hollow (at their last eval), the best ringed; `categories` puts values on a category axis."""
    import textwrap

    from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

    points = [p for p in points if p[1] is not None]
    if not points:
        return None
    fig, ax = plt.subplots(figsize=(4.2, 3.2))
    x = (lambda v: categories.index(v)) if categories else (lambda v: v)
    for state, style in (("complete", {"color": "#1f77b4"}), ("pruned", {"facecolors": "none", "edgecolors": "#888"})):
        chosen = [(x(v), y) for v, y, s in points if s == state]
        if chosen:
            ax.scatter(*zip(*chosen), label=state, zorder=3, **style)
    done = [(x(v), y) for v, y, s in points if s == "complete"]
    if done:
        bx, by = (max if higher_is_better else min)(done, key=lambda p: p[1])
        ax.scatter([bx], [by], s=160, facecolors="none", edgecolors="#d62728", label="best", zorder=4)
    if categories:
        ax.set_xticks(range(len(categories)), [textwrap.fill(c, 20) for c in categories], fontsize=7)
        ax.set_xlim(-0.5, len(categories) - 0.5)
    elif log_x:
        ax.set_xscale("log")
        ax.xaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))  # 1e-4, 2e-4, 5e-4, 1e-3 ...
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
    if integer and not categories:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    _label_metric_axes(ax, parameter, metric, higher_is_better)
    return _save(fig, path)
