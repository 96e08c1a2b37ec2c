"""Context distillation, measured: which context changes smollm2-135m-instruct's answers, and what the student keeps.

    .venv/bin/python benchmarks/bench_context_distill.py --candidates [--prompts 30]
    .venv/bin/python benchmarks/bench_context_distill.py [--config configs/context-distill.yaml]

--candidates [--only config,ten-words]: for the config's own context and each candidate context below, the base
model's greedy answers to held-out chatterbot-qa questions (the config's eval split) without the context and with
it (system message and prefix), scored by the candidate's checker: how the case in configs/context-distill.yaml was
picked (a large gap between the two).

Default: `tunesmith train` the config (-> runs/context-distill), then print from its eval.json the checker's rate for
the base without the context, the base with it (the teacher) and the tuned student without it, the divergence to
the teacher, the prompt tokens the context costs per request, and the training time. Printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

CANDIDATES = {  # name -> (context, check)
    "lowercase": ("Always write your whole answer in lowercase letters only, with no capital letters at all.",
                  {"name": "lowercase"}),
    "indeed": ("You must begin every answer with the word 'Indeed'.", {"name": "starts_with", "value": "Indeed"}),
    "ten-words": ("Answer in at most 10 words.", {"name": "max_words", "value": 10}),
    "ten-words-examples": ("Answer every question in one short sentence of at most 10 words.\n"
                           "Q: What is the sun? A: The star at the centre of our solar system.\n"
                           "Q: Do you like music? A: Yes, I enjoy all kinds of music.\n"
                           "Q: How are you? A: I am well, thank you.", {"name": "max_words", "value": 10}),
    "sign-off": ("End every answer with the exact phrase 'Have a nice day!'", {"name": "ends_with", "value": "Have a nice day!"}),
}


def candidates(config: str, prompts: int, only: list[str] | None = None) -> None:
    from tunesmith.config import load_config
    from tunesmith.generation import generate
    from tunesmith.modeling import load_model
    from tunesmith.objectives.distill.context_teacher import passes, prompt_ids
    from tunesmith.training.prepare import Prepared

    base = load_config(config)
    prep = Prepared(base)
    questions = prep.data["eval"][base.data.column("prompt")][:prompts]
    model, tok = load_model(base.model, "causal_lm").eval(), prep.tokenizer
    start = time.time()
    plain = generate(model, tok, [prompt_ids(tok, base, q, False) for q in questions], base.objective.max_new_tokens)
    print(f"{len(questions)} prompts, greedy, {base.objective.max_new_tokens} new tokens ({time.time() - start:.0f} s per pass)")
    cases = {"config": (base.objective.context, dict(base.objective.check or {})), **CANDIDATES}  # the config's own first
    for name, (context, check) in cases.items():
        if only and name not in only:
            continue
        for placement in ("system", "prefix"):
            cfg = load_config(base, {"objective.context": context, "objective.context_file": None,
                                     "objective.placement": placement, "objective.check": check})
            rule = cfg.objective.check
            ruled = generate(model, tok, [prompt_ids(tok, cfg, q, True) for q in questions], cfg.objective.max_new_tokens)
            without, with_ = (sum(passes(rule, a) for a in answers) / len(answers) for answers in (plain, ruled))
            print(f"{name:10} {placement:6}  without {without:.2f}  with {with_:.2f}   e.g. {ruled[0][:70]!r}")


def train(config: str) -> None:
    out = Path("runs/context-distill")
    start = time.time()
    subprocess.run([sys.executable, "-m", "tunesmith.cli", "train", config, "--out", str(out)], check=True)
    results = json.loads((out / "eval.json").read_text())
    manifest = json.loads((out / "manifest.json").read_text())
    base, tuned = results["base"], results["tuned"]
    print(f"\n{tuned['eval_prompts']} held-out prompts, greedy; context {tuned['context_tokens']:.0f} prompt tokens per request")
    print(f"{'':34} {'check_rate':>10} {'kl_to_teacher':>14} {'agreement':>10}")
    print(f"{'base, no context':34} {base.get('check_rate', float('nan')):10.3f} {base['kl_to_teacher']:14.3f} {base['agreement']:10.3f}")
    print(f"{'base with the context (teacher)':34} {tuned.get('teacher_check_rate', float('nan')):10.3f}")
    print(f"{'tuned student, no context':34} {tuned.get('check_rate', float('nan')):10.3f} {tuned['kl_to_teacher']:14.3f} {tuned['agreement']:10.3f}")
    print(f"train {manifest['train_seconds']:.0f} s, whole run {time.time() - start:.0f} s; {manifest['machine']}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/context-distill.yaml")
    parser.add_argument("--candidates", action="store_true")
    parser.add_argument("--prompts", type=int, default=30)
    parser.add_argument("--only", help="--candidates: comma-separated names (config = the config's own context)")
    args = parser.parse_args()
    if args.candidates:
        candidates(args.config, args.prompts, args.only.split(",") if args.only else None)
    else:
        train(args.config)
