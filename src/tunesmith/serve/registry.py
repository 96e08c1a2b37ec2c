"""What `tunesmith serve` serves under which name, and the one compute thread that runs every model's work.

Every distinct base is loaded once: the PEFT adapter runs trained on it sit on one `AdapterSet`, each served under
its run's name (its folder's, or NAME from `NAME=RUN_DIR`), and a causal LM base is served too, under its own name,
with the adapters switched off. A run saved as a whole model (full, freeze, ...) is served as it is, and `--model`
serves a plain model (catalog name, local folder or hub id).

Each loaded model has a `Batcher` (batching.py): its queue and thread step the generation requests together
(continuous.py; decode.py's static batches for a model that loop cannot step), admitting new ones between steps;
every adapter of a LoRA base shares one batch through PEFT's `adapter_names` (batch_key "lora"), other models batch
the requests of one served name at a time. Classify and score requests run in arrival order, their adapter switched
on for their own call only (`generation.using_adapter`, under the model's lock, which a batch holds too).

All model work runs on one thread of the server, its compute thread (`Served.worker`, shared by every model): the
loading, each Batcher's prefills and steps (the Batcher threads only schedule them), classify and score requests.
PyTorch parallelises each operator with OpenMP, and libgomp keeps a pool of worker threads for every thread that
ran a parallel operator; once the process holds more OpenMP threads than CPUs, libgomp lets no idle worker spin
and every operator pays a wake-up. On a 2-core Xeon a SmolLM2-135M decoding step over 8 rows took ~100 ms from a
second thread against ~68 ms from the only one (an elementwise add over 460k floats: 160 us against 34 us;
benchmarks/bench_decode_step.py --threads). Models therefore take turns step by step rather than run
side by side: on a CPU they would share the same cores anyway.

`--dtype` casts every loaded model once (`serve_dtype` checks it before anything loads). On a CPU with native bf16,
bf16 weights measured ~1.4x fp32's tokens/s at 8 clients, but a greedy answer in a batch may differ from the same
request alone (bf16 sums depend on the batch; docs/serving.md); float32 keeps the answers exactly those of the run's
own evaluation.

Nothing here imports FastAPI; torch and transformers are imported when models load.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import Executor, Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunesmith.errors import TunesmithError
from tunesmith.generation import chat_prompt, complete, model_lock, using_adapter


class ComputeThread(Executor):
    """The server's compute thread (see the module's docstring): submitted calls run one at a time, in order, on one
    daemon thread, so that Ctrl-C while a model loads ends the server at once (a ThreadPoolExecutor's thread would
    be waited for at exit)."""

    def __init__(self, name: str = "serve-compute"):
        self._calls: queue.SimpleQueue = queue.SimpleQueue()
        self._closed = False
        self._thread = threading.Thread(target=self._work, daemon=True, name=name)
        self._thread.start()

    def submit(self, fn, /, *args, **kwargs) -> Future:
        if self._closed:
            raise RuntimeError("the server is shutting down; its compute thread takes no more work")
        future: Future = Future()
        self._calls.put((future, fn, args, kwargs))
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No more work; the calls already submitted still run (`wait`: until they have)."""
        if not self._closed:
            self._closed = True
            self._calls.put(None)
        if wait:
            self._thread.join()

    def _work(self) -> None:
        while (call := self._calls.get()) is not None:
            future, fn, args, kwargs = call
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as err:  # noqa: BLE001 (handed to whoever waits on the call)
                future.set_exception(err)


class UnknownModel(TunesmithError):
    """A request named a model this server does not serve (HTTP 404)."""


def served_name(model_name: str) -> str:
    """The name a base is served under: a local folder by its folder name, a catalog name or hub id as it is."""
    path = Path(model_name).expanduser()
    return path.name if path.is_dir() else model_name


