"""Trying a finished run from the board: a generating run answers a prompt (its base beside it, formatted the same
way), a classifier run labels a text. Models load on first use and stay loaded (a few runs at a time); one request
at a time uses them (a lock), as `tunesmith generate` / `predict` would."""

from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

from tunesmith.errors import TunesmithError

KEEP = 3  # runs kept loaded
MAX_NEW_TOKENS = 256


class Chat:
    def __init__(self, trust_remote_code: bool = False):
        self.trust_remote_code = trust_remote_code
        self.loaded: OrderedDict[Path, dict] = OrderedDict()
        self.lock = threading.Lock()

    def _run(self, folder: Path) -> dict:
        from tunesmith.runs import Run

        if folder not in self.loaded:
            self.loaded[folder] = {"run": Run(folder, trust_remote_code=self.trust_remote_code), "base": None}
            while len(self.loaded) > KEEP:
                self.loaded.popitem(last=False)
        self.loaded.move_to_end(folder)
        return self.loaded[folder]

    def kind(self, folder: Path) -> str:
        """'generate' or 'classify' (what the try box offers), from the run's objective."""
        with self.lock:
            run = self._run(folder)["run"]
            if run.objective.model_kind == "causal_lm":
                return "generate"
            if run.objective.predict is not None:
                return "classify"
        raise TunesmithError(f"{folder.name}: a {run.config.objective.name} run neither generates nor classifies")

    def answer(self, folder: Path, text: str, max_new_tokens: int = 64, with_base: bool = True) -> dict:
        """{"kind", "tuned", "base"} for a generating run (greedy, as `tunesmith generate`), {"kind", "prediction"}
        for a classifier."""
        if not text.strip():
            raise TunesmithError("type a prompt first")
        max_new_tokens = max(1, min(int(max_new_tokens), MAX_NEW_TOKENS))
        with self.lock:
            entry = self._run(folder)
            run = entry["run"]
            if run.objective.model_kind != "causal_lm":
                return {"kind": "classify", "prediction": run.predict([text])[0]}
            tuned = run.generate([text], max_new_tokens=max_new_tokens)[0]
            base = None
            if with_base:
                base = self._base(entry, text, max_new_tokens)
            return {"kind": "generate", "tuned": tuned, "base": base}

    def _base(self, entry: dict, text: str, max_new_tokens: int) -> str:
        from tunesmith.config import with_max_new_tokens

        run = entry["run"]
        if entry["base"] is None:
            entry["base"] = run.load_base()
        cfg = with_max_new_tokens(run.config, max_new_tokens)
        return run.objective.probe(entry["base"], run.tokenizer, [text], cfg, run.task)[0]
