"""How much faster the distilled 3-block student predicts than its 6-block teacher, measured with repeated trials,
and where the time of one prediction goes (why half the blocks do not halve the time).

    .venv/bin/python benchmarks/bench_distill_speed.py [--trials 5] [--single 200] [--teacher RUN --student RUN]

Models: the runs of benchmarks/bench_distill.py (runs/distill-teacher-sentiment, and the `distilled` run of
runs/compare-distill-sentiment) when they exist or are named; else the same shapes built from the offline catalog:
minilm-l6 with a 2-label head (the teacher) and minilm-l6 cut to blocks [0, 2, 4] (the student, as
configs/distill-sentiment.yaml cuts it). Speed does not depend on the trained weights, only on the shapes; the
accuracies are bench_distill.py's.

Texts: the same 1,000 rotten_tomatoes validation snippets for both. Teacher and student alternate within each trial
(so a slow moment of the machine hits both), after one warm-up call each. Per trial and model:
- batched: `classify.predict` at the eval batch size (32), as `Run.predict` and `tunesmith predict` run it;
- one text: the first --single texts one call each;
- the parts of the batched call: tokenization, padding into batches (the collator), the embeddings, the
  transformer blocks, the head (pooler + classifier + softmax), each timed over the same 1,000 texts;
- blocks only at batch 32 and at batch 1, and the batched call with length-sorted batches (less padding).
Prints the median and range of every speed-up over the trials, and the share of the teacher's time outside its blocks:
with a share s, half the blocks can give at most 1 / (s + (1 - s) / 2). Printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

TEACHER = Path("runs/distill-teacher-sentiment")
STUDENT = Path("runs/compare-distill-sentiment/runs/distilled")
BATCH = 32


def catalog_models():
    """(name, model, tokenizer, cfg, task) for the teacher and the student shapes, from the offline catalog."""
    from tunesmith.config import load_config
    from tunesmith.modeling import load_model, load_tokenizer

    out = []
    for name, keep in (("teacher", None), ("student", [0, 2, 4])):
        cfg = load_config({"model": {"name": "minilm-l6", "keep_layers": keep}, "data": {"source": "rotten_tomatoes",
                           "max_length": 64}, "method": {"name": "full"}, "objective": {"name": "classify"}})
        task = {"labels": ["neg", "pos"]}
        model = load_model(cfg.model, "classify", num_labels=2).eval()
        out.append((name, model, load_tokenizer(cfg.model), cfg, task))
    return out


def run_models(teacher: Path, student: Path):
    from tunesmith import api

    out = []
    for name, folder in (("teacher", teacher), ("student", student)):
        run = api.load_run(folder)
        out.append((name, run.model.eval(), run.tokenizer, run.config, run.task))
    return out


def texts_of(cfg) -> list[str]:
    from tunesmith.data.sources import load_splits
    from tunesmith.data.templates import reads

    cfg = cfg.model_copy(update={"data": cfg.data.model_copy(update={"eval_size": 1000})})
    evalset = load_splits(cfg.data, cfg.train.seed, reads(cfg))["eval"]
    return list(evalset[cfg.data.column("text")])


def parts(model, tokenizer, cfg, task, texts: list[str], sort: bool = False) -> dict:
    """Seconds of each part of a batched prediction over `texts` (the same steps as classify.predict)."""
    import torch

    from tunesmith.data.tokenize import encode_classify, model_inputs
    from tunesmith.eval.metrics import batches
    from tunesmith.objectives.classify import _label2id, collator

    seconds = {"tokenize": 0.0, "collate": 0.0, "embeddings": 0.0, "blocks": 0.0, "head": 0.0}
    base = model.base_model
    marks: dict = {}
    hooks = [base.embeddings.register_forward_pre_hook(lambda *a: marks.__setitem__("e0", time.perf_counter())),
             base.embeddings.register_forward_hook(lambda *a: marks.__setitem__("e1", time.perf_counter())),
             base.encoder.register_forward_hook(lambda *a: marks.__setitem__("b1", time.perf_counter()))]
    start = time.perf_counter()
    label = cfg.data.column("label")
    rows = [{cfg.data.column("text"): t, label: task["labels"][0]} for t in texts]
    enc = encode_classify(rows, tokenizer, cfg.data, _label2id(task).__getitem__)
    features = [dict(zip(enc, values)) for values in zip(*enc.values())]
    if sort:
        features.sort(key=lambda f: len(f["input_ids"]))
    seconds["tokenize"] = time.perf_counter() - start
    try:
        mark = time.perf_counter()
        for batch in batches(model_inputs(features), BATCH, collator(tokenizer)):
            batch = {k: v for k, v in batch.items() if k != "labels"}
            seconds["collate"] += time.perf_counter() - mark
            call = time.perf_counter()
            with torch.no_grad():
                torch.softmax(model(**batch).logits.float(), dim=-1)
            end = time.perf_counter()
            seconds["embeddings"] += marks["e1"] - marks["e0"]
            seconds["blocks"] += marks["b1"] - marks["e1"]
            seconds["head"] += (marks["e0"] - call) + (end - marks["b1"])
            mark = time.perf_counter()
    finally:
        for hook in hooks:
            hook.remove()
    seconds["total"] = time.perf_counter() - start
    return seconds


def blocks_only(model, tokenizer, texts: list[str], batch: int, max_length: int) -> float:
    """Seconds of the encoder blocks alone over `texts` at `batch` (inputs prepared beforehand)."""
    import torch

    base = model.base_model
    prepared = []  # the encoder's own inputs, caught as a normal forward passes them

    def catch(module, args, kwargs):
        prepared.append((args, kwargs))

    hook = base.encoder.register_forward_pre_hook(catch, with_kwargs=True)
    try:
        for i in range(0, len(texts), batch):
            enc = tokenizer(texts[i:i + batch], return_tensors="pt", padding=True, truncation=True, max_length=max_length)
            with torch.no_grad():
                base(**enc)
    finally:
        hook.remove()
    start = time.perf_counter()
    with torch.no_grad():
        for args, kwargs in prepared:
            base.encoder(*args, **kwargs)
    return time.perf_counter() - start


def one_trial(models, texts: list[str], single: int) -> dict:
    from tunesmith.objectives.classify import predict

    out = {}
    for name, model, tok, cfg, task in models:
        row: dict = {}
        start = time.perf_counter()
        predict(model, tok, texts, cfg, task)
        row["batched_s"] = time.perf_counter() - start
        start = time.perf_counter()
        for text in texts[:single]:
            predict(model, tok, [text], cfg, task)
        row["single_ms"] = (time.perf_counter() - start) / single * 1000
        row["parts"] = parts(model, tok, cfg, task, texts)
        row["sorted_s"] = parts(model, tok, cfg, task, texts, sort=True)["total"]
        row["blocks32_s"] = blocks_only(model, tok, texts, BATCH, cfg.data.max_length)
        row["blocks1_ms"] = blocks_only(model, tok, texts[:single], 1, cfg.data.max_length) / single * 1000
        out[name] = row
    return out


def spread(values: list[float], fmt: str = ".2f") -> str:
    return f"{statistics.median(values):{fmt}} ({min(values):{fmt}}-{max(values):{fmt}})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--single", type=int, default=200, help="texts predicted one call each")
    parser.add_argument("--teacher", type=Path, help=f"a teacher run (default {TEACHER} if it finished)")
    parser.add_argument("--student", type=Path, help=f"a student run (default {STUDENT} if it finished)")
    args = parser.parse_args()
    import torch
    import transformers

    from tunesmith.hardware import machine

    teacher, student = args.teacher or TEACHER, args.student or STUDENT
    if (teacher / "manifest.json").exists() and (student / "manifest.json").exists():
        models, source = run_models(teacher, student), f"the runs {teacher} and {student}"
    else:
        models, source = catalog_models(), "minilm-l6 from the offline catalog, 6 blocks and blocks [0, 2, 4]"
    texts = texts_of(models[0][3])
    print(f"machine: {machine(False)['summary']}; torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"transformers {transformers.__version__}; {time.strftime('%Y-%m-%d %H:%M')}")
    print(f"models: {source}; {len(texts)} texts, batch {BATCH}, one text x {args.single}; {args.trials} trials\n")
    for name, model, tok, cfg, task in models:  # warm-up
        one_trial([(name, model, tok, cfg, task)], texts[:64], 4)
    trials = []
    for number in range(args.trials):
        trials.append(one_trial(models, texts, args.single))
        t, s = trials[-1]["teacher"], trials[-1]["student"]
        print(f"trial {number + 1}: batched {t['batched_s']:.2f} / {s['batched_s']:.2f} s "
              f"({t['batched_s'] / s['batched_s']:.2f}x), one text {t['single_ms']:.2f} / {s['single_ms']:.2f} ms "
              f"({t['single_ms'] / s['single_ms']:.2f}x)", flush=True)
    ratio = lambda key: [x["teacher"][key] / x["student"][key] for x in trials]  # noqa: E731
    part = lambda who, key: [x[who]["parts"][key] for x in trials]  # noqa: E731
    print("\n| speed-up of the student over the teacher | median (range) over the trials |\n|---|---|")
    print(f"| batched, classify.predict (= Run.predict) | {spread(ratio('batched_s'))}x |")
    print(f"| batched, length-sorted batches | {spread(ratio('sorted_s'))}x |")
    print(f"| one text, classify.predict | {spread(ratio('single_ms'))}x |")
    print(f"| transformer blocks alone, batch {BATCH} | {spread(ratio('blocks32_s'))}x |")
    print(f"| transformer blocks alone, batch 1 | {spread(ratio('blocks1_ms'))}x |")
    print("\n| part of a batched prediction of 1,000 texts, s | teacher | student |\n|---|---|---|")
    for key in ("tokenize", "collate", "embeddings", "blocks", "head", "total"):
        print(f"| {key} | {spread(part('teacher', key), '.3f')} | {spread(part('student', key), '.3f')} |")
    outside = [1 - x["teacher"]["parts"]["blocks"] / x["teacher"]["parts"]["total"] for x in trials]
    share = statistics.median(outside)
    print(f"\nthe teacher's time outside its blocks: {100 * share:.1f} % (median); half the blocks can then give at "
          f"most {1 / (share + (1 - share) / 2):.2f}x batched")
    Path("runs").mkdir(exist_ok=True)
    Path("runs/bench-distill-speed.json").write_text(json.dumps({"source": source, "trials": trials}, indent=2) + "\n")


if __name__ == "__main__":
    main()
