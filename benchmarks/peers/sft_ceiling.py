"""How fast can this model train here at all? The ceiling under the sft peer benchmark (sft_throughput.py).

    .venv/bin/python benchmarks/peers/sft_ceiling.py [--steps 5] [--rows 8] [--profile]

sft_throughput.py compares trainers on one work: smollm2-135m-instruct, LoRA r=8 on q/k/v/o, chatterbot-qa. This
script times what any trainer of that work must do, with nothing else around it: the model's forward and backward
and an AdamW step on the LoRA weights, in plain PyTorch (eager, bf16 autocast where native with the frozen weights
cast to bf16 once, as tunesmith's defaults; fp32 elsewhere), on rows packed full of real chatterbot-qa tokens
(`--rows` rows of 256: the most matmul-friendly shape the work allows), the loss on 30 % of the positions (about the
answers' share) with the output layer computed there only. No data loading, no collator, no Trainer, no padding, no
attention mask (plain causal attention across the packed examples: less work than keeping them apart). A trainer can
beat this only by changing the computation (fused kernels, another attention), not by feeding it better.

It also times the model's own matmul shapes (rows x 576 by 576 x 576 / 576 x 1536 / 1536 x 576) against the square
2048 x 2048 matmul that sft_throughput.py takes as the peak for MFU: MFU against that peak cannot exceed what the
model's shapes reach. `--profile` adds where one more step's time goes (torch.profiler, the ops with the most
self CPU time). Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import time

MODEL, DATA, LENGTH, LOSS_SHARE = "smollm2-135m-instruct", "chatterbot-qa", 256, 0.3
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]


def flops_per_s(a_shape, b_shape, dtype, repeats: int = 20) -> float:
    import torch

    a, b = torch.randn(*a_shape, dtype=dtype), torch.randn(*b_shape, dtype=dtype)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * a_shape[0] * a_shape[1] * b_shape[1] / best


def packed_rows(tokenizer, rows: int) -> list[list[int]]:
    from tunesmith.assets import load_catalog_dataset

    ids: list[int] = []
    for r in load_catalog_dataset(DATA):
        text = tokenizer.apply_chat_template([{"role": "user", "content": r["question"]},
                                              {"role": "assistant", "content": r["answer"]}], tokenize=False)
        ids += tokenizer(text, add_special_tokens=False)["input_ids"]
        if len(ids) >= rows * LENGTH:
            break
    return [ids[i * LENGTH:(i + 1) * LENGTH] for i in range(rows)]


def main() -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunesmith.config import ModelConfig
    from tunesmith.hardware import machine, native_bf16
    from tunesmith.modeling import model_path

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rows", type=int, default=8, help="packed rows of 256 tokens per step")
    parser.add_argument("--profile", action="store_true", help="profile one more step: the top ops by self CPU time")
    args = parser.parse_args()
    native, why = native_bf16(use_cpu=True)
    dtype = torch.bfloat16 if native else torch.float32
    print(f"machine: {machine(False)['summary']}; {why}; torch {torch.__version__}; {time.strftime('%Y-%m-%d %H:%M')}")
    tokens = args.rows * LENGTH
    square = flops_per_s((2048, 2048), (2048, 2048), dtype)
    shapes = {"q/o (576 x 576)": ((tokens, 576), (576, 576)), "mlp up (576 x 1536)": ((tokens, 576), (576, 1536)),
              "mlp down (1536 x 576)": ((tokens, 1536), (1536, 576)), "k/v (576 x 192)": ((tokens, 576), (576, 192))}
    print(f"{str(dtype).removeprefix('torch.')} matmul, 2048 x 2048 (the MFU peak): {square / 1e9:,.0f} GFLOP/s")
    for name, (a, b) in shapes.items():
        rate = flops_per_s(a, b, dtype)
        print(f"  {tokens} x {name}: {rate / 1e9:,.0f} GFLOP/s ({100 * rate / square:.0f} % of the peak)")

    path = model_path(ModelConfig(name=MODEL))
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype="float32")
    model = get_peft_model(model, LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=TARGETS))
    if native:  # the frozen weights in bf16 once; the LoRA weights stay fp32 (tunesmith's train.bf16_frozen_weights)
        for p in model.parameters():
            if not p.requires_grad:
                p.data = p.data.to(torch.bfloat16)
    ids = torch.tensor(packed_rows(tokenizer, args.rows))
    keep = torch.rand(ids.shape[0], LENGTH - 1, generator=torch.Generator().manual_seed(0)) < LOSS_SHARE
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-4, fused=True)
    body, head = model.get_base_model().model, model.get_base_model().lm_head
    def step() -> float:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=native):
            hidden = body(input_ids=ids).last_hidden_state[:, :-1][keep]
            loss = torch.nn.functional.cross_entropy(head(hidden).float(), ids[:, 1:][keep])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.item()

    times, losses = [], []
    for _ in range(args.steps + 1):
        start = time.perf_counter()
        losses.append(step())
        times.append(time.perf_counter() - start)
    seconds = sorted(times[1:])[len(times[1:]) // 2]  # the median step after one warm-up
    embed = model.get_base_model().get_input_embeddings().weight
    n_body = sum(p.numel() for n, p in model.get_base_model().named_parameters() if "lora_" not in n) - embed.numel()
    n_lora = sum(p.numel() for p in params)
    flops = 4 * n_body * tokens + 4 * embed.numel() * int(keep.sum()) + 6 * n_lora * tokens
    print(f"\nthe work's step alone ({args.rows} packed rows of {LENGTH}, {tokens} tokens, loss on {int(keep.sum())} "
          f"positions, {'bf16 autocast + bf16 frozen weights' if native else 'fp32'}, fused AdamW): median "
          f"{seconds:.2f} s/step over {args.steps} steps, {tokens / seconds:,.0f} tokens/s, MFU "
          f"{100 * flops / seconds / square:.1f} % of the 2048 x 2048 peak; losses {' '.join(f'{x:.3f}' for x in losses)}")
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            step()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


if __name__ == "__main__":
    main()
