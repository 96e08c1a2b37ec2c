"""`tunesmith serve` under load: two chat-sft LoRA adapters and their base (the real SmolLM2-135M-Instruct) in one
server, against one server process per model. Prints requests/s, generated tokens/s, p50/p95 latency and the peak
memory (RSS) of the server processes, and whether every answer equals the one the same request gets alone.

    .venv/bin/python benchmarks/bench_serve.py [--clients 16] [--requests 10] [--max-tokens 32] [--batching]
    .venv/bin/python benchmarks/bench_serve.py --load 1,4,8,16 [--max-batch 16] [--bf16] [--llama-cpp MODEL.gguf
        [--llama-python PYTHON]] [--quick]

The two runs (runs/bench-serve-a, runs/bench-serve-b) are trained first if missing: configs/chat-sft-lora.yaml for
5 steps with seeds 0 and 1. Each client sends its requests one after another, alternating adapter a, adapter b and
the base; greedy, so answers are comparable. `--batching` also measures, in this process, what batching 8 prompts
in one generate call would buy over one at a time.

`--load LEVELS` measures instead, in one invocation, each concurrency level (clients at once, each sending
--requests requests) against (a) the server before batching (`--max-batch 1`), (b) the server with batching
(`--max-batch N`), with `--bf16` also (b') the batching server with `--dtype bfloat16` (where this machine computes
bf16 natively), and (c) with `--llama-cpp GGUF`, llama.cpp's OpenAI-compatible server (llama-cpp-python[server],
`--n_threads` = this machine's cores) on a GGUF of the same tuned model; then prints the targets (tokens/s at 8
clients over 1 client, p95 at 8 clients over the single-client latency, peak RSS batched over unbatched).
`--model NAME` serves a plain model instead of the two runs; `--quick` is a smoke run (levels 1,2; 2 requests; 4
tokens). Figures are printed, never asserted.
"""

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

BASE = "smollm2-135m-instruct"
RUNS = {"bench-serve-a": 0, "bench-serve-b": 1}
TRAIN = ["train.max_steps=5", "train.per_device_train_batch_size=4", "train.eval_strategy=no", "eval.max_examples=16",
         "eval.num_samples=1", "eval.max_new_tokens=8", "eval.probes=[]"]
PROMPTS = ["What is AI?", "Do you like pizza?", "Tell me a joke.", "How do airplanes fly?"]


def ensure_runs() -> list[Path]:
    dirs = []
    for name, seed in RUNS.items():
        out = Path("runs") / name
        if not (out / "manifest.json").exists():
            subprocess.run([sys.executable, "-m", "tunesmith.cli", "train", "configs/chat-sft-lora.yaml", *TRAIN,
                            f"train.seed={seed}", "--out", str(out)], check=True)
        dirs.append(out)
    return dirs


def start_server(args: list[str], port: int) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "tunesmith.cli", "serve", *args, "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.5)
        if proc.poll() is not None:
            raise RuntimeError(f"tunesmith serve {' '.join(args)} exited with {proc.returncode}")
    raise RuntimeError("the server did not start in 10 minutes")


