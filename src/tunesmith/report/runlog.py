"""The run folder's files: metrics.jsonl streamed during training, manifest.json, eval.json."""

from __future__ import annotations

import json
import platform
import resource
import sys
import time
from importlib import metadata
from pathlib import Path

import torch
from transformers import TrainerCallback


class MetricsLog(TrainerCallback):
    """Appends every Trainer log (loss, learning rate, eval metrics) to metrics.jsonl as it happens."""

    def __init__(self, path: Path):
        self.path = path
        self.start = time.time()

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not logs or not state.is_world_process_zero:
            return
        record = {"step": state.global_step, "epoch": round(state.epoch or 0, 4), "time": round(time.time() - self.start, 2)}
        record.update({k: v for k, v in logs.items() if isinstance(v, (int, float))})
        with self.path.open("a") as fh:
            fh.write(json.dumps(record) + "\n")


def read_metrics(run_dir: Path) -> list[dict]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def versions() -> dict:
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("tunesmith", "torch", "transformers", "peft", "trl", "datasets", "accelerate"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def peak_memory_mb() -> dict:
    """Peak resident memory of this process (CPU) and peak allocated CUDA memory, in MB."""
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = {"peak_rss_mb": round(rss_kb / (1024 if sys.platform != "darwin" else 1024 * 1024), 1)}
    if torch.cuda.is_available():
        out["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


def write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")


def read_json(path: Path) -> dict:
    from tunesmith.runs import read_json_file

    return read_json_file(path, f"; is {Path(path).parent} a tunesmith run folder (made by `tunesmith train`)?")
