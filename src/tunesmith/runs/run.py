"""A finished run folder as an object: its config, manifest and results, its tokenizer, and its base and tuned
models loaded on demand. Used by the API, by objectives that read another run (a reward model, a teacher), by the
adapter set, and by front ends. It sits below the objectives: it looks objectives and methods up by name when
asked, never at import time."""

from __future__ import annotations

from pathlib import Path

from tunesmith.config import load_config, with_max_new_tokens
from tunesmith.errors import TunesmithError
from tunesmith.registries import evaluate_run, methods, objectives
from tunesmith.runs.folder import check_run_folder, check_weights, read_json_file


class Run:
    """A finished run folder: its config, manifest and eval results, and the tuned model loaded on demand.

    An unfinished, damaged or foreign folder raises a TunesmithError that says which. `trust_remote_code` lets the
    model's own Python code run (a config read off disk never decides that alone)."""

    def __init__(self, run_dir: str | Path, trust_remote_code: bool = False, *, model=None, tokenizer=None):
        self.dir = Path(run_dir)
        self.manifest: dict = check_run_folder(self.dir)
        self.config = load_config(self.dir / "config.yaml")
        self.objective = objectives()[self.config.objective.name]
        self.trust_remote_code = trust_remote_code
        self._model, self._tokenizer = model, tokenizer  # the training process hands over what it has in memory

    @property
    def task(self) -> dict:
        return self.manifest.get("task", {})

    @property
    def results(self) -> dict:
        return read_json_file(self.dir / "eval.json", f"; {self.dir} is damaged: train it again with --overwrite")

    @property
    def weights_dir(self) -> Path:
        return self.dir / self.manifest["saved"]

    @property
    def tokenizer(self):
        from tunesmith.modeling import ensure_pad_token, load_tokenizer

        if self._tokenizer is None:
            check_weights(self.weights_dir)
            self._tokenizer = load_tokenizer(self.config.model, path=str(self.weights_dir), trust_remote_code=self.trust_remote_code)
            ensure_pad_token(self._tokenizer)
        return self._tokenizer

    def load_base(self):
        """The base model as it was evaluated before tuning (a new head initialized with the run's seed)."""
        from transformers import set_seed

        from tunesmith.modeling import ensure_pad_token, load_model, to_device

        set_seed(self.config.train.seed)  # the same new head the base was evaluated with
        model = load_model(self.config.model, self.objective.model_kind, trust_remote_code=self.trust_remote_code,
                           **self.objective.model_kwargs(self.task), **self.method.load_kwargs(self.config.method))
        ensure_pad_token(self.tokenizer, model)
        return to_device(model).eval()

    @property
    def method(self):
        return methods()[self.config.method.name]

    @property
    def is_peft_adapter(self) -> bool:
        """Saved in PEFT's layout (adapter_config.json + adapter_model.safetensors), loadable with plain PEFT."""
        return self.method.peft

    @property
    def model(self):
        """The tuned model: the base plus the run's adapter, or the run's whole saved model."""
        from tunesmith.modeling import to_device

        if self._model is None:
            self._model = to_device(self.load_tuned()).eval()
        return self._model

    def load_tuned(self, base=None):
        """A fresh copy of the tuned model: the saved weights on `base` (default: the run's base, as it was
        evaluated). A damaged or missing file is a TunesmithError that names it."""
        from tunesmith.modeling import load_model

        saved = self.weights_dir
        required = ("adapter_config.json",) if self.is_peft_adapter else ("config.json",) if self.method.saves == "model" else ()
        check_weights(saved, required)
        if base is None and self.method.saves != "model":
            base = self.load_base()
        try:
            if self.method.load:
                return self.method.load(base, saved)
            if self.is_peft_adapter:
                from peft import PeftModel

                return PeftModel.from_pretrained(base, str(saved))
            return load_model(self.config.model, self.objective.model_kind, path=str(saved), trust_remote_code=self.trust_remote_code)
        except TunesmithError:
            raise
        except Exception as err:  # files that passed the checks but do not fit the model (shapes, keys)
            raise TunesmithError(f"run {self.dir} is damaged: its weights in {saved}/ do not load onto "
                                 f"{self.config.model.name} ({type(err).__name__}: {str(err)[:500]}); "
                                 "train it again with --overwrite") from None

    def evaluate(self, data: str | None = None, split: str | None = None, columns: dict[str, str] | None = None) -> dict:
        """Base and tuned model on the run's eval set, or on another source with the same columns (roles mapped with
        `columns`, e.g. {"text": "review"}): {"base": {...}, "tuned": {...}, "examples": n}."""
        return evaluate_run(self, data=data, split=split, columns=columns)

    def predict(self, texts: list[str] | str) -> list:
        """What the run's objective predicts for each text (classify: label, score and per-label probabilities)."""
        if self.objective.predict is None:
            hint = "; use generate() (`tunesmith generate`)" if self.objective.model_kind == "causal_lm" else ""
            raise TunesmithError(f"predict: run {self.dir} is a {self.config.objective.name} run, which predicts no labels{hint}")
        texts = [texts] if isinstance(texts, str) else list(texts)
        return self.objective.predict(self.model, self.tokenizer, texts, self.config, self.task)

    def score(self, rows: list[dict]) -> list[float]:
        """The run's score of each row (a reward model's reward), for objectives that score."""
        if self.objective.score is None:
            raise TunesmithError(f"score: run {self.dir} is a {self.config.objective.name} run, which scores nothing; "
                                 "a reward model run does")
        return self.objective.score(self.model, self.tokenizer, list(rows), self.config, self.task)

    def generate(self, prompts: list[str] | str, max_new_tokens: int | None = None, **options) -> list[str]:
        """causal_lm / sft runs: completions of prompts formatted as in training; greedy unless options say otherwise
        (`tunesmith.generation.complete`'s: temperature, top_p, top_k, stop, n, seed; n per prompt, prompt-major)."""
        if self.objective.model_kind != "causal_lm":
            raise TunesmithError(f"generate: run {self.dir} is a {self.config.objective.name} run, which generates no text; "
                                 "use predict() (`tunesmith predict`)")
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        cfg = with_max_new_tokens(self.config, max_new_tokens)
        return self.objective.probe(self.model, self.tokenizer, prompts, cfg, self.task, **options)

    def __repr__(self) -> str:
        return f"Run({str(self.dir)!r}, method={self.config.method.name!r}, objective={self.config.objective.name!r})"


def load_run(run_dir: str | Path, trust_remote_code: bool = False) -> Run:
    return Run(run_dir, trust_remote_code=trust_remote_code)