def rss_mb(pid: int, field: str = "VmHWM") -> float:
    """A process's peak resident memory (VmHWM; loading included) or its current one (VmRSS), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def ask(url: str, model: str, prompt: str, max_tokens: int) -> tuple[str, int, float]:
    start = time.perf_counter()
    r = httpx.post(f"{url}/v1/chat/completions", timeout=600, json={
        "model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens, "temperature": 0})
    r.raise_for_status()
    body = r.json()
    return body["choices"][0]["message"]["content"], body["usage"]["completion_tokens"], time.perf_counter() - start


def load(urls: dict[str, str], clients: int, requests: int, max_tokens: int, solo: dict | None = None) -> dict:
    """Each client sends `requests` requests in turn, cycling through the models; returns the measured figures.
    `solo`: each (model, prompt)'s answer alone (measured here, which also warms up, when not given)."""
    models = list(urls)
    if solo is None:
        solo = {(m, p): ask(urls[m], m, p, max_tokens)[0] for m in models for p in PROMPTS}
    results, errors = [], []

    def client(i: int) -> None:
        try:
            for j in range(requests):
                model, prompt = models[(i + j) % len(models)], PROMPTS[(i // len(models) + j) % len(PROMPTS)]
                results.append((model, prompt, *ask(urls[model], model, prompt, max_tokens)))
        except Exception as err:  # counted below
            errors.append(err)

    start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    latencies = sorted(r[4] for r in results)
    same = all(text == solo[m, p] for m, p, text, _, _ in results)
    return {"requests": len(results), "errors": len(errors), "wall_s": wall, "rps": len(results) / wall,
            "tokens_per_s": sum(r[3] for r in results) / wall, "p50_s": statistics.median(latencies),
            "p95_s": latencies[int(0.95 * (len(latencies) - 1))], "same_as_solo": same,
            "answers": {f"{m} | {p}": t for m, p, t, _, _ in results}}


def stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        proc.send_signal(signal.SIGINT)  # graceful: Uvicorn finishes what is in flight
    for proc in procs:
        proc.wait(timeout=120)


def batching(max_tokens: int) -> dict:
    """One generate call over 8 prompts (left-padded) against 8 calls of one, greedy, on the base model."""
    from tunesmith import generation
    from tunesmith.config import ModelConfig
    from tunesmith.modeling import ensure_pad_token, load_model, load_tokenizer

    tok = load_tokenizer(ModelConfig(name=BASE))
    model = load_model(ModelConfig(name=BASE), "causal_lm").eval()
    ensure_pad_token(tok, model)
    prompts = [generation.chat_prompt(tok, [{"role": "user", "content": p}]) for p in (PROMPTS + PROMPTS)[:8]]
    generation.complete(model, tok, prompts[:1], max_new_tokens=4)  # warm-up
    start = time.perf_counter()
    alone = [generation.complete(model, tok, [p], max_new_tokens=max_tokens)[0] for p in prompts]
    one_by_one = time.perf_counter() - start
    start = time.perf_counter()
    together = generation.complete(model, tok, prompts, max_new_tokens=max_tokens, batch_size=8)
    batched = time.perf_counter() - start
    return {"one_by_one_tokens_per_s": sum(len(c.token_ids) for c in alone) / one_by_one,
            "batched_tokens_per_s": sum(len(c.token_ids) for c in together) / batched,
            "identical_answers": sum(a.token_ids == b.token_ids for a, b in zip(alone, together)), "of": len(prompts)}


def load_levels(name: str, urls: dict[str, str], levels: list[int], requests: int, max_tokens: int, pid=None) -> dict:
    """One server under each concurrency level in turn: {level: figures}, and its peak RSS when `pid` is known."""
    models = list(urls)
    solo = {(m, p): ask(urls[m], m, p, max_tokens)[0] for m in models for p in PROMPTS}  # also warms up
    out = {}
    for level in levels:
        out[level] = f = load(urls, level, requests, max_tokens, solo)
        print(f"  {name:22} {level:3d} clients: {f['rps']:6.2f} req/s {f['tokens_per_s']:8.1f} tok/s  p50 "
              f"{f['p50_s']:6.2f} s  p95 {f['p95_s']:6.2f} s  errors {f['errors']}  = solo "
              f"{'yes' if f['same_as_solo'] else 'NO'}", flush=True)
    if pid is not None:
        for f in out.values():
            f["peak_rss_mb"] = rss_mb(pid)
    return out


def start_llama_cpp(gguf: Path, port: int, python: str = sys.executable) -> subprocess.Popen:
    """llama.cpp's OpenAI-compatible server (llama-cpp-python[server], run by `python`) on `gguf`, one thread per core."""
    proc = subprocess.Popen([python, "-m", "llama_cpp.server", "--model", str(gguf), "--port", str(port),
                             "--n_threads", str(os.cpu_count()), "--n_ctx", "2048"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/models").status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.5)
        if proc.poll() is not None:
            raise RuntimeError(f"llama_cpp.server exited with {proc.returncode} (pip install 'llama-cpp-python[server]')")
    raise RuntimeError("llama_cpp.server did not start in 5 minutes")


def under_load(args, served: list[str], names: list[str]) -> dict:
    """--load: (a) --max-batch 1, (b) --max-batch N, (c) llama.cpp if asked; each at every level."""
    levels = [int(x) for x in args.load.split(",")]
    setups = {"before batching": ["--max-batch", "1"],
              f"batching (max {args.max_batch})": ["--max-batch", str(args.max_batch), "--max-queue", "1024"]}
    if args.bf16:
        setups[f"batching bf16 (max {args.max_batch})"] = [*setups[f"batching (max {args.max_batch})"], "--dtype", "bfloat16"]
    figures = {}
    for setup, flags in setups.items():
        proc = start_server([*served, *flags], args.port)
        url = f"http://127.0.0.1:{args.port}"
        try:
            figures[setup] = load_levels(setup, {n: url for n in names}, levels, args.requests, args.max_tokens, proc.pid)
        finally:
            stop([proc])
    if args.llama_cpp:
        proc = start_llama_cpp(args.llama_cpp, args.port + 10, args.llama_python)
        try:
            url = f"http://127.0.0.1:{args.port + 10}"
            figures["llama.cpp"] = load_levels("llama.cpp", {args.llama_cpp.stem: url}, levels, args.requests,
                                               args.max_tokens, proc.pid)
        finally:
            stop([proc])
    print_levels(figures, levels)
    return figures


def print_levels(figures: dict, levels: list[int]) -> None:
    print(f"\n{'setup':24} {'clients':>7} {'req/s':>6} {'gen tok/s':>9} {'p50 s':>6} {'p95 s':>6} {'peak RSS MB':>11} {'= solo':>6}")
    for setup, by_level in figures.items():
        for level, f in by_level.items():
            print(f"{setup:24} {level:7d} {f['rps']:6.2f} {f['tokens_per_s']:9.1f} {f['p50_s']:6.2f} {f['p95_s']:6.2f} "
                  f"{f.get('peak_rss_mb', float('nan')):11,.0f} {'yes' if f['same_as_solo'] else 'NO':>6}")
    batched = next((v for k, v in figures.items() if k.startswith("batching")), None)
    before = figures.get("before batching")
    for setup, by_level in figures.items():
        if setup.startswith("batching") and 1 in by_level and 8 in by_level:
            print(f"{setup}: tok/s at 8 clients / 1 client = "
                  f"{by_level[8]['tokens_per_s'] / by_level[1]['tokens_per_s']:.2f}x (target >= 4x); p95 at 8 clients / "
                  f"latency at 1 = {by_level[8]['p95_s'] / by_level[1]['p50_s']:.2f}x (target <= 3x)")
    peer = figures.get("llama.cpp")
    for setup, by_level in figures.items():
        if peer and setup.startswith("batching"):
            print(f"{setup} / llama.cpp, generated tok/s: " + ", ".join(
                f"{level} clients {by_level[level]['tokens_per_s'] / peer[level]['tokens_per_s']:.2f}x"
                for level in by_level if level in peer))
    if batched and before:
        first = next(iter(batched))
        print(f"peak RSS batched / unbatched: {batched[first]['peak_rss_mb'] / before[first]['peak_rss_mb']:.3f} "
              "(target <= 1.10)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=10, help="requests per client")
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--batching", action="store_true", help="also measure batched against one-at-a-time generation")
    parser.add_argument("--runs", type=Path, nargs=2, help="two chat-sft LoRA runs of smollm2-135m-instruct to serve "
                        "(default: runs/bench-serve-a and -b, trained if missing)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--load", help="concurrency levels, e.g. 1,4,8,16: the server before and after batching")
    parser.add_argument("--max-batch", type=int, default=16, help="--max-batch of the batching server (--load)")
    parser.add_argument("--bf16", action="store_true", help="also the batching server with --dtype bfloat16 (--load)")
    parser.add_argument("--llama-cpp", type=Path, help="a GGUF of the same tuned model: llama.cpp's server as a peer (--load)")
    parser.add_argument("--llama-python", default=sys.executable, help="the Python that has llama-cpp-python[server] "
                        "(default: this one; it compiles llama.cpp, so it may live in a venv of its own)")
    parser.add_argument("--model", help="serve this plain model (catalog name, folder) instead of the two runs (--load)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: --load 1,2, 2 requests, 4 tokens")
    args = parser.parse_args()
    if args.quick:
        args.load, args.requests, args.max_tokens = args.load or "1,2", 2, 4
    if args.load:
        print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; {time.strftime('%Y-%m-%d')}; "
              f"levels {args.load}, {args.requests} requests per client, max_tokens {args.max_tokens}, greedy")
        if args.model:
            served, names = ["--model", args.model], [Path(args.model).name if Path(args.model).is_dir() else args.model]
        else:
            a, b = args.runs or ensure_runs()
            served, names = [str(a), str(b)], [a.name, b.name, BASE]
        figures = under_load(args, served, names)
        if args.json:
            args.json.write_text(json.dumps({k: {str(lv): {x: y for x, y in f.items() if x != "answers"}
                                                 for lv, f in v.items()} for k, v in figures.items()}, indent=2) + "\n")
        return
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; {time.strftime('%Y-%m-%d')}; "
          f"{args.clients} clients x {args.requests} requests, max_tokens {args.max_tokens}, greedy")
    a, b = args.runs or ensure_runs()
    figures = {}
    if args.batching:  # first: it is quick, and needs no server
        figures["batching"] = batch = batching(args.max_tokens)
        print(f"batching 8 prompts in one call: {batch['batched_tokens_per_s']:.1f} tokens/s against "
              f"{batch['one_by_one_tokens_per_s']:.1f} one at a time; identical answers {batch['identical_answers']} of {batch['of']}")

    shared = start_server([str(a), str(b)], args.port)
    figures["one server, shared base"] = load({a.name: f"http://127.0.0.1:{args.port}", b.name: f"http://127.0.0.1:{args.port}",
                                               BASE: f"http://127.0.0.1:{args.port}"}, args.clients, args.requests, args.max_tokens)
    figures["one server, shared base"].update(peak_rss_mb=rss_mb(shared.pid), rss_mb=rss_mb(shared.pid, "VmRSS"))
    stop([shared])

    ports = {a.name: args.port + 1, b.name: args.port + 2, BASE: args.port + 3}
    procs = [start_server([str(a)], ports[a.name]), start_server([str(b)], ports[b.name]),
             start_server(["--model", BASE], ports[BASE])]
    figures["one server per model"] = load({m: f"http://127.0.0.1:{p}" for m, p in ports.items()},
                                           args.clients, args.requests, args.max_tokens)
    figures["one server per model"].update(peak_rss_mb=sum(rss_mb(p.pid) for p in procs),
                                           rss_mb=sum(rss_mb(p.pid, "VmRSS") for p in procs))
    stop(procs)
    one, many = figures["one server, shared base"], figures["one server per model"]
    same_between = all(many["answers"].get(k, t) == t for k, t in one["answers"].items())

    print(f"\n{'setup':26} {'requests':>8} {'errors':>6} {'req/s':>6} {'gen tok/s':>9} {'p50 s':>6} {'p95 s':>6} "
          f"{'peak RSS MB':>11} {'RSS MB':>7} {'= solo':>6}")
    for name, f in figures.items():
        print(f"{name:26} {f['requests']:8d} {f['errors']:6d} {f['rps']:6.2f} {f['tokens_per_s']:9.1f} {f['p50_s']:6.2f} "
              f"{f['p95_s']:6.2f} {f['peak_rss_mb']:11,.0f} {f['rss_mb']:7,.0f} {'yes' if f['same_as_solo'] else 'NO':>6}")
    print(f"memory the shared base saves: {many['peak_rss_mb'] - one['peak_rss_mb']:,.0f} MB "
          f"({many['peak_rss_mb'] / one['peak_rss_mb']:.1f}x less); both setups give the same answers: "
          f"{'yes' if same_between else 'NO'}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
