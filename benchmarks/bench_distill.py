"""Knowledge distillation on sentiment, measured: the DistilBERT bar on our task.

    .venv/bin/python benchmarks/bench_distill.py [--retrain] [--single 200]

1. The teacher: configs/distill-teacher-sentiment.yaml -> runs/distill-teacher-sentiment (minilm-l6, all 6 blocks,
   4,000 labels), trained unless it has finished (--retrain: train it again).
2. `tunesmith compare configs/distill-sentiment.yaml` -> runs/compare-distill-sentiment: the student (3 of 6 blocks)
   on the teacher's soft labels over text the teacher never saw, and the same student on the 4,000 labels alone.
3. Prediction speed of teacher and distilled student on the same 1,000 validation texts: batched (`Run.predict`,
   the eval batch size) and one text at a time (the first --single texts), after one warm-up call each.

Prints the accuracies, the student's share of the teacher's accuracy, the speed-ups, train times and the machine.
Figures are printed and written to runs/bench-distill.json, never asserted.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

TEACHER = Path("runs/distill-teacher-sentiment")
COMPARE = Path("runs/compare-distill-sentiment")


def cli(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "tunesmith.cli", *args], check=True)


def speed(run, texts: list[str], single: int) -> dict:
    run.predict(texts[:8])  # warm-up: model load, first kernels
    start = time.perf_counter()
    run.predict(texts)
    batch = time.perf_counter() - start
    start = time.perf_counter()
    for text in texts[:single]:
        run.predict(text)
    one = (time.perf_counter() - start) / single
    import torch  # the model alone on one text: what the blocks cost, without Run.predict's per-call data handling

    model, tok = run.model, run.tokenizer
    with torch.no_grad():
        model(**tok(texts[0], return_tensors="pt"))
        start = time.perf_counter()
        for text in texts[:single]:
            model(**tok(text, return_tensors="pt", truncation=True, max_length=run.config.data.max_length))
    forward = (time.perf_counter() - start) / single
    return {"batch_texts_per_second": round(len(texts) / batch, 1), "single_ms": round(one * 1000, 2),
            "forward_ms": round(forward * 1000, 2)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--retrain", action="store_true", help="train the teacher and the students again")
    parser.add_argument("--single", type=int, default=200, help="texts predicted one at a time")
    args = parser.parse_args()

    from tunesmith import api
    from tunesmith.hardware import machine

    start = time.time()
    if args.retrain or not (TEACHER / "manifest.json").exists():
        cli("train", "configs/distill-teacher-sentiment.yaml", "--out", str(TEACHER), *(["--overwrite"] if args.retrain else []))
    cli("compare", "configs/distill-sentiment.yaml", "--out", str(COMPARE), *(["--rerun"] if args.retrain else []))
    wall = time.time() - start

    teacher, student = api.load_run(TEACHER), api.load_run(COMPARE / "runs" / "distilled")
    labels_only = api.load_run(COMPARE / "runs" / "labels-only")
    from tunesmith.data.sources import load_splits
    from tunesmith.data.templates import reads

    evalset = load_splits(student.config.data, student.config.train.seed, reads(student.config))["eval"]
    texts = list(evalset[student.config.data.column("text")])
    t_speed, s_speed = speed(teacher, texts, args.single), speed(student, texts, args.single)
    acc = {name: run.results["tuned"]["accuracy"] for name, run in
           (("teacher", teacher), ("distilled", student), ("labels-only", labels_only))}
    result = {
        "machine": machine(False)["summary"], "date": time.strftime("%Y-%m-%d"), "eval_examples": len(texts),
        "accuracy": acc, "share_of_teacher": round(acc["distilled"] / acc["teacher"], 4),
        "agreement": student.results["tuned"].get("agreement"),
        "speed": {"teacher": t_speed, "student": s_speed,
                  "batch_speedup": round(s_speed["batch_texts_per_second"] / t_speed["batch_texts_per_second"], 2),
                  "single_speedup": round(t_speed["single_ms"] / s_speed["single_ms"], 2),
                  "forward_speedup": round(t_speed["forward_ms"] / s_speed["forward_ms"], 2)},
        "train_seconds": {name: run.manifest["train_seconds"] for name, run in
                          (("teacher", teacher), ("distilled", student), ("labels-only", labels_only))},
        "params": {name: run.manifest.get("total_params") for name, run in (("teacher", teacher), ("distilled", student))},
        "wall_seconds": round(wall, 1),
    }
    Path("runs/bench-distill.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    sp = result["speed"]
    print(f"\nmachine: {result['machine']}")
    print("| model | accuracy (1,000 validation) | batch texts/s | one text via Run.predict, ms | one text, model "
          "forward, ms | train s |")
    print("|---|---|---|---|---|---|")
    print(f"| teacher: minilm-l6, 6 blocks, 4,000 labels | {acc['teacher']:.3f} | {t_speed['batch_texts_per_second']} | "
          f"{t_speed['single_ms']} | {t_speed['forward_ms']} | {result['train_seconds']['teacher']:.0f} |")
    print(f"| student: 3 blocks, teacher's soft labels on unlabelled text | {acc['distilled']:.3f} "
          f"({result['share_of_teacher']:.1%} of the teacher) | {s_speed['batch_texts_per_second']} "
          f"({sp['batch_speedup']}x) | {s_speed['single_ms']} ({sp['single_speedup']}x) | {s_speed['forward_ms']} "
          f"({sp['forward_speedup']}x) | "
          f"{result['train_seconds']['distilled']:.0f} |")
    print(f"| student: 3 blocks, the 4,000 labels alone | {acc['labels-only']:.3f} | | | | "
          f"{result['train_seconds']['labels-only']:.0f} |")


if __name__ == "__main__":
    main()
