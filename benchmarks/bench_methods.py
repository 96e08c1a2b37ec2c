"""Every method on the sentiment task: accuracy, F1, trainable parameters, training seconds, peak memory.

    .venv/bin/python benchmarks/bench_methods.py [--rerun] [overrides...]

Runs `tunesmith compare configs/compare-sentiment.yaml` (minilm-l6, rotten_tomatoes 1,000 train / 1,000
validation, seed 42, 3 epochs, best epoch kept; each method with its usual learning rate, see the config),
each method in its own process, then prints a Markdown table. Finished runs are re-used unless --rerun.
Figures are printed, never asserted. qlora is not in the config: it needs a CUDA GPU.
"""

import argparse
import os
import platform
import time

from tunesmith.experiments.compare import compare


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("overrides", nargs="*", help="dotted overrides for every method, e.g. train.num_train_epochs=1")
    parser.add_argument("--rerun", action="store_true")
    parser.add_argument("--out", default="runs/bench-methods")
    args = parser.parse_args()
    import torch

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{'GPU ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU'}; torch {torch.__version__}; "
          f"{time.strftime('%Y-%m-%d')}")
    start = time.time()
    summary = compare("configs/compare-sentiment.yaml", out=args.out, rerun=args.rerun, overrides=args.overrides)
    print(f"\nwall {time.time() - start:.0f} s; details in {args.out}/compare.html\n")
    print("| method | accuracy | F1 | trainable params | % of total | train s | peak RSS MB |\n|---|---|---|---|---|---|---|")
    for r in summary["rows"]:
        if r["status"] != "ok":
            print(f"| {r['name']} | failed: {r['error'][:80]} | | | | | |")
            continue
        print(f"| {r['name']} | {r['tuned']['accuracy']:.3f} | {r['tuned']['f1']:.3f} | {r['trainable_params']:,} | "
              f"{r['trainable_percent']:.3f} | {r['train_seconds']:.0f} | {r['peak_memory_mb']:,.0f} |")


if __name__ == "__main__":
    main()
