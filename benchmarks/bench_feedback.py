"""Learning from human feedback, measured: the reward, DPO, KTO and RLHF configs, each metric base -> tuned, speed,
peak memory and wall time.

    .venv/bin/python benchmarks/bench_feedback.py [--only reward-pairs,dpo-stereoset] [--quick]

Each config trains in its own process (`tunesmith train`, or `tunesmith pipeline` for the RLHF chain) into
runs/bench-feedback/<name>; finished runs are trained again. Figures are printed (and written to
runs/bench-feedback/bench.json), never asserted. State the machine with them: the first line prints it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

# name -> (config, the metrics shown, quick overrides)
RUNS = {
    "reward-pairs": ("configs/reward-pairs.yaml", ["reward_accuracy", "reward_margin"], ["train.num_train_epochs=1"]),
    "reward-ratings": ("configs/reward-ratings.yaml", ["accuracy", "pearson", "spearman"], ["data.train_size=500"]),
    "dpo-stereoset": ("configs/dpo-stereoset.yaml", ["rewards/accuracies", "logps_accuracy", "meaningful_accuracy",
                                                     "rewards/margins"], ["train.max_steps=10"]),
    "kto": (None, ["rewards/margins", "logps_accuracy", "loss"], ["train.max_steps=10"]),
    "rlhf-positive-reviews": ("configs/rlhf-positive-reviews.yaml", ["reward", "kl", "length"], []),
}
OUT = Path("runs") / "bench-feedback"


def machine() -> str:
    import torch

    from tunesmith.modeling import machine as facts

    return facts(False)["summary"].rsplit(";", 1)[0] + f"; torch {torch.__version__}"


def run(name: str, config: str, quick: bool) -> list[dict]:
    out = OUT / name
    if config.endswith("rlhf-positive-reviews.yaml"):
        cmd = [sys.executable, "-m", "tunesmith.cli", "pipeline", config, "--out", str(out), "--rerun"]
    else:
        cmd = [sys.executable, "-m", "tunesmith.cli", "train", config, *(RUNS[name][2] if quick else []),
               "--out", str(out), "--overwrite"]
    start = time.time()
    subprocess.run(cmd, check=True)
    wall = time.time() - start
    folders = [out / s["stage"] for s in json.loads((out / "pipeline.json").read_text())["stages"]] \
        if (out / "pipeline.json").exists() else [out]
    rows = []
    for folder in folders:
        m = json.loads((folder / "manifest.json").read_text())
        e = json.loads((folder / "eval.json").read_text())
        shown = [k for k in RUNS[name][1] if k in e["tuned"]] or [k for k in e["tuned"] if isinstance(e["tuned"][k], float)][:3]
        rows.append({"run": folder.name if folder != out else name, "objective": m["objective"], "method": m["method"],
                     "metrics": {k: (e["base"].get(k), e["tuned"].get(k)) for k in shown},
                     "tokens_per_second": m.get("tokens_per_second"), "train_steps": m.get("train_steps"),
                     "seconds_per_step": round(m["train_seconds"] / max(1, m.get("train_steps") or 1), 2),
                     "train_seconds": m["train_seconds"], "peak_rss_mb": m["peak_memory"].get("peak_rss_mb"),
                     "wall_seconds": round(wall, 1) if folder == folders[-1] else None})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", help="comma-separated names of " + ", ".join(RUNS))
    parser.add_argument("--quick", action="store_true", help="fewer steps: a smoke run of the benchmark")
    args = parser.parse_args()
    kto = sorted(Path("configs").glob("kto-*.yaml"))
    RUNS["kto"] = (str(kto[0]) if kto else None, *RUNS["kto"][1:])
    names = args.only.split(",") if args.only else list(RUNS)
    print(f"machine: {machine()}; {time.strftime('%Y-%m-%d')}")
    rows = []
    for name in names:
        if RUNS[name][0] is None:
            print(f"{name}: no config found; skipped")
            continue
        rows += run(name, RUNS[name][0], args.quick)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "bench.json").write_text(json.dumps({"machine": machine(), "rows": rows}, indent=2) + "\n")
    print(f"\n| run | objective | metric: base -> tuned | tokens/s | s/step | train s | peak RSS MB | wall s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        metrics = "; ".join(f"{k} {b:.3f} -> {t:.3f}" for k, (b, t) in r["metrics"].items()
                            if isinstance(b, (int, float)) and isinstance(t, (int, float)))
        print(f"| {r['run']} | {r['objective']} / {r['method']} | {metrics} | {r['tokens_per_second'] or 0:.0f} | "
              f"{r['seconds_per_step']:.2f} | {r['train_seconds']:.0f} | {r['peak_rss_mb'] or 0:,.0f} | "
              f"{r['wall_seconds'] if r['wall_seconds'] is not None else ''} |")


if __name__ == "__main__":
    main()
