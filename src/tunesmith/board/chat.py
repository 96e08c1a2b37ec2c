"""Trying a finished run from the board: a generating run answers a prompt (its base beside it, formatted the same
way), a classifier run labels a text. As in `tunesmith serve`, runs with PEFT adapters on one base share that base:
each is an adapter of one `AdapterSet`, switched on for its own request only (`generation.using_adapter`), and the
base answer is the same model with its adapters off. A run saved as a whole model is loaded on its own. Models load
on first use and stay loaded (a few bases at a time); one request at a time uses them (a lock), as `tunesmith
generate` / `predict` would, each on a thread of its own that ends with it: the web server's pool of threads would
each keep an OpenMP pool of worker threads alive, and with two alive every operator pays a wake-up
(serve/registry.py says why and what it cost)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

from tunesmith.errors import TunesmithError

KEEP = 3  # bases (or whole-model runs) kept loaded
MAX_NEW_TOKENS = 256


class Chat:
    def __init__(self, trust_remote_code: bool = False):
        self.trust_remote_code = trust_remote_code
        self.loaded: OrderedDict[tuple, dict] = OrderedDict()  # key -> {"adapters": AdapterSet} or {"run", "base"}
        self.names: dict[Path, str] = {}  # a run folder -> its adapter's name on the shared base
        self.lock = threading.Lock()

    def _entry(self, folder: Path) -> tuple[dict, object, str | None]:
        """(the loaded entry, the run, its adapter name or None for a run loaded whole)."""
        from tunesmith.runs import Run
        from tunesmith.runs.adapters import AdapterSet, peft_type

        run = Run(folder, trust_remote_code=self.trust_remote_code)
        if not run.is_peft_adapter:
            key = ("whole", folder)
            entry = self.loaded.setdefault(key, {"run": run, "base": None})
            self._keep(key)
            return entry, entry["run"], None
        key = ("base", run.config.model.name, run.config.model.revision, run.objective.model_kind, peft_type(run))
        name = self.names.setdefault(folder, f"run{len(self.names)}")
        entry = self.loaded.get(key)
        if entry is None:
            entry = self.loaded[key] = {"adapters": AdapterSet([folder], self.trust_remote_code, names=[name])}
        elif name not in entry["adapters"].runs:
            entry["adapters"].add(folder, name, self.trust_remote_code)
        self._keep(key)
        return entry, entry["adapters"].runs[name], name

    def _keep(self, key: tuple) -> None:
        self.loaded.move_to_end(key)
        while len(self.loaded) > KEEP:
            self.loaded.popitem(last=False)

    def answer(self, folder: Path, text: str, max_new_tokens: int = 64, with_base: bool = True) -> dict:
        """{"kind", "tuned", "base"} for a generating run (greedy, as `tunesmith generate`), {"kind", "prediction"}
        for a classifier; computed after the requests before it, on a thread that ends with the answer."""
        if not text.strip():
            raise TunesmithError("type a prompt first")
        max_new_tokens = max(1, min(int(max_new_tokens), MAX_NEW_TOKENS))
        out: dict = {}

        def work() -> None:
            try:
                out["answer"] = self._answer(folder, text, max_new_tokens, with_base)
            except BaseException as err:  # noqa: BLE001 (raised to the caller below)
                out["error"] = err

        with self.lock:
            thread = threading.Thread(target=work, name="board-chat")
            thread.start()
            thread.join()
        if "error" in out:
            raise out["error"]
        return out["answer"]

    def _answer(self, folder: Path, text: str, max_new_tokens: int, with_base: bool) -> dict:
        entry, run, name = self._entry(folder)
        adapters = entry.get("adapters")
        if run.objective.model_kind != "causal_lm":
            prediction = adapters.predict([text], name) if adapters else run.predict([text])
            return {"kind": "classify", "prediction": prediction[0]}
        if adapters:
            tuned = adapters.generate([text], name, max_new_tokens=max_new_tokens)[0]
            base = adapters.generate_base([text], name, max_new_tokens=max_new_tokens)[0] if with_base else None
        else:
            tuned = run.generate([text], max_new_tokens=max_new_tokens)[0]
            base = self._base(entry, text, max_new_tokens) if with_base else None
        return {"kind": "generate", "tuned": tuned, "base": base}

    def _base(self, entry: dict, text: str, max_new_tokens: int) -> str:
        from tunesmith.config import with_max_new_tokens

        run = entry["run"]
        if entry["base"] is None:
            entry["base"] = run.load_base()
        cfg = with_max_new_tokens(run.config, max_new_tokens)
        return run.objective.probe(entry["base"], run.tokenizer, [text], cfg, run.task)[0]
