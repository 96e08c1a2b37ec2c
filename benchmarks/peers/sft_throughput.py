"""sft training throughput against the tool a user would otherwise pick, on exactly the same work, in one invocation.

    .venv/bin/python benchmarks/peers/sft_throughput.py [--steps 20] [--warmup 2] [--lines trl,plain,...]

The work (every line): smollm2-135m-instruct (offline catalog), LoRA r=8, alpha 16, dropout 0 on q/k/v/o,
chatterbot-qa (offline catalog) as chat (the tokenizer's chat template, loss on the answers only), batch 8, max
length 256, learning rate 1e-4 (linear decay over all steps), seed 42, fp32 weights, on the CPU. W warm-up optimizer
steps (default 2), then N timed ones (default 20). Lines, one after the other, each in its own subprocess so that
peak RSS is each contender's own:

- trl: plain TRL 1.16 SFTTrainer + PEFT with TRL's defaults (gradient checkpointing on, padding to the longest,
  no packing); use_cpu, and bf16 only where this CPU computes it natively (TRL's default is bf16 on, which an
  AVX2-only CPU would emulate ~40x slower);
- tunesmith lines: `plain` (the levers off, fp32: tunesmith before them), one line per lever on top of it
  (+logits: train.logits_at_labels, +packing: train.pack_batches, +grouped: length-grouped batches instead,
  +checkpointing: gradient checkpointing on, +compile: torch.compile, 1 thread, +bf16 where native), `levers`:
  packing + logits at the response + bf16 where native together, and `defaults`: tunesmith's defaults as shipped
  (objectives/lm_speed.py).

Per line: non-padding tokens/s over the N timed steps, seconds per step, the loss at every step (and the last),
peak RSS, and the ratio of tokens/s to TRL's line. The same invocation measures this CPU's matmul peak (best of a few
2048 x 2048 torch.matmul calls, fp32 and, where native, bf16) and prints model-FLOPs utilisation (MFU):

    model FLOPs per step = 4 x P_body x T + 4 x V x H x K + 6 x P_lora x T

T: non-padding tokens of the step; P_body: the base model's parameters without the token embedding (each token
costs 2 per parameter forward and 2 backward through the activations; the frozen base has no weight gradient);
V x H: the output layer (tied to the embedding), counted at the K positions where it is computed (every
non-padding position, or only the response positions under train.logits_at_labels); P_lora: the LoRA parameters
(forward 2, backward 4 with their weight gradient). Attention's own T^2 work and padding are not counted: MFU says
how much of the peak went into the model's necessary work. Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODEL, DATA, SEED = "smollm2-135m-instruct", "chatterbot-qa", 42
BATCH, MAX_LENGTH, LR = 8, 256, 1e-4
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]
LEVERS_OFF = {"train.pack_batches": False, "train.logits_at_labels": False, "train.bf16": False}  # fp32, padded
# name -> (what the line is, tunesmith overrides or None for TRL, torch threads or None for torch's default)
LINES = {
    "trl": ("TRL 1.16 SFTTrainer + PEFT, TRL defaults", None, None),
    "trl_nogc": ("TRL, no gradient checkpointing", None, None),
    "trl_packing": ("TRL, packing (wrapped: full rows of 256), no gradient checkpointing", None, None),
    "trl_padfree": ("TRL, packing (bfd) + padding_free, no gradient checkpointing", None, None),
    "plain": ("tunesmith, levers off (fp32, padded, logits everywhere)", LEVERS_OFF, None),
    "logits": ("tunesmith + logits at the response only", {**LEVERS_OFF, "train.logits_at_labels": True}, None),
    "packing": ("tunesmith + packed batches", {**LEVERS_OFF, "train.pack_batches": True}, None),
    "grouped": ("tunesmith + length-grouped batches", {**LEVERS_OFF, "train.extra": {"train_sampling_strategy": "group_by_length"}}, None),
    "checkpointing": ("tunesmith + gradient checkpointing", {**LEVERS_OFF, "train.gradient_checkpointing": True}, None),
    "compile": ("tunesmith + torch.compile", {**LEVERS_OFF, "train.extra": {"torch_compile": True}}, None),
    "threads1": ("tunesmith, 1 thread", LEVERS_OFF, 1),
    "bf16": ("tunesmith + bf16 autocast", {**LEVERS_OFF, "train.bf16": True}, None),
    "levers": ("tunesmith + packed + logits at the response, bf16 where native", {"train.pack_batches": True,
                                                                                  "train.logits_at_labels": True}, None),
    "grouped_levers": ("tunesmith + length-grouped batches + logits at the response, bf16 where native",
                       {"train.pack_batches": False, "train.logits_at_labels": True,
                        "train.extra": {"train_sampling_strategy": "group_by_length"}}, None),
    "compile_levers": ("tunesmith defaults + torch.compile", {"train.extra": {"torch_compile": True}}, None),
    "defaults": ("tunesmith defaults as shipped (= levers)", {}, None),
}


# TRL's own levers, on top of its defaults (bf16 where native and completion-only loss on every TRL line)
TRL_LEVERS = {
    "trl": {},
    "trl_nogc": {"gradient_checkpointing": False},
    "trl_packing": {"gradient_checkpointing": False, "packing": True, "packing_strategy": "wrapped"},
    "trl_padfree": {"gradient_checkpointing": False, "packing": True, "packing_strategy": "bfd", "padding_free": True},
}


def rows() -> list[dict]:
    """The chatterbot-qa pairs, in a fixed order (both contenders' samplers shuffle them with seed 42)."""
    from tunesmith.assets import load_catalog_dataset

    ds = load_catalog_dataset(DATA)
    return [{"question": r["question"], "answer": r["answer"]} for r in ds]


class Counter:
    """Wraps a trainer's data collator: per batch, the non-padding tokens (each example up to max length) and the
    positions that carry loss. The dataloader may run one batch ahead, so counts are read by batch index."""

    def __init__(self, collate):
        self.collate, self.tokens, self.loss_positions = collate, [], []

    def __call__(self, features):
        batch = self.collate(features)
        self.tokens.append(sum(min(len(f["input_ids"]), MAX_LENGTH) for f in features))
        self.loss_positions.append(int((batch["labels"][:, 1:] != -100).sum()))
        return batch


def timer_callback():
    from transformers import TrainerCallback

    class Timer(TrainerCallback):
        """Wall time at the end of every optimizer step."""

        def __init__(self):
            self.ends = []

        def on_step_end(self, args, state, control, **kwargs):
            self.ends.append(time.perf_counter())

    return Timer()


def trl_trainer(path: str, steps: int, out: str, bf16: bool, callbacks, levers: dict):
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    data = Dataset.from_list([{"prompt": [{"role": "user", "content": r["question"]}],
                               "completion": [{"role": "assistant", "content": r["answer"]}]} for r in rows()])
    args = SFTConfig(output_dir=out, max_steps=steps, per_device_train_batch_size=BATCH, learning_rate=LR,
                     max_length=MAX_LENGTH, seed=SEED, logging_steps=1, save_strategy="no", report_to="none",
                     use_cpu=True, bf16=bf16, completion_only_loss=True, **levers)
    lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=TARGETS, task_type="CAUSAL_LM")
    model = AutoModelForCausalLM.from_pretrained(path, dtype="float32")
    return SFTTrainer(model=model, args=args, train_dataset=data, processing_class=AutoTokenizer.from_pretrained(path),
                      peft_config=lora, callbacks=callbacks)


