"""How much labelled data does minilm-l6 need to reach 0.80 on this rotten_tomatoes split?

    .venv/bin/python benchmarks/sentiment-ceiling/learning_curve.py [SIZE ...]   (default 1000 2000 4000 11808)

Trains the shipped recipe (configs/sentiment-lora.yaml: LoRA r=8 on q/k/v/dense, lr 3e-4, cosine, batch 16,
3 epochs, best epoch kept) with more and more training examples and always the same 1,000 validation examples
(the split holds the eval set out first, with the config's seed, then takes `data.train_size` of the rest;
11,808 is all of it). It is a diagnostic of the issue-2 target, not a recipe: the shipped configs keep 1,000.
Each size is one `tunesmith train` run under runs/learning-curve/<size>; finished runs are re-used.
Figures are printed, never asserted.
"""

import json
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    sizes = [int(s) for s in sys.argv[1:]] or [1000, 2000, 4000, 11808]
    print(f"machine: {platform.processor() or platform.machine()}, 2-core CPU; {time.strftime('%Y-%m-%d')}")
    rows = []
    for n in sizes:
        out = ROOT / "runs" / "learning-curve" / str(n)
        if not (out / "eval.json").exists():
            cmd = [sys.executable, "-m", "tunesmith.cli", "train", str(ROOT / "configs" / "sentiment-lora.yaml"),
                   f"data.train_size={n}", "eval.probes=[]", "--out", str(out), "--overwrite"]
            subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        e = json.loads((out / "eval.json").read_text())
        m = json.loads((out / "manifest.json").read_text())
        per_epoch = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        per_epoch = [r["eval_accuracy"] for r in per_epoch if "eval_accuracy" in r]
        rows.append((m.get("train_examples", n), e["tuned"]["accuracy"], e["tuned"]["f1"], per_epoch, m["train_seconds"]))
    print("\n| train examples | accuracy (best epoch) | F1 | per epoch | train s |\n|---|---|---|---|---|")
    for n, acc, f1, per_epoch, secs in rows:
        print(f"| {n:,} | {acc:.3f} | {f1:.3f} | {' / '.join(f'{a:.3f}' for a in per_epoch)} | {secs:.0f} |")


if __name__ == "__main__":
    main()
