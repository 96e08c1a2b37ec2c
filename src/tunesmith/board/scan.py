"""Reading run folders for the board: every run under the run directories, one summary row each, a run's metrics
from a byte offset (the live curves), its eval table. Only files inside the roots are read (paths.Roots)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from tunesmith.board.paths import BOARD_DIR, Roots
from tunesmith.procs import alive
from tunesmith.report.tail import appended_records
from tunesmith.runs.folder import is_finished, last_checkpoint, run_marker

PRIMARY = ("accuracy", "rougeL", "preference_accuracy", "reward_accuracy", "reward", "eval_loss")  # as compare's
MAX_RUNS = 2000


def run_folders(roots: Roots) -> list[tuple[str, Path, dict]]:
    """(id, folder, manifest) of every run folder under the roots; symlinked folders are not followed."""
    found = []
    for i, root in enumerate(roots.dirs):
        for here, dirs, _ in os.walk(root, followlinks=False):
            dirs[:] = sorted(d for d in dirs if d != BOARD_DIR and not (Path(here) / d).is_symlink())
            manifest = run_marker(Path(here)) if Path(here) != root else None
            if manifest is not None:
                dirs[:] = []  # a run's own folders (checkpoints, adapter) hold no runs
                found.append((f"{i}/{Path(here).relative_to(root).as_posix()}", Path(here), manifest))
            if len(found) >= MAX_RUNS:
                return found
    return found


def status(folder: Path, manifest: dict) -> str:
    """running, finished, failed, stopped (interrupted: resumable when it has a checkpoint) or unfinished (its
    process died without saying so)."""
    if is_finished(manifest):
        return "finished"
    said = manifest.get("status")
    if said == "running":
        return "running" if alive(manifest.get("pid")) else "unfinished"
    return {"interrupted": "stopped", "failed": "failed"}.get(said, "unfinished")


PREVIEW_BYTES = 2_000_000  # a data_preview.json larger than this is not shown


def read_preview(folder: Path) -> dict | None:
    """The run's data_preview.json (its first training examples as the model saw them), or None: missing (a run
    from before the board), too large, damaged, or a link that leads out of the run folder."""
    from tunesmith.runs.folder import DATA_PREVIEW

    path = folder / DATA_PREVIEW
    try:
        if not path.resolve().is_relative_to(folder.resolve()) or path.stat().st_size > PREVIEW_BYTES:
            return None
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and isinstance(data.get("examples"), list) else None


def read_eval(folder: Path) -> dict:
    try:
        data = json.loads((folder / "eval.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def scalars(d) -> dict:
    if not isinstance(d, dict):
        return {}
    return {k: v for k, v in d.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def key_metric(results: dict) -> str | None:
    present = set(scalars(results.get("tuned")))
    return next((m for m in PRIMARY if m in present), next(iter(sorted(present)), None))


def summary(run_id: str, folder: Path, manifest: dict) -> dict:
    """One row of the runs table."""
    config = manifest.get("started_config") or {}
    results = read_eval(folder)
    metric = key_metric(results)
    memory = manifest.get("peak_memory") or {}
    state = status(folder, manifest)
    last = last_metrics(folder)
    return {
        "id": run_id, "name": run_id.split("/", 1)[1], "status": state,
        "objective": manifest.get("objective"), "method": manifest.get("method"), "base": manifest.get("model"),
        "data": (config.get("data") or {}).get("source"),
        "metric": metric, "metric_base": scalars(results.get("base")).get(metric),
        "metric_tuned": scalars(results.get("tuned")).get(metric),
        "trainable_params": manifest.get("trainable_params"), "train_seconds": manifest.get("train_seconds"),
        "tokens_per_second": manifest.get("tokens_per_second"),
        "peak_memory_mb": memory.get("peak_cuda_mb") or memory.get("peak_rss_mb"),
        "machine": (manifest.get("machine") or {}).get("summary"), "started": manifest.get("started"),
        "step": last.get("step"), "max_steps": (config.get("train") or {}).get("max_steps"),
        "eval_fingerprint": (manifest.get("data_fingerprint") or {}).get("eval"),
        "resumable": state in ("stopped", "unfinished", "failed") and last_checkpoint(folder) is not None,
        "error": manifest.get("error"), "pid": manifest.get("pid"),
    }


def all_runs(roots: Roots) -> list[dict]:
    return [summary(run_id, folder, manifest) for run_id, folder, manifest in run_folders(roots)]


def metrics_from(folder: Path, offset: int = 0, limit: int = 1 << 20) -> tuple[list[dict], int]:
    """The complete lines of metrics.jsonl after byte `offset` (at most `limit` bytes), and the offset after them."""
    return appended_records(folder / "metrics.jsonl", offset, limit)


def last_metrics(folder: Path) -> dict:
    """The last logged row that has a step (read from the end of the file)."""
    try:
        with (folder / "metrics.jsonl").open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 4096))
            lines = fh.read().splitlines()
    except OSError:
        return {}
    for line in reversed(lines):
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and "step" in row:
            return row
    return {}


def pace(rows: list[dict], max_steps) -> dict:
    """Steps per second and seconds left (when train.max_steps says how many steps there are)."""
    timed = [r for r in rows if isinstance(r.get("step"), (int, float)) and isinstance(r.get("time"), (int, float))]
    if not timed or not timed[-1]["time"]:
        return {}
    rate = timed[-1]["step"] / timed[-1]["time"]
    left = (max_steps - timed[-1]["step"]) / rate if isinstance(max_steps, int) and max_steps > 0 and rate else None
    return {"steps_per_second": round(rate, 3), "seconds_left": None if left is None else round(max(left, 0.0), 1)}
