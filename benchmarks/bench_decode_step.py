"""The model's own decoding step, outside any server: one forward pass over a DynamicCache (60 tokens of context, no
attention mask), SmolLM2-135M-Instruct, batch 1/8/16, fp32 and (where native) bf16 weights. What continuous batching
could reach at most: tokens/s at 8 rows over 1 row. Figures are printed, never asserted.

    .venv/bin/python benchmarks/bench_decode_step.py [--steps 20]
"""

import argparse
import time


def main() -> None:
    import torch
    from transformers import AutoModelForCausalLM, DynamicCache

    from tunesmith.assets import resolve_model
    from tunesmith.hardware import machine, native_bf16

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()
    native, why = native_bf16(use_cpu=True)
    print(f"machine: {machine(False)['summary']}; {why}; torch {torch.__version__}; {time.strftime('%Y-%m-%d %H:%M')}")
    path = resolve_model("smollm2-135m-instruct")
    torch.manual_seed(0)
    for dtype in (torch.float32, torch.bfloat16) if native else (torch.float32,):
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).eval()
        single = None
        for rows in (1, 8, 16):
            ids = torch.randint(0, 1000, (rows, 60))
            with torch.no_grad():
                cache = DynamicCache()
                token = model(input_ids=ids, past_key_values=cache, use_cache=True).logits[:, -1:].argmax(-1)
                for _ in range(3):  # warm-up
                    token = model(input_ids=token, past_key_values=cache, use_cache=True).logits[:, -1:].argmax(-1)
                start = time.perf_counter()
                for _ in range(args.steps):
                    token = model(input_ids=token, past_key_values=cache, use_cache=True).logits[:, -1:].argmax(-1)
                seconds = (time.perf_counter() - start) / args.steps
            single = single or rows / seconds
            print(f"{str(dtype).removeprefix('torch.'):8} batch {rows:2d}: {1000 * seconds:6.1f} ms/step "
                  f"{rows / seconds:6.1f} tokens/s ({rows / seconds / single:.2f}x batch 1)", flush=True)


if __name__ == "__main__":
    main()