def tunesmith_trainer(model_name: str, overrides: dict, steps: int, out: str, callbacks):
    from datasets import Dataset, DatasetDict
    from transformers import set_seed

    from tunesmith.config import load_config
    from tunesmith.methods.registry import apply_method
    from tunesmith.modeling import ensure_pad_token, load_model, to_device
    from tunesmith.training.prepare import Prepared

    folder = Path(out) / "data"
    data = Dataset.from_list(rows())
    DatasetDict({"train": data, "validation": data.select(range(8))}).save_to_disk(str(folder))
    cfg = load_config({
        "model": {"name": model_name},
        "data": {"source": str(folder), "eval_split": "validation", "columns": {"prompt": "question", "response": "answer"},
                 "format": "chat", "max_length": MAX_LENGTH},
        "method": {"name": "lora", "r": 8, "lora_alpha": 16, "lora_dropout": 0.0, "target_modules": TARGETS},
        "objective": {"name": "sft"},
        "train": {"max_steps": steps, "learning_rate": LR, "per_device_train_batch_size": BATCH, "seed": SEED,
                  "eval_strategy": "no", "logging_steps": 1, "use_cpu": True, "warmup_steps": 0},
        "report": {"html": False},
    }, overrides)
    set_seed(SEED)  # as pipeline.train_run does
    prep = Prepared(cfg)
    model = load_model(cfg.model, "causal_lm")
    ensure_pad_token(prep.tokenizer, model)
    model = apply_method(to_device(model), cfg.method)
    return prep.objective.build_trainer(model, prep.tokenizer, prep, cfg, Path(out), callbacks)


