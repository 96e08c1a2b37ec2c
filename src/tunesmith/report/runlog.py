"""The run folder's files: metrics.jsonl (written by report.metrics_log during training), manifest.json, eval.json.
Light on purpose: the CLI reads run folders before it imports torch."""

from __future__ import annotations

import json
import platform
import sys
from importlib import metadata
from pathlib import Path


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
    rss = _peak_rss_bytes()
    out = {} if rss is None else {"peak_rss_mb": round(rss / 2**20, 1)}
    import torch

    if torch.cuda.is_available():
        out["peak_cuda_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


def _peak_rss_bytes() -> int | None:
    """The process's peak resident set: getrusage on POSIX; without the `resource` module (Windows) psutil's peak
    working set (psutil comes with accelerate), else its current RSS; None when neither can tell."""
    try:
        import resource
    except ImportError:
        try:
            import psutil
        except ImportError:
            return None
        info = psutil.Process().memory_info()
        return getattr(info, "peak_wset", info.rss)
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb * 1024 if sys.platform != "darwin" else kb  # macOS reports bytes, Linux kilobytes


def write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")


def read_json(path: Path) -> dict:
    from tunesmith.runs import read_json_file

    return read_json_file(path, f"; is {Path(path).parent} a tunesmith run folder (made by `tunesmith train`)?")