def parse_specs(items: list[str]) -> list[tuple[str, Path]]:
    """`RUN_DIR` or `NAME=RUN_DIR` -> (name, folder); each folder is checked to be a finished run (no torch)."""
    from tunesmith.runs import check_run_folder

    specs = []
    for item in items:
        name, sep, folder = item.partition("=")
        if not sep or Path(item).exists():  # a folder whose own name holds '=' is taken as it is
            name, folder = "", item
        if sep and not name.strip():
            raise TunesmithError(f"{item!r}: give NAME=RUN_DIR with a name before '=', or just RUN_DIR")
        path = Path(folder).expanduser()
        check_run_folder(path)
        specs.append((name.strip() or path.resolve().name, path))
    return specs


@dataclass
class Served:
    """One name clients can ask for: a base, an adapter on a shared base, or a whole model."""

    name: str
    kind: str  # "base", "adapter" (on a shared base), or "model" (a run saved whole, or --model)
    model: Any
    tokenizer: Any
    worker: ComputeThread  # the server's compute thread (shared): this model's work, in arrival order
    run: Any = None  # the Run it serves (None for a base or a plain --model)
    adapter: str | None = None  # its adapter's name on the shared model (adapters only)
    parent: str | None = None  # the base an adapter sits on
    created: int = field(default_factory=lambda: int(time.time()))
    batcher: Any = None  # the model's Batcher (batching.py): its generation requests, batched
    preamble: list[int] | None = None  # what every chat prompt of it starts with (continuous.preamble finds it)
    batch_key: str | None = None  # "lora": any adapter of the base (and the base) share a batch; else its name

    def __post_init__(self):
        self.batch_key = self.batch_key or self.name

    @property
    def objective(self) -> str | None:
        return self.run.config.objective.name if self.run is not None else None

    @property
    def generates(self) -> bool:
        return self.run is None or self.run.objective.model_kind == "causal_lm"

    @property
    def classifies(self) -> bool:
        return self.run is not None and self.run.objective.predict is not None

    @property
    def scores(self) -> bool:
        return self.run is not None and self.run.objective.score is not None

    @property
    def context(self) -> int | None:
        """The most tokens (prompt + completion) the model takes: its position embeddings, else the tokenizer's limit."""
        limit = getattr(getattr(self.model, "config", None), "max_position_embeddings", None)
        if not limit:
            limit = getattr(self.tokenizer, "model_max_length", None)
        return int(limit) if limit and limit < 10**7 else None

    # --- prompts, formatted as the run was trained -------------------------------------------------------------

    def chat_ids(self, messages: list[dict]) -> list[int]:
        """Token ids of a conversation, ending with the assistant's turn. A run's prompts are formatted as in
        training: one user message exactly as `tunesmith generate` formats a prompt; a longer conversation through
        the chat template with the run's system prompt (unless the request has one) and data.template."""
        from tunesmith.data.templates import probe_row, prompt_and_response
        from tunesmith.data.tokenize import sft_prompt_ids

        if self.run is None:
            return self._chat_template(messages)
        d = self.run.config.data
        takes_prompts = any(role.name == "prompt" for role in self.run.objective.roles)
        if len(messages) == 1 and messages[0]["role"] == "user":
            text = messages[0]["content"]
            if takes_prompts:
                return sft_prompt_ids(self.tokenizer, d, probe_row(text, d))
            return list(self.tokenizer(text)["input_ids"])  # a causal_lm run continues raw text
        if d.format == "text":
            raise TunesmithError(f"messages: {self.name!r} was trained on plain text (data.format: text), so it takes "
                                 "one user message, formatted as in training; send one user message, or send raw "
                                 "text to /v1/completions")
        has_system = any(m["role"] == "system" for m in messages)
        rendered = [{"role": "system", "content": d.system_prompt}] if d.system_prompt and not has_system else []
        for m in messages:
            if m["role"] == "user" and d.template:
                m = {**m, "content": prompt_and_response(probe_row(m["content"], d), d)[0].strip()}
            rendered.append(m)
        return self._chat_template(rendered)

    def _chat_template(self, messages: list[dict]) -> list[int]:
        try:
            return chat_prompt(self.tokenizer, messages)
        except TunesmithError:
            raise
        except Exception as err:  # the template's own checks (roles in order, roles it knows)
            raise TunesmithError(f"messages: the chat template of {self.name!r} does not accept these messages "
                                 f"({type(err).__name__}: {err})") from None

    def text_ids(self, prompt: str | list[int]) -> list[int]:
        """A raw prompt's ids (a string is tokenized with the tokenizer's special tokens; ids are used as they are)."""
        if isinstance(prompt, str):
            return list(self.tokenizer(prompt)["input_ids"])
        outside = [t for t in prompt if not 0 <= t < len(self.tokenizer)]
        if outside:
            raise TunesmithError(f"prompt: token ids {outside[:5]} are outside {self.name!r}'s vocabulary "
                                 f"(0 to {len(self.tokenizer) - 1})")
        return list(prompt)

    # --- work, run on the worker -----------------------------------------------------------------------------------

    @contextmanager
    def _base_only(self):
        """A base that has adapters on it answers with them switched off, under the model's lock."""
        peft = _peft()
        if self.kind == "base" and isinstance(self.model, peft.PeftModel):
            with model_lock(self.model), self.model.disable_adapter():
                yield
        else:
            yield

    @contextmanager
    def active(self):
        """This name's adapter switched on (a base: adapters off), under the model's lock, for a batch of its own."""
        with self._base_only(), using_adapter(self.model, self.adapter):
            yield

    def complete(self, prompts: list[list[int]], **options) -> list:
        """`generation.complete` with this name's adapter (or none); options as there."""
        with self._base_only():
            return complete(self.model, self.tokenizer, prompts, adapter=self.adapter, **options)

    def predict(self, texts: list[str]) -> list[dict]:
        """What `tunesmith predict` answers: label, score and probabilities per text."""
        run = self.run
        with using_adapter(self.model, self.adapter):
            return run.objective.predict(self.model, self.tokenizer, list(texts), run.config, run.task)

    def score(self, rows: list[dict]) -> list[float]:
        """A reward model's score of each row (Run.score's answer)."""
        run = self.run
        with using_adapter(self.model, self.adapter):
            return run.objective.score(self.model, self.tokenizer, list(rows), run.config, run.task)


