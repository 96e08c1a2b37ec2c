"""`tunesmith serve / score`: answer requests with finished runs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from tunesmith.cli.common import TRUST_HELP, app, call, console, err_console, start
from tunesmith.serve.batching import (
    DEFAULT_BATCH_WINDOW_MS,
    DEFAULT_MAX_BATCH,
    DEFAULT_MAX_QUEUE,
    DEFAULT_REQUEST_TIMEOUT,
)
from tunesmith.serve.limits import DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_PROMPTS, DEFAULT_MAX_REQUEST_TOKENS


@app.command()
def serve(
    run_dirs: Optional[list[str]] = typer.Argument(None, help="Run folders to serve, each RUN_DIR or NAME=RUN_DIR (default name: the folder's). Adapter runs on one base share it."),
    model: Optional[list[str]] = typer.Option(None, "--model", help="Also serve a plain model: catalog name, local folder or hub id (repeatable)."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on: this machine only unless you give another (then set an API key)."),
    port: int = typer.Option(8000, "--port"),
    api_key: Optional[str] = typer.Option(None, "--api-key", envvar="TUNESMITH_API_KEY", show_envvar=True, help="Clients must send 'Authorization: Bearer KEY'."),
    max_prompts: int = typer.Option(DEFAULT_MAX_PROMPTS, "--max-prompts", min=1, help="Most prompts in one /v1/completions request (and inputs in one /v1/classify or /v1/score request)."),
    max_body_bytes: int = typer.Option(DEFAULT_MAX_BODY_BYTES, "--max-body-bytes", min=1, help="Largest request body, in bytes."),
    max_request_tokens: int = typer.Option(DEFAULT_MAX_REQUEST_TOKENS, "--max-request-tokens", min=1, help="Most new tokens one request may ask for: prompts x n x max_tokens (a default max_tokens is cut to fit)."),
    max_batch: int = typer.Option(DEFAULT_MAX_BATCH, "--max-batch", min=1, help="Most sequences generated together: requests that arrive while the model is busy share a batch (adapters of one LoRA base too). 1: one request at a time."),
    batch_window_ms: float = typer.Option(DEFAULT_BATCH_WINDOW_MS, "--batch-window-ms", min=0, help="How long a request that finds its model idle waits for others to batch with, in milliseconds."),
    max_queue: int = typer.Option(DEFAULT_MAX_QUEUE, "--max-queue", min=1, help="Most requests waiting per model; one more is answered 429 with Retry-After."),
    request_timeout: float = typer.Option(DEFAULT_REQUEST_TIMEOUT, "--request-timeout", min=0, help="Seconds a request may take from arrival to answer (else 504, and its generation stops); 0: no limit."),
    dtype: Optional[str] = typer.Option(None, "--dtype", help="Cast every model's weights once loaded: auto (bfloat16 where this machine computes bf16 natively, else float32), bfloat16, float16, float32. Default: as each run loads them. On a CPU with native bf16 it measured ~1.4x fp32's tokens/s at 8 clients, but an answer in a batch may differ from the same request alone (docs/serving.md)."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help=TRUST_HELP),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
):
    """Serve runs over an OpenAI-compatible API: each base loaded once, its adapters picked per request by `model`."""
    from tunesmith.serve.batching import Batching
    from tunesmith.serve.limits import Limits
    from tunesmith.serve.registry import parse_specs, serve_dtype
    from tunesmith.web import address, bind

    if not run_dirs and not model:
        err_console.print("[bold red]error:[/] give run folders to serve (RUN_DIR or NAME=RUN_DIR) or --model NAME")
        raise typer.Exit(2)
    specs = call(parse_specs, list(run_dirs or []))  # folder mistakes are reported before torch loads
    dtype = call(serve_dtype, dtype)
    sock = call(bind, host, port)  # and a port in use before any model loads
    limits = Limits(max_prompts, max_body_bytes, max_request_tokens)
    batching = Batching(max_batch, batch_window_ms, max_queue, request_timeout)
    start(verbose)

    from tunesmith.serve.server import serve as run_server

    def ready(registry):
        table = Table(title=f"serving on {address(sock)}/v1" + (" (API key required)" if api_key else ""))
        for col in ("model", "kind", "objective", "parent"):
            table.add_column(col)
        for s in registry.models.values():
            table.add_row(s.name, s.kind, s.objective or "", s.parent or "")
        console.print(table)
        if hint := _bf16_hint(dtype, max_batch):
            console.print(hint)

    try:
        call(run_server, specs, list(model or []), host=host, port=port, api_key=api_key,
             trust_remote_code=trust_remote_code, limits=limits, batching=batching, sock=sock, on_ready=ready,
             dtype=dtype)
    finally:
        sock.close()


def _bf16_hint(dtype: str | None, max_batch: int) -> str | None:
    """A line for a batching server in the run's own dtype on a CPU that computes bf16 natively: --dtype auto pays."""
    import torch

    from tunesmith.hardware import native_bf16

    if dtype is not None or max_batch < 2 or torch.cuda.is_available() or not native_bf16(use_cpu=True)[0]:
        return None
    return ("[dim]This CPU computes bf16 natively: --dtype auto measured ~1.4x the tokens/s of fp32 at 8 clients here, "
            "but an answer in a batch may then differ from the same request alone (docs/serving.md).[/]")


@app.command()
def score(
    run_dir: Path = typer.Argument(..., help="A reward run folder."),
    texts: list[str] = typer.Argument(..., help="Responses to score."),
    prompt: Optional[str] = typer.Option(None, "--prompt", help="The prompt the responses answer (read as in training)."),
    as_json: bool = typer.Option(False, "--json"),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help=TRUST_HELP),
):
    """Score responses with a reward model run: one reward per text (higher is better)."""
    start(runs=[run_dir])

    from rich.markup import escape
    from rich.table import Table

    from tunesmith.runs import Run

    run = call(Run, run_dir, trust_remote_code=trust_remote_code)
    rows = [{"prompt": prompt, "response": text} for text in texts]
    rewards = call(run.score, rows)
    if as_json:
        print(json.dumps([{**row, "reward": r} for row, r in zip(rows, rewards)], indent=2))
        return
    table = Table(title=f"prompt: {escape(prompt)}" if prompt else None)
    table.add_column("response", overflow="fold")
    table.add_column("reward", justify="right")
    for text, r in zip(texts, rewards):
        table.add_row(escape(text), f"{r:+.4f}")
    console.print(table)


