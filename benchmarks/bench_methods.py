"""Every method on the sentiment task: accuracy, F1, trainable parameters, training seconds, peak memory.

    .venv/bin/python benchmarks/bench_methods.py [--methods full,lora,...] [--epochs 3]

Same data (minilm-l6, rotten_tomatoes 1,000 train / 1,000 validation, seed 42), same epochs, batch size and
schedule as configs/sentiment-lora.yaml; only the method and its learning rate change (each method's usual
range: full fine-tuning wants a small rate, soft prompts and IA3 a large one). The best epoch is kept, as in
the config. Each method runs in its own process, so peak memory is per method. qlora needs a CUDA GPU and is
skipped without one. Figures are printed and written to runs/bench-methods/results.json, never asserted.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

METHODS = {  # method block, learning rate
    "full": ("{name: full}", 5e-5),
    "freeze": ("{name: freeze, top_k_layers: 2}", 1e-4),
    "head": ("{name: head}", 1e-3),
    "features": ("{name: features, pooling: mean, classifier: logistic}", None),
    "lora": (None, None),  # exactly configs/sentiment-lora.yaml
    "dora": ("{name: dora, r: 8, lora_alpha: 16, lora_dropout: 0.1, target_modules: [query, key, value, output.dense, intermediate.dense], modules_to_save: [pooler]}", None),
    "adapter": ("{name: adapter, bottleneck: 64, modules_to_save: [pooler]}", 1e-3),
    "ia3": ("{name: ia3, modules_to_save: [pooler]}", 1e-2),
    "prompt": ("{name: prompt, num_virtual_tokens: 20, modules_to_save: [pooler]}", 1e-2),
    "prefix": ("{name: prefix, num_virtual_tokens: 20, modules_to_save: [pooler]}", 1e-2),
    "qlora": ("{name: qlora, r: 8, lora_alpha: 16, target_modules: [query, key, value, output.dense, intermediate.dense]}", None),
}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset")
    parser.add_argument("--epochs", type=float, default=3)
    parser.add_argument("--out", default="runs/bench-methods")
    args = parser.parse_args()
    import torch

    cpu = platform.processor() or platform.machine()
    print(f"machine: {cpu}, {os.cpu_count()} cores, {'GPU ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU'}; "
          f"torch {torch.__version__}; {time.strftime('%Y-%m-%d')}")
    rows, root = [], Path(args.out)
    for name in args.methods.split(","):
        block, lr = METHODS[name]
        if name == "qlora" and not torch.cuda.is_available():
            print(f"{name}: skipped (needs a CUDA GPU)")
            continue
        overrides = [f"train.num_train_epochs={args.epochs}"]
        overrides += [f"method={block}"] if block else []
        overrides += [f"train.learning_rate={lr}"] if lr else []
        out = root / name
        cmd = [sys.executable, "-m", "tunesmith.cli", "train", "configs/sentiment-lora.yaml", *overrides, "--out", str(out), "--overwrite"]
        print("$", " ".join(cmd[1:]), flush=True)
        start = time.time()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            print(f"{name}: FAILED\n{proc.stderr[-2000:]}")
            rows.append({"method": name, "error": proc.stderr[-500:]})
            continue
        m = json.loads((out / "manifest.json").read_text())
        e = json.loads((out / "eval.json").read_text())
        rows.append({"method": name, "accuracy": e["tuned"]["accuracy"], "f1": e["tuned"]["f1"], "base_accuracy": e["base"]["accuracy"],
                     "trainable_params": m["trainable_params"], "trainable_percent": m["trainable_percent"],
                     "train_seconds": m["train_seconds"], "peak_rss_mb": m["peak_memory"].get("peak_rss_mb"),
                     "wall_seconds": round(time.time() - start, 1), "learning_rate": lr})
        print(json.dumps(rows[-1]), flush=True)
    root.mkdir(parents=True, exist_ok=True)
    (root / "results.json").write_text(json.dumps(rows, indent=2))
    print("\n| method | accuracy | F1 | trainable params | % | train s | peak RSS MB |\n|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['method']} | failed | | | | | |")
        else:
            print(f"| {r['method']} | {r['accuracy']:.3f} | {r['f1']:.3f} | {r['trainable_params']:,} | {r['trainable_percent']:.3f} "
                  f"| {r['train_seconds']:.0f} | {r['peak_rss_mb']:,.0f} |")


if __name__ == "__main__":
    main()