def _peft():
    import peft

    return peft


class Registry:
    """The served names. `close()` lets each worker finish the requests it holds."""

    def __init__(self, served: list[Served]):
        self.models = {s.name: s for s in served}

    def get(self, name: str) -> Served:
        if name not in self.models:
            raise UnknownModel(f"The model {name!r} does not exist on this server; it serves: {', '.join(self.models)}")
        return self.models[name]

    def close(self) -> None:
        for batcher in {id(s.batcher): s.batcher for s in self.models.values() if s.batcher}.values():
            batcher.close()
        for worker in {id(s.worker): s.worker for s in self.models.values()}.values():
            worker.shutdown(wait=True)


def _plan(specs, models, trust_remote_code):
    """Which runs share a base (grouped by base, dtype, model kind and PEFT type), which stand alone, which plain
    models are added; every served name checked to be unique before anything loads."""
    from tunesmith.runs import Run, read_json_file

    groups: dict[tuple, list[tuple[str, Any]]] = {}
    whole: list[tuple[str, Any]] = []
    for name, folder in specs:
        run = Run(folder, trust_remote_code=trust_remote_code)
        if run.is_peft_adapter:
            peft_type = read_json_file(run.weights_dir / "adapter_config.json").get("peft_type")
            key = (run.config.model.name, run.config.model.dtype, run.objective.model_kind, peft_type)
            groups.setdefault(key, []).append((name, run))
        else:
            whole.append((name, run))
    names = [n for members in groups.values() for n, _ in members] + [n for n, _ in whole]
    bases = []
    for key in groups:
        if key[2] == "causal_lm" and served_name(key[0]) not in bases:
            bases.append(served_name(key[0]))
    plain = [m for m in dict.fromkeys(models) if served_name(m) not in bases]
    taken = names + bases + [served_name(m) for m in plain]
    clashes = sorted({n for n in taken if taken.count(n) > 1})
    if clashes:
        raise TunesmithError(f"two served models would share the name(s) {clashes}; name runs with NAME=RUN_DIR "
                             "(e.g. `tunesmith serve support=runs/chat-sft-lora`)")
    return groups, whole, plain


