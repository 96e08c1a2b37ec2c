"""What a static KV cache and torch.compile buy transformers' `generate` on this machine (tunesmith does not use
them: see docs/performance.md, Generation speed). SmolLM2-135M-Instruct, a batch of left-padded review openings,
greedy, exactly --new-tokens new tokens; lines: eager with the default DynamicCache, eager with
cache_implementation="static", then `torch.compile(model.forward)` with the static cache (its first call, which
compiles, timed apart). Each line's tokens/s is the second of two calls; `same` says whether its ids equal the
eager DynamicCache line's. Figures are printed, never asserted.

    .venv/bin/python benchmarks/bench_compile.py [--dtype float32|bfloat16] [--batch 8] [--new-tokens 48]
"""

import argparse
import time


def main() -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tunesmith.assets import resolve_model
    from tunesmith.hardware import machine, native_bf16

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=48)
    args = parser.parse_args()
    native, why = native_bf16(use_cpu=True)
    if args.dtype == "bfloat16" and not native:
        parser.exit(2, f"--dtype bfloat16: {why}; measure float32 here\n")
    print(f"machine: {machine(False, args.dtype)['summary']}; torch {torch.__version__}; {args.dtype}, batch {args.batch}, "
          f"{args.new_tokens} new tokens; {time.strftime('%Y-%m-%d %H:%M')}", flush=True)
    path = resolve_model("smollm2-135m-instruct")
    tokenizer = AutoTokenizer.from_pretrained(path, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, args.dtype)).eval()
    openings = ["The movie was", "I think that this film", "Honestly the acting", "A story about"]
    batch = tokenizer([openings[i % len(openings)] for i in range(args.batch)], return_tensors="pt", padding=True)
    tokens = args.batch * args.new_tokens

    def generate(**options):
        start = time.perf_counter()
        with torch.no_grad():
            out = model.generate(**batch, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens,
                                 do_sample=False, **options)
        return time.perf_counter() - start, out

    generate()
    seconds, reference = generate()
    print(f"eager, DynamicCache:        {tokens / seconds:7.1f} tokens/s", flush=True)
    generate(cache_implementation="static")
    seconds, out = generate(cache_implementation="static")
    print(f"eager, static cache:        {tokens / seconds:7.1f} tokens/s  same {torch.equal(out, reference)}", flush=True)
    model.forward = torch.compile(model.forward, dynamic=False)
    seconds, _ = generate(cache_implementation="static")
    print(f"compiled: first call (compiling) {seconds:.1f} s", flush=True)
    seconds, out = generate(cache_implementation="static")
    print(f"compiled, static cache:     {tokens / seconds:7.1f} tokens/s  same {torch.equal(out, reference)}", flush=True)


if __name__ == "__main__":
    main()
