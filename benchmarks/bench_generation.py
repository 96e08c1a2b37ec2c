"""Generation speed: tunesmith.generation.complete on the real SmolLM2-135M-Instruct, today's path against the new
levers, in one invocation; and GRPO steps of configs/rlhf-positive-reviews.yaml with TRL's generation levers off
and on. Figures are printed, never asserted; the first lines state the machine, the versions and the date.

    .venv/bin/python benchmarks/bench_generation.py [--lines before,after] [--batches 1,8,16] [--max-new-tokens 48]
    .venv/bin/python benchmarks/bench_generation.py --lines before,cdf,bf16,after --modes greedy,sampled
    .venv/bin/python benchmarks/bench_generation.py --grpo 8 [--grpo-lines before,after]   # GRPO only: --lines ''

Prompts: --prompts reviews (default: the first 8 words of the last 16 rotten_tomatoes reviews of the offline
catalog, as the rl stage continues review openings) or chat (the last 16 chatterbot-qa questions through the chat
template). Every line decodes the same prompts, all of them at each batch size (in chunks of that size), greedy and
sampled (temperature 1, seed 0); one untimed call warms the model up first.

Generation lines (LINES): before = today's path (Gumbel sampler, fp32); cdf = the inverse-CDF sampler alone; bf16 =
precision auto alone (a bf16 copy where the hardware computes bf16 natively, fp32 elsewhere: then it equals before);
after = both. Each printed row: tokens/s (generated tokens / wall seconds), ms per decoding step (wall seconds /
steps, a step being one token of every row of a batch: the latency a streaming reader sees per token), and for greedy
whether the token ids equal the first line's (bf16 changes the arithmetic, so it may change some).

--grpo STEPS trains the rl stage of configs/rlhf-positive-reviews.yaml in this process for STEPS steps on the base
model (smollm2-135m-instruct instead of the sft stage's run) with the built-in reward function `positive` instead of
the reward stage's model (neither needs the pipeline's earlier stages), 16 held-out prompts, once per GRPO line
(GRPO_LINES: whether a bf16 copy of the policy samples the rollouts, rl.BF16_ROLLOUTS, and train.extra given to
TRL's GRPOConfig), and prints s/step, the generation share of it, generated tokens/s inside the training steps (the
evaluation before and after is left out) and the reward curve (rewards/positive/mean per logged step).
"""

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

BASE = "smollm2-135m-instruct"
LINES = {"before": {"sampler": "gumbel", "precision": "fp32"}, "cdf": {"sampler": "cdf", "precision": "fp32"},
         "bf16": {"sampler": "gumbel", "precision": "auto"}, "after": {"sampler": "cdf", "precision": "auto"}}
# GRPO: (rollouts by a bf16 copy of the policy: rl.BF16_ROLLOUTS, train.extra for TRL's GRPOConfig) per line.
# before: the path before this change; after: rl.py's defaults now; static: + TRL's cache_implementation static;
# gen4: + steps_per_generation 4 (one generation of 4 steps' completions: changes the algorithm, see the docs).
GRPO_LINES = {"before": (False, {}), "after": (True, {}), "static": (True, {"cache_implementation": "static"}),
              "gen4": (True, {"steps_per_generation": 4})}


def machine() -> str:
    import torch
    import transformers
    import trl

    from tunesmith.hardware import _cpu_facts
    from tunesmith.hardware import machine as facts

    _, flags = _cpu_facts()
    vector = sorted(f for f in flags if f.startswith(("avx", "amx")))
    return (f"{facts(False)['summary'].rsplit(';', 1)[0]}; flags {' '.join(vector) or '(none found)'}; "
            f"python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}, "
            f"trl {trl.__version__}; {time.strftime('%Y-%m-%d %H:%M')}")


def prompts(kind: str, tokenizer, count: int) -> list[list[int]]:
    from tunesmith.assets import load_catalog_dataset
    from tunesmith.generation import chat_prompt

    if kind == "chat":
        questions = load_catalog_dataset("chatterbot-qa")["question"][-count:]
        return [chat_prompt(tokenizer, [{"role": "user", "content": q}]) for q in questions]
    reviews = load_catalog_dataset("rotten_tomatoes")["text"][-count:]
    return [tokenizer(" ".join(r.split()[:8]))["input_ids"] for r in reviews]


def measure(model, tokenizer, ids, batch: int, n: int, mode: str, levers: dict) -> tuple[float, float, list]:
    from tunesmith.generation import complete

    options = {"temperature": 1.0, "seed": 0} if mode == "sampled" else {}
    start = time.perf_counter()
    done = complete(model, tokenizer, ids, max_new_tokens=n, batch_size=batch, **options, **levers)
    wall = time.perf_counter() - start
    steps = sum(max(len(c.token_ids) for c in done[i : i + batch]) for i in range(0, len(done), batch))
    return wall, steps, done


