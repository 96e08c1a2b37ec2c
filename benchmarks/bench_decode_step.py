"""The model's own decoding step, outside any server: one forward pass over a DynamicCache (60 tokens of context, no
attention mask), SmolLM2-135M-Instruct, batch 1/8/16, fp32 and (where native) bf16 weights. What continuous batching
could reach at most: tokens/s at 8 rows over 1 row. Figures are printed, never asserted.

`--threads` measures instead the same step (fp32, batch 8) from a thread while it is the only one that has run torch
(what `tunesmith serve`'s compute thread is, registry.py), then from the main thread, then from another thread while
the main thread's OpenMP pool is alive (the server before its compute thread: loading on the main thread, batches on
another).

`--prefill` times instead the prefill of 1 and of 8 prompts of 35 tokens (a chat request's size here), fp32 and
(where native) bf16, median of 5.

    .venv/bin/python benchmarks/bench_decode_step.py [--steps 20] [--threads | --prefill]
"""

import argparse
import threading
import time


def main() -> None:
    import torch
    from transformers import AutoModelForCausalLM, DynamicCache

    from tunesmith.assets import resolve_model
    from tunesmith.hardware import machine, native_bf16

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--prefill", action="store_true", help="the prefill of 1 and 8 prompts of 35 tokens")
    parser.add_argument("--threads", action="store_true", help="the step from the main thread against another thread")
    args = parser.parse_args()
    native, why = native_bf16(use_cpu=True)
    print(f"machine: {machine(False)['summary']}; {why}; torch {torch.__version__}; {time.strftime('%Y-%m-%d %H:%M')}")
    path = resolve_model("smollm2-135m-instruct")
    torch.manual_seed(0)
    if args.prefill:
        return prefill([torch.float32, torch.bfloat16] if native else [torch.float32], path)
    if args.threads:
        return threads(AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval(), args.steps)
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


def step_ms(model, rows: int, steps: int) -> float:
    """ms per decoding step of `rows` rows over 60 tokens of context (3 steps of warm-up)."""
    import torch
    from transformers import DynamicCache

    ids = torch.randint(0, 1000, (rows, 60))
    with torch.no_grad():
        cache = DynamicCache()
        token = model(input_ids=ids, past_key_values=cache, use_cache=True).logits[:, -1:].argmax(-1)
        for _ in range(3):
            token = model(input_ids=token, past_key_values=cache, use_cache=True).logits[:, -1:].argmax(-1)
        start = time.perf_counter()
        for _ in range(steps):
            token = model(input_ids=token, past_key_values=cache, use_cache=True).logits[:, -1:].argmax(-1)
    return 1000 * (time.perf_counter() - start) / steps


def prefill(dtypes, path) -> None:
    """ms to prefill 1 and 8 prompts of 35 tokens (the first token's logits only), median of 5 after one warm-up."""
    import statistics

    import torch
    from transformers import AutoModelForCausalLM, DynamicCache

    for dtype in dtypes:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).eval()
        for rows in (1, 8):
            ids = torch.randint(0, 1000, (rows, 35))
            times = []
            for _ in range(6):
                start = time.perf_counter()
                with torch.no_grad():
                    model(input_ids=ids, attention_mask=torch.ones_like(ids), past_key_values=DynamicCache(),
                          use_cache=True, logits_to_keep=1)
                times.append(time.perf_counter() - start)
            ms = 1000 * statistics.median(times[1:])
            print(f"{str(dtype).removeprefix('torch.'):8} prefill {rows} x 35 tokens: {ms:6.1f} ms "
                  f"({ms / (rows * 35):.2f} ms per token)", flush=True)


def threads(model, steps: int) -> None:
    """The batch-8 step from a lone thread, from the main thread, from a thread beside the main thread's pool."""
    def elsewhere() -> float:
        out = []
        thread = threading.Thread(target=lambda: out.append(step_ms(model, 8, steps)))
        thread.start()
        thread.join()
        return out[0]

    alone = elsewhere()  # its OpenMP pool ends with it
    print(f"float32 batch 8, from the only thread running torch:        {alone:6.1f} ms/step", flush=True)
    main = step_ms(model, 8, steps)
    print(f"float32 batch 8, from the main thread:                      {main:6.1f} ms/step", flush=True)
    beside = elsewhere()
    print(f"float32 batch 8, from a thread beside the main thread's pool: {beside:6.1f} ms/step "
          f"({beside / alone:.2f}x the lone thread's)", flush=True)


if __name__ == "__main__":
    main()
