"""Classification training against plain transformers + PEFT, on exactly the same work, in one invocation.

    .venv/bin/python benchmarks/peers/classify_throughput.py [--epochs 10] [--seeds 42,1,2]
        [--lines plain,tunesmith-before,tunesmith,tunesmith-grouped,tunesmith-fp32]

The work (every line) is configs/sentiment-lora-textbook.yaml's: minilm-l6 (offline catalog), rotten_tomatoes 1,000
training / 1,000 validation rows (tunesmith's seeded split: the same rows for every line), LoRA r=4, alpha 32,
dropout 0.01 on `query`, learning rate 1e-3 (linear decay), batch 4, weight decay 0.01, E epochs (default 10) with
an evaluation on the 1,000 rows after each (eval batch 32) and the best epoch's model kept (accuracy), max length
128, seed 42 (--seeds: each line at each seed; the seed draws the 1,000 + 1,000 rows, the initialisation and the
order, the same for every line at one seed), on the CPU. Lines, one after the other, each in its own subprocess
(peak RSS is each line's own):

- plain: the recipe as a user writes it with transformers + PEFT: AutoModelForSequenceClassification,
  peft.get_peft_model, the tokenizer with truncation, DataCollatorWithPadding, Trainer with those arguments and
  transformers' defaults otherwise (fp32);
- tunesmith-before: `tunesmith train` with its classification speed levers off (train.group_by_length false,
  train.bf16_frozen_weights false): what it did before them, bf16 autocast as shipped;
- tunesmith: `tunesmith train configs/sentiment-lora-textbook.yaml` as shipped (its defaults: bf16 autocast where
  this CPU computes bf16 natively, fp32 elsewhere; frozen weights cast to bf16 once);
- tunesmith-grouped: the defaults with train.group_by_length true (length-grouped batches: less padding, another
  order of the rows);
- tunesmith-fp32: the defaults with train.bf16 false.

Per line: the non-padding training tokens (each row's tokens up to 128, times the epochs), the seconds of
Trainer.train() (training steps and the per-epoch evaluations, the same work in every line), tokens/s, training
examples/s, seconds per optimizer step (Trainer.train()'s seconds over its steps: the evaluations included), the best
epoch's validation accuracy, peak RSS, and tokens/s as a ratio to the plain line; the machine and the date above the
table. With several seeds, a last table per line: the median and range of the tokens/s ratio to plain at the same
seed, and the accuracy at each seed. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIG = Path(__file__).parents[2] / "configs" / "sentiment-lora-textbook.yaml"
LINES = {
    "plain": "transformers + PEFT, the recipe as written by hand (fp32)",
    "tunesmith-before": "tunesmith train, speed levers off (group_by_length, bf16_frozen_weights false)",
    "tunesmith": "tunesmith train, defaults as shipped",
    "tunesmith-grouped": "tunesmith train, defaults + train.group_by_length true",
    "tunesmith-fp32": "tunesmith train, train.bf16 false",
}
OVERRIDES = {
    "tunesmith-before": ["train.group_by_length=false", "train.bf16_frozen_weights=false"],
    "tunesmith": [],
    "tunesmith-grouped": ["train.group_by_length=true"],
    "tunesmith-fp32": ["train.bf16=false"],
}


def _splits(seed: int):
    from tunesmith.config import load_config
    from tunesmith.data.sources import load_splits

    cfg = load_config(CONFIG, [f"train.seed={seed}"])
    return cfg, load_splits(cfg.data, cfg.train.seed)


def plain(epochs: int, out: str, seed: int) -> dict:
    import numpy as np
    from peft import LoraConfig, get_peft_model
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    from tunesmith.modeling import model_path

    cfg, splits = _splits(seed)
    path = model_path(cfg.model)
    tok = AutoTokenizer.from_pretrained(path)

    names = sorted(set(splits["train"]["label"]))  # the catalog's labels are words (fresh/rotten)

    def encode(ds):
        return ds.map(lambda b: {**tok(b["text"], truncation=True, max_length=128),
                                 "labels": [names.index(x) for x in b["label"]]}, batched=True,
                      remove_columns=["text", "label"])

    train, valid = encode(splits["train"]), encode(splits["eval"])
    set_seed(seed)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    model = get_peft_model(model, LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=32, lora_dropout=0.01,
                                             target_modules=["query"]))
    args = TrainingArguments(out, num_train_epochs=epochs, learning_rate=1e-3, per_device_train_batch_size=4,
                             per_device_eval_batch_size=32, weight_decay=0.01, eval_strategy="epoch",
                             save_strategy="epoch", save_total_limit=1, load_best_model_at_end=True,
                             metric_for_best_model="accuracy", logging_steps=50, seed=seed, use_cpu=True, report_to="none")

    def accuracy(p):
        return {"accuracy": float((np.argmax(p.predictions, -1) == p.label_ids).mean())}

    trainer = Trainer(model=model, args=args, train_dataset=train, eval_dataset=valid,
                      data_collator=DataCollatorWithPadding(tok), compute_metrics=accuracy)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    best = max(e["eval_accuracy"] for e in trainer.state.log_history if "eval_accuracy" in e)
    return {"seconds": seconds, "accuracy": best, "bf16": False, "steps": trainer.state.global_step,
            "examples": len(train) * epochs, "tokens": sum(len(ids) for ids in train["input_ids"]) * epochs}


def tunesmith_line(epochs: int, out: str, overrides: list[str], seed: int) -> dict:
    from tunesmith import api
    from tunesmith.config import load_config

    cfg, splits = _splits(seed)
    run = api.train(load_config(CONFIG, [f"train.num_train_epochs={epochs}", f"train.seed={seed}", "report.html=false",
                                         *overrides]),
                    out=Path(out) / "run")
    m = run.manifest
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(run.dir / m["saved"])
    tokens = sum(min(len(ids), 128) for ids in tok(list(splits["train"]["text"]))["input_ids"]) * epochs
    return {"seconds": m["train_seconds"], "accuracy": run.results["tuned"]["accuracy"], "bf16": m["bf16"], "tokens": tokens,
            "steps": m["train_steps"], "examples": m["train_examples"] * epochs}


def child(name: str, epochs: int, seed: int) -> dict:
    with tempfile.TemporaryDirectory() as out:
        if name == "plain":
            result = plain(epochs, out, seed)
        else:
            result = tunesmith_line(epochs, out, OVERRIDES[name], seed)
    return {"name": name, "seed": seed, **result, "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--lines", default=",".join(LINES))
    parser.add_argument("--seeds", default="42", help="comma-separated: every line runs at each seed")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=Path("runs/bench-classify-peers.json"))
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(args.child, args.epochs, int(args.seeds))))
        return
    import torch

    from tunesmith.hardware import machine

    summary = f"{machine(False)['summary']}; torch {torch.__version__}; {time.strftime('%Y-%m-%d %H:%M')}"
    results = []
    seeds = [int(x) for x in args.seeds.split(",")]
    for seed in seeds:
        for name in args.lines.split(","):
            proc = subprocess.run([sys.executable, __file__, "--child", name, "--epochs", str(args.epochs),
                                   "--seeds", str(seed)], capture_output=True, text=True)
            line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
            if proc.returncode or not line:
                print(proc.stderr[-3000:])
                raise SystemExit(f"line {name} (seed {seed}) failed")
            results.append(json.loads(line[0][7:]))
            r = results[-1]
            print(f"seed {seed} {name}: {r['tokens'] / r['seconds']:.0f} tokens/s, {r['seconds']:.1f} s, "
                  f"{r['seconds'] / r['steps']:.4f} s/step, accuracy {r['accuracy']:.3f}, peak RSS {r['rss_mb']:.0f} MB",
                  flush=True)
    plain_rate = {r["seed"]: r["tokens"] / r["seconds"] for r in results if r["name"] == "plain"}
    print(f"\nmachine: {summary}; {args.epochs} epochs, configs/sentiment-lora-textbook.yaml's work\n")
    print("| line | seed | what | bf16 | tokens/s | examples/s | vs plain | s/step | train s | best accuracy | peak RSS MB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        rate = r["tokens"] / r["seconds"]
        ratio = f"{rate / plain_rate[r['seed']]:.2f}x" if r["seed"] in plain_rate else "-"
        print(f"| {r['name']} | {r['seed']} | {LINES[r['name']]} | {'on' if r['bf16'] else 'off'} | {rate:.0f} | "
              f"{r['examples'] / r['seconds']:.1f} | {ratio} | {r['seconds'] / r['steps']:.4f} | {r['seconds']:.1f} | "
              f"{r['accuracy']:.3f} | {r['rss_mb']:.0f} |")
    if len(seeds) > 1:
        print(f"\nover seeds {args.seeds}:\n")
        print("| line | vs plain: median (range) | accuracy per seed | mean accuracy |")
        print("|---|---|---|---|")
        for name in args.lines.split(","):
            mine = [r for r in results if r["name"] == name]
            ratios = sorted(r["tokens"] / r["seconds"] / plain_rate[r["seed"]] for r in mine if r["seed"] in plain_rate)
            shown = (f"{statistics.median(ratios):.2f}x ({ratios[0]:.2f}-{ratios[-1]:.2f})" if ratios else "-")
            accs = [r["accuracy"] for r in mine]
            print(f"| {name} | {shown} | {' / '.join(f'{a:.3f}' for a in accs)} | {statistics.mean(accs):.3f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": summary, "epochs": args.epochs, "seeds": seeds, "lines": results}, indent=2))


if __name__ == "__main__":
    main()