def generation_lines(args) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunesmith.assets import resolve_model
    from tunesmith.generation import complete

    path = resolve_model(BASE)
    model, tokenizer = AutoModelForCausalLM.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)
    ids = prompts(args.prompts, tokenizer, args.count)
    complete(model, tokenizer, ids[:2], max_new_tokens=4)  # warm-up, untimed
    print(f"{len(ids)} {args.prompts} prompts ({min(map(len, ids))}-{max(map(len, ids))} tokens), "
          f"{args.max_new_tokens} new tokens each")
    print(f"{'line':8} {'mode':8} {'batch':>5} {'tokens':>7} {'seconds':>8} {'tokens/s':>9} {'ms/step':>8}  same ids")
    first: dict = {}
    for mode in args.modes.split(","):
        for batch in map(int, args.batches.split(",")):
            for line in args.lines.split(","):
                wall, steps, done = measure(model, tokenizer, ids, batch, args.max_new_tokens, mode, LINES[line])
                tokens = sum(len(c.token_ids) for c in done)
                got = [c.token_ids for c in done]
                same = "" if mode == "sampled" else ("yes" if first.setdefault((mode, batch), got) == got else
                                                     f"no ({sum(a == b for a, b in zip(first[(mode, batch)], got))}"
                                                     f"/{len(got)} rows)")
                print(f"{line:8} {mode:8} {batch:5d} {tokens:7d} {wall:8.2f} {tokens / wall:9.1f} "
                      f"{1000 * wall / steps:8.1f}  {same}", flush=True)


def grpo_config(steps: int) -> dict:
    import yaml

    stage = next(s for s in yaml.safe_load(Path("configs/rlhf-positive-reviews.yaml").read_text())["stages"]
                 if s["name"] == "rl")
    cfg = stage["config"]
    cfg["model"] = {"name": BASE}
    cfg["objective"]["reward"] = {"function": "tunesmith.objectives.feedback.rewards:positive"}
    cfg["data"].update(train_size=max(16, steps * 2), eval_size=16)
    cfg["train"].update(max_steps=steps, logging_steps=1)
    cfg["eval"] = {"num_samples": 0, "max_new_tokens": 8, "max_generate": 16, "probes": []}
    return cfg


def grpo_lines(args) -> None:
    import json

    import trl
    from transformers import GenerationMixin

    from tunesmith import api
    from tunesmith.objectives.feedback import rl

    timing = {"generate": 0.0, "tokens": 0, "steps": [], "in_step": False}
    generate, step = GenerationMixin.generate, trl.GRPOTrainer.training_step

    def timed_generate(self, *a, **kw):
        start = time.perf_counter()
        out = generate(self, *a, **kw)
        if not timing["in_step"]:  # the evaluation before and after training
            return out
        timing["generate"] += time.perf_counter() - start
        width = kw["input_ids"].shape[1] if "input_ids" in kw else a[0].shape[1]
        pad = self.generation_config.pad_token_id
        timing["tokens"] += int((out[:, width:] != pad).sum()) if pad is not None else out[:, width:].numel()
        return out

    def timed_step(self, *a, **kw):
        start, timing["in_step"] = time.perf_counter(), True
        try:
            return step(self, *a, **kw)
        finally:
            timing["steps"].append(time.perf_counter() - start)
            timing["in_step"] = False

    GenerationMixin.generate, trl.GRPOTrainer.training_step = timed_generate, timed_step
    print(f"GRPO: the rl stage of configs/rlhf-positive-reviews.yaml on {BASE}, reward function positive, "
          f"{args.grpo} steps per line; s/step is the mean of all steps (a line that generates once for several steps "
          "pays it in its first), 'later' the mean without the first (which also warms up)")
    for line in args.grpo_lines.split(","):
        cfg = grpo_config(args.grpo)
        rl.BF16_ROLLOUTS, cfg["train"]["extra"] = GRPO_LINES[line]
        with tempfile.TemporaryDirectory() as tmp:
            timing.update(generate=0.0, tokens=0, steps=[])
            api.train(cfg, out=Path(tmp) / "run")
            rows = [json.loads(x) for x in (Path(tmp) / "run" / "metrics.jsonl").read_text().splitlines() if x.strip()]
        steps = timing["steps"]
        later = steps[1:] or steps
        curve = [round(r["rewards/positive/mean"], 2) for r in rows if "rewards/positive/mean" in r]
        bf16, extra = GRPO_LINES[line]
        print(f"{line:8} bf16 rollouts {bf16}, extra {extra}: {statistics.fmean(steps):.2f} s/step (first "
              f"{steps[0]:.2f}, later {statistics.fmean(later):.2f}); "
              f"generation {timing['generate']:.1f} s of {sum(timing['steps']):.1f} s, "
              f"{timing['tokens'] / max(timing['generate'], 1e-9):.1f} generated tokens/s; reward curve {curve}",
              flush=True)
    rl.BF16_ROLLOUTS = True


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", default="before,after", help=f"generation lines, of {','.join(LINES)}; '' for none")
    parser.add_argument("--modes", default="greedy,sampled")
    parser.add_argument("--batches", default="1,8,16")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--prompts", choices=["reviews", "chat"], default="reviews")
    parser.add_argument("--count", type=int, default=16, help="how many prompts")
    parser.add_argument("--grpo", type=int, default=0, metavar="STEPS", help="also time STEPS GRPO steps per line")
    parser.add_argument("--grpo-lines", default="before,after", help=f"of {','.join(GRPO_LINES)}")
    args = parser.parse_args(argv)
    unknown = [x for x in args.lines.split(",") if x and x not in LINES] + \
        [x for x in args.grpo_lines.split(",") if x not in GRPO_LINES]
    if unknown:
        sys.exit(f"unknown lines {unknown}: generation lines are {list(LINES)}, GRPO lines {list(GRPO_LINES)}")
    print(f"machine: {machine()}")
    if args.lines:
        generation_lines(args)
    if args.grpo:
        grpo_lines(args)


if __name__ == "__main__":
    main()