def child(name: str, steps: int, warmup: int, model_name: str = MODEL) -> dict:
    """One line, in this process: train warmup + steps steps and return what the table prints."""
    import torch

    from tunesmith.hardware import native_bf16

    _, overrides, threads = LINES[name]
    if threads:
        torch.set_num_threads(threads)
    native = native_bf16(use_cpu=True)[0]
    timer = timer_callback()
    with tempfile.TemporaryDirectory() as out:
        if overrides is None:
            from tunesmith.config import ModelConfig
            from tunesmith.modeling import model_path

            trainer = trl_trainer(model_path(ModelConfig(name=model_name)), warmup + steps, out, native, [timer],
                                  TRL_LEVERS[name])
        else:
            trainer = tunesmith_trainer(model_name, overrides, warmup + steps, out, [timer])
        counter = trainer.data_collator = Counter(trainer.data_collator)
        trainer.train()
    model = trainer.model
    base = model.get_base_model()
    lora = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    embed = base.get_input_embeddings().weight
    body = sum(p.numel() for n, p in base.named_parameters() if "lora_" not in n) - embed.numel()
    tokens, kept = sum(counter.tokens[warmup:warmup + steps]), sum(counter.loss_positions[warmup:warmup + steps])
    logits_everywhere = overrides is None or not load_logits_flag(overrides)
    flops = 4 * body * tokens + 4 * embed.numel() * (tokens if logits_everywhere else kept) + 6 * lora * tokens
    seconds = timer.ends[warmup + steps - 1] - timer.ends[warmup - 1]
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    bf16 = bool(trainer.args.bf16)
    return {"name": name, "tokens": tokens, "loss_positions": kept, "seconds": seconds, "flops": flops, "losses": losses, "bf16": bf16,
            "threads": torch.get_num_threads(), "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def load_logits_flag(overrides: dict) -> bool:
    """Whether a tunesmith line computes logits at the response only (the config default is on)."""
    return overrides.get("train.logits_at_labels", True)


def matmul_peak(dtype, n: int = 2048, repeats: int = 5) -> float:
    """FLOP/s of the best of a few n x n matmuls in dtype (one untimed first)."""
    import torch

    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.matmul(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


PEAK_SPREAD = 0.15  # the matmul peak before and after the lines may differ this much; more: the machine was busy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20, help="timed optimizer steps after the warm-up")
    parser.add_argument("--warmup", type=int, default=2, help="optimizer steps before timing starts (at least 1)")
    parser.add_argument("--lines", default=",".join(LINES), help=f"comma-separated, from {', '.join(LINES)}")
    parser.add_argument("--repeat", type=int, default=1, help="rounds of all the lines, one after the other; with 2 "
                        "or more the ratios are also printed as the median of the rounds with their range")
    parser.add_argument("--model", default=MODEL, help="another causal LM (catalog name or folder) for a dry run")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.warmup < 1 or args.steps < 1 or args.repeat < 1:
        parser.error("--steps, --warmup and --repeat must be at least 1 (timing starts at the end of the last warm-up step)")
    if args.child:
        print("RESULT " + json.dumps(child(args.child, args.steps, args.warmup, args.model)), flush=True)
        return
    import torch

    from tunesmith.hardware import machine, native_bf16

    names = [n.strip() for n in args.lines.split(",") if n.strip()]
    unknown = [n for n in names if n not in LINES]
    if unknown:
        sys.exit(f"--lines: unknown line {unknown[0]!r}; lines are {', '.join(LINES)}")
    native, why = native_bf16(use_cpu=True)
    print(f"machine: {machine(False)['summary']}; {why}; torch {torch.__version__}; {time.strftime('%Y-%m-%d %H:%M')}")
    dtypes = {"fp32": torch.float32, **({"bf16": torch.bfloat16} if native else {})}
    before = {k: matmul_peak(d) for k, d in dtypes.items()}
    print(f"work: {args.model}, LoRA r=8 alpha 16 dropout 0 on q/k/v/o, {DATA} as chat (loss on answers), batch {BATCH}, "
          f"max length {MAX_LENGTH}, lr {LR}, seed {SEED}; {args.warmup} warm-up + {args.steps} timed steps; "
          f"{args.repeat} round(s)\n", flush=True)
    rounds = []
    for number in range(args.repeat):
        if args.repeat > 1:
            print(f"round {number + 1} of {args.repeat}", flush=True)
        rounds.append([run_line(name, args, native, why) for name in names])
    after = {k: matmul_peak(d) for k, d in dtypes.items()}
    peak, busy = check_peak(before, after)
    for results in rounds:
        print_table([r for r in results if r is not None], peak, busy, args.steps)
    if args.repeat > 1:
        print_medians(rounds)


def run_line(name: str, args, native: bool, why: str) -> dict | None:
    """One line in its own process; None when it does not apply to this CPU."""
    if name == "bf16" and not native:
        print(f"{name}: skipped ({why})", flush=True)
        return None
    start = time.time()
    proc = subprocess.run([sys.executable, __file__, "--child", name, "--steps", str(args.steps), "--warmup",
                           str(args.warmup), "--model", args.model], capture_output=True, text=True,
                          env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    found = [line[7:] for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not found:
        print(f"{name}: failed ({proc.returncode}): {proc.stderr.strip().splitlines()[-1:] or ''}", flush=True)
        return {"name": name, "failed": (proc.stderr.strip().splitlines() or ["?"])[-1][:100]}
    r = json.loads(found[-1])
    print(f"{name}: {r['tokens'] / r['seconds']:.1f} tokens/s, {r['seconds'] / args.steps:.2f} s/step, "
          f"losses {' '.join(f'{x:.3f}' for x in r['losses'])} ({time.time() - start:.0f} s wall)", flush=True)
    return r


def check_peak(before: dict, after: dict) -> tuple[dict, str | None]:
    """The larger of the two peaks per precision; a reason not to print MFU when they differ by more than
    PEAK_SPREAD (something else ran during the measurement)."""
    print("matmul peak (2048 x 2048, best of 5), before / after the lines: " + ", ".join(
        f"{k} {before[k] / 1e9:.1f} / {after[k] / 1e9:.1f} GFLOP/s" for k in before))
    spread = {k: abs(before[k] - after[k]) / max(before[k], after[k]) for k in before}
    worst = max(spread, key=spread.get)
    busy = (f"not printed: the {worst} peak moved {100 * spread[worst]:.0f} % between before and after the lines "
            f"(> {100 * PEAK_SPREAD:.0f} %), so the machine was busy") if spread[worst] > PEAK_SPREAD else None
    if busy:
        print("MFU " + busy)
    return {k: max(before[k], after[k]) for k in before}, busy


def mfu_text(r: dict, peak: dict, busy: str | None) -> str:
    if busy:
        return "-"
    mfu = r["flops"] / r["seconds"] / peak.get("bf16" if r["bf16"] else "fp32", peak["fp32"])
    return f"{100 * mfu:.1f} %" if mfu <= 1 else "error (> 100 %: the peak was measured low)"


def rate(r: dict) -> float:
    return r["tokens"] / r["seconds"]


def print_table(results: list[dict], peak: dict, busy: str | None, steps: int) -> None:
    ok = [r for r in results if "failed" not in r]
    trl = next((rate(r) for r in ok if r["name"] == "trl"), None)
    fastest = max((r for r in ok if r["name"].startswith("trl")), key=rate, default=None)
    print(f"\n| line | what | precision | threads | trained tokens | loss positions | non-pad tokens/s | s/step | "
          f"loss at step {steps} (last) | peak RSS MB | vs TRL defaults | vs TRL fastest | MFU |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        what = LINES[r["name"]][0]
        if "failed" in r:
            print(f"| {r['name']} | {what} | failed: {r['failed']} | | | | | | | | | | |")
            continue
        vs = [f"{rate(r) / base:.2f}x" if base else "-" for base in (trl, fastest and rate(fastest))]
        print(f"| {r['name']} | {what} | {'bf16' if r['bf16'] else 'fp32'} | {r['threads']} | {r['tokens']:,} | "
              f"{r.get('loss_positions', 0):,} | {rate(r):.1f} | {r['seconds'] / steps:.2f} | {r['losses'][-1]:.4f} | "
              f"{r['rss_mb']:,.0f} | {vs[0]} | {vs[1]} | {mfu_text(r, peak, busy)} |")
    if fastest:
        print(f"\nTRL's fastest line here: {fastest['name']} ({rate(fastest):.1f} tokens/s)")
    print("loss at each step:")
    for r in ok:
        print(f"  {r['name']}: {' '.join(f'{x:.4f}' for x in r['losses'])}")


def print_medians(rounds: list[list]) -> None:
    """Per line: tokens/s and its ratios to TRL's defaults and to TRL's fastest line of the same round, as the median
    of the rounds with the range."""
    import statistics

    table: dict[str, dict[str, list]] = {}
    for results in rounds:
        ok = [r for r in results if r is not None and "failed" not in r]
        trl = next((rate(r) for r in ok if r["name"] == "trl"), None)
        fastest = max((rate(r) for r in ok if r["name"].startswith("trl")), default=None)
        for r in ok:
            row = table.setdefault(r["name"], {"rate": [], "trl": [], "fastest": []})
            row["rate"].append(rate(r))
            if trl:
                row["trl"].append(rate(r) / trl)
            if fastest:
                row["fastest"].append(rate(r) / fastest)

    def show(values: list, unit: str = "x") -> str:
        if not values:
            return "-"
        fmt = ".2f" if unit == "x" else ".1f"
        return f"{statistics.median(values):{fmt}}{unit} ({min(values):{fmt}}-{max(values):{fmt}}, {len(values)} rounds)"

    print("\n| line | non-pad tokens/s, median (range) | vs TRL defaults | vs TRL fastest of the round |\n|---|---|---|---|")
    for name, row in table.items():
        print(f"| {name} | {show(row['rate'], '')} | {show(row['trl'])} | {show(row['fastest'])} |")


if __name__ == "__main__":
    main()
