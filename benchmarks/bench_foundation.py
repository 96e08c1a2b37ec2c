"""Runs the sentiment and chat-sft configs and prints accuracy / perplexity, tokens/s, peak memory, wall time.

    .venv/bin/python benchmarks/bench_foundation.py [--quick]

Each config runs in its own process (peak memory is per process). Figures are printed, never asserted.
"""

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

CONFIGS = {"sentiment-lora": [], "chat-sft-lora": []}
QUICK = {"sentiment-lora": ["train.num_train_epochs=1"], "chat-sft-lora": ["train.max_steps=20", "eval.max_examples=40"]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer steps (smoke run of the benchmark)")
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {__import__('os').cpu_count()} cores; {time.strftime('%Y-%m-%d')}")
    rows = []
    for name, extra in CONFIGS.items():
        out = Path("runs") / f"bench-{name}"
        cmd = [sys.executable, "-m", "tunesmith.cli", "train", f"configs/{name}.yaml", *extra,
               *(QUICK[name] if args.quick else []), "--out", str(out), "--overwrite"]
        start = time.time()
        subprocess.run(cmd, check=True)
        wall = time.time() - start
        m = json.loads((out / "manifest.json").read_text())
        e = json.loads((out / "eval.json").read_text())
        metric = "accuracy" if "accuracy" in e["tuned"] else "perplexity"
        rows.append((name, metric, e["base"][metric], e["tuned"][metric], m["tokens_per_second"], m["peak_memory"]["peak_rss_mb"], m["train_seconds"], wall))
    print(f"\n{'config':16} {'metric':11} {'base':>8} {'tuned':>8} {'tok/s':>8} {'peak MB':>8} {'train s':>8} {'wall s':>8}")
    for r in rows:
        print(f"{r[0]:16} {r[1]:11} {r[2]:8.4f} {r[3]:8.4f} {r[4]:8.1f} {r[5]:8.0f} {r[6]:8.1f} {r[7]:8.1f}")


if __name__ == "__main__":
    main()
