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
    "dpo-stereoset": ("configs/dpo-stereoset.yaml", ["preference_accuracy", "chosen_over_unrelated", "perplexity"],
                      ["train.max_steps=10"]),
    "kto": (None, ["ranking_accuracy", "logp_gap", "perplexity"], ["train.max_steps=10"]),
    "rlhf-positive-reviews": ("configs/rlhf-positive-reviews.yaml", ["perplexity", "accuracy", "pearson", "reward",
                                                                     "kl", "length"], []),
}
OUT = Path("runs") / "bench-feedback"


def machine() -> str:
    import torch

    from tunesmith.hardware import machine as facts

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
    return collect(name, time.time() - start)


def collect(name: str, wall: float | None) -> list[dict]:
    """One row per run folder of `name` (each stage of a pipeline), read from its manifest.json and eval.json."""
    out = OUT / name
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
                     "wall_seconds": round(wall, 1) if wall and folder == folders[-1] else None})
        if m["objective"] == "rl":  # RL's cost is generation: completion tokens per second of training
            rows[-1]["tokens_per_second"] = generated_per_second(folder, m)
    return rows


def generated_per_second(folder: Path, manifest: dict) -> float | None:
    """Completion tokens generated per second of training: the mean completion length logged in metrics.jsonl
    (TRL: completions/mean_length; ppo: length) x completions per step x steps / train seconds."""
    import yaml

    logs = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line.strip()]
    lengths = [r.get("completions/mean_length", r.get("length")) for r in logs]
    lengths = [x for x in lengths if isinstance(x, (int, float))]
    batch = yaml.safe_load((folder / "config.yaml").read_text())["train"]["per_device_train_batch_size"]
    if not lengths or not manifest.get("train_seconds"):
        return None
    return round(sum(lengths) / len(lengths) * batch * manifest["train_steps"] / manifest["train_seconds"], 1)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--only", help="comma-separated names of " + ", ".join(RUNS))
    parser.add_argument("--quick", action="store_true", help="fewer steps: a smoke run of the benchmark")
    parser.add_argument("--table", action="store_true", help="train nothing: the table of the runs already in "
                        f"{OUT} (wall times from its bench.json)")
    args = parser.parse_args()
    kto = sorted(Path("configs").glob("kto-*.yaml"))
    RUNS["kto"] = (str(kto[0]) if kto else None, *RUNS["kto"][1:])
    names = args.only.split(",") if args.only else list(RUNS)
    print(f"machine: {machine()}; {time.strftime('%Y-%m-%d')}")
    if args.table:
        walls = {r["run"]: r["wall_seconds"] for r in json.loads((OUT / "bench.json").read_text())["rows"]} \
            if (OUT / "bench.json").exists() else {}
        rows = [r for name in names if (OUT / name).exists() for r in collect(name, None)]
        for r in rows:
            r["wall_seconds"] = walls.get(r["run"])
    else:
        rows = []
        for name in names:
            if RUNS[name][0] is None:
                print(f"{name}: no config found; skipped")
                continue
            rows += run(name, RUNS[name][0], args.quick)
        OUT.mkdir(parents=True, exist_ok=True)
        old = json.loads((OUT / "bench.json").read_text())["rows"] if (OUT / "bench.json").exists() else []
        done = {r["run"] for r in rows}
        rows = [r for r in old if r["run"] not in done] + rows  # a run measured alone keeps the others' rows
        (OUT / "bench.json").write_text(json.dumps({"machine": machine(), "rows": rows}, indent=2) + "\n")
    print("\n| run | objective | metric: base -> tuned | tokens/s (RL: generated) | s/step | train s | peak RSS MB | wall s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        metrics = "; ".join(f"{k} {b:.3f} -> {t:.3f}" for k, (b, t) in r["metrics"].items()
                            if isinstance(b, (int, float)) and isinstance(t, (int, float)))
        print(f"| {r['run']} | {r['objective']} / {r['method']} | {metrics} | {r['tokens_per_second'] or 0:.0f} | "
              f"{r['seconds_per_step']:.2f} | {r['train_seconds']:.0f} | {r['peak_rss_mb'] or 0:,.0f} | "
              f"{r['wall_seconds'] if r['wall_seconds'] is not None else ''} |")


if __name__ == "__main__":
    main()
