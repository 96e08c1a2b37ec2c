"""`--nproc 2` against one process with the same global batch (tokens/s, loss at step k, wall time), and a sweep's
wall time for 4 trials with 1 and 2 workers. Figures are printed with the machine, never asserted; run it on a
quiet machine (nothing else training) for figures worth quoting.

    .venv/bin/python benchmarks/bench_nproc.py            # chat-sft-lora, 30 steps; sweep-sentiment-lora, 4 trials
    .venv/bin/python benchmarks/bench_nproc.py --smoke    # seconds: tiny budgets, 2 trials (checks the script runs)

Each run is its own `tunesmith train` / `tunesmith sweep` process, written under runs/bench-nproc/.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

OUT = Path("runs") / "bench-nproc"


def tunesmith(*args: str) -> float:
    """Run a tunesmith command to its end; its wall time in seconds."""
    start = time.time()
    subprocess.run([sys.executable, "-m", "tunesmith.cli", *args], check=True)
    return time.time() - start


def loss_at(run_dir: Path, step: int) -> float | None:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    losses = {r["step"]: r["loss"] for r in rows if "loss" in r and "step" in r}
    return losses.get(step, losses[max(losses)] if losses else None)


def bench_nproc(config: str, steps: int, batch: int, extra: list[str]) -> list[tuple]:
    rows = []
    for nproc, per_device in ((1, 2 * batch), (2, batch)):
        out = OUT / f"nproc{nproc}"
        wall = tunesmith("train", config, f"train.max_steps={steps}", f"train.per_device_train_batch_size={per_device}",
                         "train.logging_steps=1", *extra, "--out", str(out), "--overwrite", "--nproc", str(nproc))
        m = json.loads((out / "manifest.json").read_text())
        rows.append((nproc, per_device, m["tokens_per_second"], m["train_seconds"], loss_at(out, steps), wall,
                     m["machine"]["summary"]))
    return rows


def bench_sweep(config: str, trials: int, extra: dict) -> list[tuple]:
    raw = yaml.safe_load(Path(config).read_text())
    for key, value in extra.items():  # dotted keys into the config
        section, field = key.split(".")
        raw.setdefault(section, {})[field] = value
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / Path(config).name
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        for workers in (1, 2):
            out = OUT / f"sweep-workers{workers}"
            if out.exists():
                subprocess.run(["rm", "-rf", str(out)], check=True)
            wall = tunesmith("sweep", str(path), "--out", str(out), "--trials", str(trials), "--workers", str(workers))
            summary = json.loads((out / "sweep.json").read_text())
            rows.append((workers, trials, summary["trials_counted"], wall))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--smoke", action="store_true", help="tiny budgets: checks that the script runs, in seconds")
    parser.add_argument("--config", default=None, help="the --nproc config (default configs/chat-sft-lora.yaml)")
    parser.add_argument("--steps", type=int, default=30, help="training steps k; the loss is compared at step k")
    parser.add_argument("--batch", type=int, default=4, help="per-device batch of --nproc 2 (one process: twice it)")
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; {time.strftime('%Y-%m-%d')}")
    if args.smoke:
        config, steps, batch = args.config or "configs/sentiment-lora.yaml", 2, 2
        extra = ["data.train_size=32", "data.eval_size=16", "train.eval_strategy=no", "train.load_best_model_at_end=false"]
        sweep_extra = {"data.train_size": 32, "data.eval_size": 16, "train.max_steps": 2, "train.eval_strategy": "no",
                       "train.eval_steps": None, "sweep.pruning": False}
        trials = 2
    else:
        config, steps, batch, extra, sweep_extra, trials = args.config or "configs/chat-sft-lora.yaml", args.steps, args.batch, [], {}, 4

    rows = bench_nproc(config, steps, batch, extra)
    print(f"\n{config}, {steps} steps, global batch {2 * batch} ({rows[0][6]})")
    print(f"{'processes':>9} {'batch/proc':>10} {'tok/s':>8} {'train s':>8} {f'loss@{steps}':>10} {'wall s':>8}")
    for r in rows:
        print(f"{r[0]:>9} {r[1]:>10} {r[2]:>8.1f} {r[3]:>8.1f} {r[4] if r[4] is None else f'{r[4]:.4f}':>10} {r[5]:>8.1f}")

    sweeps = bench_sweep("configs/sweep-sentiment-lora.yaml", trials, sweep_extra)
    print(f"\nconfigs/sweep-sentiment-lora.yaml, {trials} trials")
    print(f"{'workers':>7} {'trials':>6} {'counted':>7} {'wall s':>8}")
    for r in sweeps:
        print(f"{r[0]:>7} {r[1]:>6} {r[2]:>7} {r[3]:>8.1f}")


if __name__ == "__main__":
    main()
