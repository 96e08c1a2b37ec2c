"""Rank-adaptive LoRA on the sentiment task: one DyLoRA run cut to ranks 1, 2, 4, 8 against a separate LoRA run at
each rank, and one AdaLoRA run.

    .venv/bin/python benchmarks/rank_adaptive.py [--rerun] [--out runs/rank-adaptive] [overrides...]

Every run is configs/sentiment-lora.yaml (minilm-l6, rotten_tomatoes 1,000 train / 1,000 validation, seed 42,
lr 3e-4, cosine, batch 16, lora_alpha 16, the same target modules) with the method swapped, and without evaluation
during training or best-epoch selection (AdaLoRA's ranks change while it trains, so an earlier checkpoint does not
load back; every run here keeps its last step instead, to compare like with like). The DyLoRA run (r_min 1, r_max 8)
is evaluated at each rank with `tunesmith.methods.dylora.run_at_rank` (the same adapter `tunesmith export RUN
--rank K` writes). Overrides apply to every run (e.g. train.num_train_epochs=1 for a quick look). Finished runs are
re-used unless --rerun. Figures are printed, never asserted.
"""

import argparse
import os
import platform
import time
from pathlib import Path

from tunesmith import api
from tunesmith.config import load_config
from tunesmith.config_io import apply_overrides, read_yaml
from tunesmith.errors import TunesmithError
from tunesmith.methods.dylora import run_at_rank

CONFIG = "configs/sentiment-lora.yaml"
RANKS = (1, 2, 4, 8)
SAME = {"train.eval_strategy": "no", "train.load_best_model_at_end": False, "train.metric_for_best_model": None}
TARGETS = ["query", "key", "value", "output.dense", "intermediate.dense"]


def method(name: str, **options) -> dict:
    return {"name": name, "lora_alpha": 16, "lora_dropout": 0.1, "target_modules": TARGETS,
            "modules_to_save": ["pooler"], **options}


VARIANTS = {
    **{f"lora-r{k}": method("lora", r=k) for k in RANKS},
    "dylora-r1-8": method("dylora", r_min=1, r_max=8),
    "adalora-12-to-8": method("adalora", init_r=12, target_r=8),
}


def train(name: str, out: Path, rerun: bool, overrides: list[str]):
    folder = out / name
    if not rerun:
        try:
            return api.load_run(folder)
        except TunesmithError:  # absent, unfinished or damaged: train it (again)
            pass
    raw = apply_overrides(read_yaml(CONFIG), SAME)
    raw["method"] = VARIANTS[name]
    cfg = load_config(raw, list(overrides))
    start = time.time()
    run = api.train(cfg, out=folder, overwrite=True)
    print(f"  {name}: {time.time() - start:.0f} s", flush=True)
    return run


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("overrides", nargs="*", help="dotted overrides for every run, e.g. train.num_train_epochs=1")
    parser.add_argument("--rerun", action="store_true")
    parser.add_argument("--out", default="runs/rank-adaptive")
    args = parser.parse_args()
    import torch

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"{'GPU ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU'}; torch {torch.__version__}; "
          f"{time.strftime('%Y-%m-%d')}; overrides: {args.overrides or 'none'}", flush=True)
    out, start = Path(args.out), time.time()
    runs = {name: train(name, out, args.rerun, args.overrides) for name in VARIANTS}
    dylora = runs["dylora-r1-8"]
    at_rank = {k: run_at_rank(dylora, k).evaluate()["tuned"] for k in RANKS}
    print(f"\nwall {time.time() - start:.0f} s; base accuracy (random new head) {dylora.results['base']['accuracy']:.3f}\n")
    print("| rank | LoRA: one run per rank | train s | DyLoRA: one run (r 1–8), cut to the rank |\n|---|---|---|---|")
    for k in RANKS:
        lora = runs[f"lora-r{k}"]
        print(f"| {k} | {lora.results['tuned']['accuracy']:.3f} | {lora.manifest['train_seconds']:.0f} | "
              f"{at_rank[k]['accuracy']:.3f} |")
    lora_seconds = sum(runs[f"lora-r{k}"].manifest["train_seconds"] for k in RANKS)
    print(f"| all four | | {lora_seconds:.0f} in 4 runs | {dylora.manifest['train_seconds']:.0f} in 1 run |")
    ada = runs["adalora-12-to-8"]
    print(f"\nadalora init_r 12 -> target_r 8 (average): accuracy {ada.results['tuned']['accuracy']:.3f}, "
          f"{ada.manifest['trainable_params']:,} trainable params at the start, train {ada.manifest['train_seconds']:.0f} s")


if __name__ == "__main__":
    main()
