"""Causal-LM distillation, measured: SmolLM2-135M-Instruct (30 blocks) against its 15-block students.

    .venv/bin/python benchmarks/bench_distill_chat.py [--prompts 16] [--new-tokens 32]

1. `tunesmith compare configs/distill-chat.yaml` -> runs/compare-distill-chat, unless both variants have finished:
   the student (every other block) trained on the teacher's next-token distributions (kl) and the same student on
   the answers' cross-entropy alone (ce-only), one epoch each.
2. Held-out perplexity of the teacher and of each student, from the runs' eval.json (the same 100 held-out
   examples; the teacher's is eval.json's teacher_perplexity).
3. Speed of each model on the same work, after one warm-up call: a forward pass over --prompts chat prompts
   (batch 8, tokens/s) and greedy generation of --new-tokens tokens for each prompt, one prompt at a time
   (generated tokens/s, what one user waits for). All in fp32, no autocast.

Figures are printed and written to runs/bench-distill-chat.json, never asserted.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

COMPARE = Path("runs/compare-distill-chat")
VARIANTS = ("kl", "ce-only")
QUESTIONS = ["What is AI?", "Do you like pizza?", "Who wrote Hamlet?", "What is the capital of France?",
             "How do airplanes fly?", "Tell me a joke.", "What is your favourite book?", "Why is the sky blue?"]


def finished(run_dir: Path) -> bool:
    try:
        return json.loads((run_dir / "manifest.json").read_text())["status"] == "finished"
    except (OSError, ValueError, KeyError):
        return False


def speed(model, tok, prompts: int, new_tokens: int) -> dict:
    import torch

    from tunesmith.generation import generate

    texts = [tok.apply_chat_template([{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}], tokenize=False,
                                     add_generation_prompt=True) for i in range(prompts)]
    batch = tok(texts[:8], return_tensors="pt", padding=True)
    with torch.no_grad():
        model(**batch)  # warm-up
        start = time.perf_counter()
        tokens = 0
        for i in range(0, prompts, 8):
            batch = tok(texts[i:i + 8], return_tensors="pt", padding=True)
            model(**batch)
            tokens += int(batch["attention_mask"].sum())
        forward = tokens / (time.perf_counter() - start)
    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    generate(model, tok, ids[:1], max_new_tokens=4, batch_size=1)  # warm-up
    start = time.perf_counter()
    answers = generate(model, tok, ids, max_new_tokens=new_tokens, batch_size=1)
    seconds = time.perf_counter() - start
    generated = sum(len(tok(a, add_special_tokens=False)["input_ids"]) for a in answers)
    return {"forward_tokens_per_s": round(forward, 1), "generated_tokens_per_s": round(generated / seconds, 2),
            "generated_tokens": generated, "sample": answers[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--new-tokens", type=int, default=32)
    args = parser.parse_args()
    if not all(finished(COMPARE / "runs" / v) for v in VARIANTS):
        subprocess.run([sys.executable, "-m", "tunesmith.cli", "compare", "configs/distill-chat.yaml"], check=True)

    from tunesmith.config import ModelConfig
    from tunesmith.hardware import machine
    from tunesmith.modeling import load_model
    from tunesmith.runs import Run

    runs = {v: Run(COMPARE / "runs" / v) for v in VARIANTS}
    results = {v: run.results["tuned"] for v, run in runs.items()}
    teacher_name = runs["kl"].config.objective.teacher
    rows = {"teacher": {"blocks": None, "perplexity": results["kl"]["teacher_perplexity"]}}
    teacher = load_model(ModelConfig(name=teacher_name), "causal_lm").eval()
    tok = runs["kl"].tokenizer
    rows["teacher"].update(blocks=teacher.config.num_hidden_layers, **speed(teacher, tok, args.prompts, args.new_tokens))
    del teacher
    for v, run in runs.items():
        model = run.model
        manifest = run.manifest
        rows[v] = {"blocks": model.config.num_hidden_layers, "perplexity": results[v]["perplexity"],
                   "base_perplexity": run.results["base"]["perplexity"], "train_seconds": manifest["train_seconds"],
                   "train_steps": manifest["train_steps"], **speed(model, tok, args.prompts, args.new_tokens)}
    facts = machine(False)
    print(f"\n{facts['summary']}; {args.prompts} prompts, {args.new_tokens} new tokens, greedy, one prompt at a time")
    print(f"{'model':10} {'blocks':>6} {'held-out ppl':>12} {'forward tok/s':>14} {'generate tok/s':>15}")
    for name, r in rows.items():
        print(f"{name:10} {r['blocks']:>6} {r['perplexity']:12.1f} {r['forward_tokens_per_s']:14.1f} {r['generated_tokens_per_s']:15.2f}"
              f"   e.g. {r['sample'][:50]!r}")
    for v in VARIANTS:
        r = rows[v]
        print(f"{v}: perplexity {r['base_perplexity']:.0f} at the start (blocks cut) -> {r['perplexity']:.1f} after "
              f"{r['train_steps']} steps ({r['train_seconds']:.0f} s" + (", with the teacher's pass on its first run)" if v == "kl" else ")"))
    out = Path("runs/bench-distill-chat.json")
    out.write_text(json.dumps({"machine": facts, "settings": vars(args), "rows": rows}, indent=2))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