def _mixable(model) -> bool:
    """Adapters that PEFT mixes in one batch (`adapter_names`): LoRA without DoRA; prompt, prefix, IA3... do not."""
    configs = getattr(model, "peft_config", None) or {}
    return bool(configs) and all(getattr(c.peft_type, "value", c.peft_type) == "LORA" and not getattr(c, "use_dora", False)
                                 for c in configs.values())


def _batchers(served: list[Served], batching) -> None:
    """One Batcher per loaded model, shared by the names served on it; its model work runs on the compute thread."""
    from tunesmith.serve.batching import Batcher
    from tunesmith.serve.continuous import open_session
    from tunesmith.serve.decode import run_jobs

    made: dict[int, Any] = {}
    for s in served:
        if id(s.model) not in made:
            made[id(s.model)] = Batcher(s.parent or s.name, run_jobs, batching, open_session, s.worker)
        s.batcher = made[id(s.model)]
        if s.kind in ("adapter", "base") and _mixable(s.model):
            s.batch_key = "lora"


SERVE_DTYPES = ("auto", "float32", "bfloat16", "float16")


def serve_dtype(dtype: str | None) -> str | None:
    """`--dtype` as the weights dtype to cast to (None: each model as its run loads it): 'auto' is bfloat16 where
    this machine computes bf16 natively, float32 elsewhere; bfloat16 where it is emulated is refused."""
    from tunesmith.hardware import native_bf16

    if dtype is None or dtype in ("float32", "float16"):
        return dtype
    if dtype not in SERVE_DTYPES:
        raise TunesmithError(f"--dtype {dtype!r}: use one of {', '.join(SERVE_DTYPES)}")
    native, why = native_bf16()
    if dtype == "bfloat16" and not native:
        raise TunesmithError(f"--dtype bfloat16: {why}; use --dtype auto (bf16 only where native) or float32")
    return "bfloat16" if native else "float32"


def load_registry(specs: list[tuple[str, Path]], models: list[str] = (), trust_remote_code: bool = False,
                  batching=None, dtype: str | None = None) -> Registry:
    """Load what `tunesmith serve` serves: specs from `parse_specs`, plus plain models by name; `batching`
    (batching.Batching) says how requests share a model; `dtype` (from `serve_dtype`): the weights of every model
    cast to it once loaded (None: as loaded). Everything loads on the server's compute thread (see the module's
    docstring), which then runs every model's work."""
    groups, whole, plain = _plan(specs, list(models), trust_remote_code)
    worker = ComputeThread()
    try:
        served = worker.submit(_load, groups, whole, plain, trust_remote_code, dtype, worker).result()
    except BaseException:
        worker.shutdown(wait=True)
        raise
    _batchers([s for s in served if s.generates], batching)
    return Registry(served)


def _load(groups, whole, plain, trust_remote_code: bool, dtype: str | None, worker) -> list[Served]:
    """The models of `_plan`'s groups, whole runs and plain names, loaded (cast to `dtype`), each name served."""
    from tunesmith.modeling import load_causal_lm
    from tunesmith.runs.adapters import AdapterSet

    served: list[Served] = []
    for (base_model, _, kind, _), members in groups.items():
        adapters = AdapterSet([run.dir for _, run in members], trust_remote_code=trust_remote_code,
                              names=[n for n, _ in members])
        base = served_name(base_model)
        for name, run in adapters.runs.items():
            served.append(Served(name, "adapter", adapters.model, run.tokenizer, worker, run=run, adapter=name,
                                 parent=base, created=_created(run)))
        if kind == "causal_lm" and base not in {s.name for s in served}:
            served.append(Served(base, "base", adapters.model, next(iter(adapters.runs.values())).tokenizer, worker))
    for name, run in whole:
        served.append(Served(name, "model", run.model, run.tokenizer, worker, run=run, created=_created(run)))
    for name in plain:
        model, tokenizer = load_causal_lm(name, trust_remote_code)
        served.append(Served(served_name(name), "model", model, tokenizer, worker))
    if dtype is not None:
        import torch

        for model in {id(s.model): s.model for s in served}.values():
            model.to(getattr(torch, dtype))
    return served


def _created(run) -> int:
    return int((run.dir / "manifest.json").stat().st_mtime)
