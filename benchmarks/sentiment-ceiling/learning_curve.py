"""How much labelled data does minilm-l6 need to reach 0.80 on this rotten_tomatoes split?

    .venv/bin/python benchmarks/sentiment-ceiling/learning_curve.py [SIZE ...]   (default 2000 4000 11808)

Trains the shipped recipe (configs/sentiment-lora.yaml: LoRA r=8 on q/k/v/dense, lr 3e-4, cosine, batch 16,
3 epochs, best epoch kept) with more and more training examples and always the same 1,000 validation examples
(the split holds the eval set out first, with the config's seed, then takes `data.train_size` of the rest;
11,808 is all of it). It is a diagnostic of the issue-2 target, not a recipe: the shipped configs keep 1,000.
The sizes run as one `tunesmith compare` (a variant per size) under runs/learning-curve; finished runs are
re-used. Figures are printed, never asserted.
"""

import sys
from pathlib import Path

from tunesmith.experiments.compare import compare
from tunesmith.config import read_yaml
from tunesmith.report.runlog import read_metrics

ROOT = Path(__file__).resolve().parents[2]


def main() -> None:
    sizes = [int(s) for s in sys.argv[1:]] or [2000, 4000, 11808]
    raw = read_yaml(ROOT / "configs" / "sentiment-lora.yaml")
    raw["eval"]["probes"] = []
    raw["compare"] = [{"name": str(n), "method": raw["method"], "overrides": {"data.train_size": n}} for n in sizes]
    summary = compare(raw, out=ROOT / "runs" / "learning-curve")
    print("\n| train examples | accuracy (best epoch) | F1 | per epoch | train s |\n|---|---|---|---|---|")
    for r in summary["rows"]:
        if r["status"] != "ok":
            print(f"| {r['name']} | failed: {r['error'][:80]} | | | |")
            continue
        per_epoch = " / ".join(f"{m['eval_accuracy']:.3f}" for m in read_metrics(Path(r["run_dir"])) if "eval_accuracy" in m)
        print(f"| {int(r['name']):,} | {r['tuned']['accuracy']:.3f} | {r['tuned']['f1']:.3f} | {per_epoch} | {r['train_seconds']:.0f} |")


if __name__ == "__main__":
    main()
