"""Adapters in practice: several runs' PEFT adapters on one base model, switched per call; export, merged or not."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import torch

from tunesmith.config import with_max_new_tokens
from tunesmith.errors import TunesmithError
from tunesmith.generation import model_lock, using_adapter
from tunesmith.modeling import load_model, to_device
from tunesmith.runs import (
    Run,
    check_weights,
    commit_output,
    discard_output,
    plan_output,
    read_json_file,
    write_export_marker,
)

log = logging.getLogger("tunesmith")


def _peft_runs(run_dirs, trust_remote_code: bool = False, names=None) -> dict[str, Run]:
    runs = [Run(d, trust_remote_code=trust_remote_code) for d in run_dirs]
    for run in runs:
        check_joins(run, runs[0])
    names = list(names) if names is not None else [r.dir.name for r in runs]
    if len(set(names)) < len(names):
        raise TunesmithError(f"--adapter: two runs share a name ({names}); adapters are named by their folder "
                             "unless given names")
    return dict(zip(names, runs))


def peft_type(run: Run) -> str | None:
    return read_json_file(run.dir / "adapter" / "adapter_config.json").get("peft_type")


def check_joins(run: Run, first: Run) -> None:
    """`run` has a PEFT adapter that can sit beside `first`'s on one base: the same base model, the same kind of model
    (classifier or causal LM) and the same PEFT type."""
    check_weights(run.weights_dir, ("adapter_config.json",) if run.is_peft_adapter else ())
    if not run.is_peft_adapter:
        raise TunesmithError(f"--adapter {run.dir}: a {run.config.method.name!r} run has no PEFT adapter; "
                             "only lora, dora, ia3, prompt and prefix runs share a base model")
    if run is first:
        return
    if run.config.model.name != first.config.model.name:
        raise TunesmithError(f"--adapter {run.dir}: trained on {run.config.model.name!r}, but {first.dir} on "
                             f"{first.config.model.name!r}; adapters share one base model")
    if run.objective.model_kind != first.objective.model_kind:
        raise TunesmithError(f"--adapter {run.dir}: a {run.config.objective.name} run cannot share a base with "
                             f"the {first.config.objective.name} run {first.dir} (one is a classifier, one a causal LM)")
    if peft_type(run) != peft_type(first):
        raise TunesmithError(f"--adapter {run.dir}: a {peft_type(run)} adapter cannot sit next to the {peft_type(first)} "
                             f"adapter of {first.dir} in one PEFT model; use runs of the same PEFT type")


def _fit_heads(model, adapter: str, weights: dict) -> None:
    """Give this adapter's copy of a fully trained Linear (a classifier head) the saved shape, so tasks with
    different label sets share one base."""
    from peft.utils.other import ModulesToSaveWrapper

    for name, module in model.named_modules():
        if isinstance(module, ModulesToSaveWrapper) and adapter in module.modules_to_save:
            copy = module.modules_to_save[adapter]
            saved = weights.get(f"{name}.weight")  # PEFT saves the copy under the wrapped module's own name
            if isinstance(copy, torch.nn.Linear) and saved is not None and saved.shape != copy.weight.shape:
                module.modules_to_save[adapter] = torch.nn.Linear(saved.shape[1], saved.shape[0], bias=copy.bias is not None,
                                                                  device=copy.weight.device, dtype=copy.weight.dtype)


class AdapterSet:
    """Adapters of several runs on one base model, loaded once; each call picks an adapter by name
    (`generation.using_adapter`: per call, under the model's lock, so threads may share one AdapterSet).

    >>> adapters = tunesmith.load_adapters(["runs/sentiment-lora", "runs/subjectivity-lora"])
    >>> adapters.predict(["A fine film."], adapter="subjectivity-lora")
    """

    def __init__(self, run_dirs, trust_remote_code: bool = False, names=None):
        from peft import PeftModel

        self.runs = _peft_runs(run_dirs, trust_remote_code, names)  # names: one per run (default: its folder's)
        first_name, first = next(iter(self.runs.items()))
        self.model = PeftModel.from_pretrained(first.load_base(), str(first.dir / "adapter"), adapter_name=first_name)
        for name, run in list(self.runs.items())[1:]:
            self._load(name, run)
        to_device(self.model).eval()
        log.info("Loaded adapters %s on one %s base", ", ".join(self.runs), first.config.model.name)

    def add(self, run_dir, name: str, trust_remote_code: bool = False) -> None:
        """One more run's adapter on this base, under `name` (the same base, kind of model and PEFT type)."""
        if name in self.runs:
            raise TunesmithError(f"adapter {name!r} is loaded already; loaded: {self.names}")
        run = Run(run_dir, trust_remote_code=trust_remote_code)
        check_joins(run, next(iter(self.runs.values())))
        with model_lock(self.model):  # no call runs while the model gains an adapter
            self._load(name, run)
            to_device(self.model).eval()
        self.runs[name] = run

    def _load(self, name: str, run: Run) -> None:
        from peft import PeftConfig
        from peft.utils import set_peft_model_state_dict
        from safetensors.torch import load_file

        folder = run.dir / "adapter"
        config = PeftConfig.from_pretrained(str(folder))
        config.inference_mode = True
        self.model.add_adapter(name, config)
        weights = load_file(folder / "adapter_model.safetensors")
        _fit_heads(self.model, name, weights)
        set_peft_model_state_dict(self.model, weights, adapter_name=name)

    @property
    def names(self) -> list[str]:
        return list(self.runs)

    def _run(self, adapter: str) -> Run:
        if adapter not in self.runs:
            raise TunesmithError(f"adapter {adapter!r} is not loaded; loaded: {self.names}")
        return self.runs[adapter]

    def predict(self, texts, adapter: str) -> list:
        """What the adapter's run predicts for each text (classify: label, score, probabilities)."""
        run = self._run(adapter)
        if run.objective.predict is None:
            raise TunesmithError(f"predict: adapter {adapter!r} is a {run.config.objective.name} run, which predicts no labels")
        texts = [texts] if isinstance(texts, str) else list(texts)
        with using_adapter(self.model, adapter):  # this adapter for this call only, whatever other threads use
            return run.objective.predict(self.model, run.tokenizer, texts, run.config, run.task)

    def generate(self, prompts, adapter: str, max_new_tokens: int | None = None, **options) -> list[str]:
        """Completions with the adapter's run, prompts formatted as that run was trained; options as `Run.generate`."""

        run = self._run(adapter)
        if run.objective.model_kind != "causal_lm":
            raise TunesmithError(f"generate: adapter {adapter!r} is a {run.config.objective.name} run, which generates no text")
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        cfg = with_max_new_tokens(run.config, max_new_tokens)
        with using_adapter(self.model, adapter):
            return run.objective.probe(self.model, run.tokenizer, prompts, cfg, run.task, **options)


    def generate_base(self, prompts, adapter: str, max_new_tokens: int | None = None, **options) -> list[str]:
        """What the base model alone (every adapter off) answers, prompts formatted as the adapter's run was trained."""
        run = self._run(adapter)
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        cfg = with_max_new_tokens(run.config, max_new_tokens)
        with using_adapter(self.model, adapter), self.model.disable_adapter():
            return run.objective.probe(self.model, run.tokenizer, prompts, cfg, run.task, **options)


def load_adapters(run_dirs, trust_remote_code: bool = False) -> AdapterSet:
    return AdapterSet(run_dirs, trust_remote_code=trust_remote_code)


def export(run_dir, out, *, merge: bool = False, rank: int | None = None, overwrite: bool = False,
           trust_remote_code: bool = False, card=None) -> Path:
    """Write a run's tuned model to `out`: the weights folder as saved, or (merge) a standalone transformers
    model with a LoRA-family adapter folded into the base weights; `rank`: a dylora adapter cut to that rank (a
    plain PEFT LoRA adapter, or merged). `out` may not lie inside the run; an existing export is replaced (with
    `overwrite`) only once the new one is complete. `card(run_dir, folder, location=...)` writes the export's model
    card, README.md (the CLI passes tunesmith.report.card.write_card; without it, a copied folder keeps the run's
    card and a merged one has none)."""
    run = Run(run_dir, trust_remote_code=trust_remote_code)
    if rank is not None and run.method.at_rank is None:
        raise TunesmithError(f"export --rank: a {run.config.method.name!r} run is trained at one rank; --rank picks "
                             "a rank of a dylora run (trained for a range of ranks); export without --rank")
    plan = plan_output(out, overwrite=overwrite, kind="export", protected=[run.dir])
    saved = run.weights_dir
    folds = merge and run.is_peft_adapter
    if folds and not run.method.mergeable:
        raise TunesmithError(f"export --merge: a {run.config.method.name!r} adapter cannot be folded into the weights "
                             "(prompt and prefix tuning add virtual tokens, not weight updates); export without --merge")
    if merge and not folds and run.manifest["saved"] != "model":
        raise TunesmithError(f"export --merge: a {run.config.method.name!r} run is saved in its own format ({saved.name}/), "
                             "not as a PEFT adapter; export without --merge")
    existed = plan.target.exists()
    try:
        if folds:  # onto a full-precision base (a QLoRA adapter too)
            base = load_model(run.config.model, run.objective.model_kind, trust_remote_code=trust_remote_code,
                              **run.objective.model_kwargs(run.task))
            model = (run.load_tuned(base) if rank is None else _at_rank(run, base, rank)).merge_and_unload()
            model.save_pretrained(plan.stage)
            run.tokenizer.save_pretrained(plan.stage)
        elif rank is not None:
            run.method.at_rank(saved, plan.stage, rank)
        else:
            check_weights(saved, ("adapter_config.json",) if run.is_peft_adapter else ("config.json",) if saved.name == "model" else ())
            shutil.copytree(saved, plan.stage, dirs_exist_ok=True)
        write_export_marker(plan.stage, run=str(run.dir), merged=folds, method=run.config.method.name,
                            model=run.config.model.name, **({"rank": rank} if rank is not None else {}))
        if card is not None:
            card(run.dir, plan.stage, location=plan.target.resolve())
    except BaseException:
        discard_output(plan)
        if not plan.swaps:  # the folder was absent or empty before: leave it so
            shutil.rmtree(plan.target, ignore_errors=True)
            if existed:
                plan.target.mkdir()
        raise
    commit_output(plan)
    if folds:
        log.info("Merged the %s adapter into %s and wrote a standalone model to %s", run.config.method.name,
                 run.config.model.name, plan.target)
    elif rank is not None:
        log.info("Wrote the %s adapter at rank %d to %s (a plain PEFT LoRA adapter)", run.config.method.name, rank, plan.target)
    else:
        log.info("Copied %s to %s%s", saved, plan.target, " (already a standalone model)" if merge else "")
    return plan.target


def _at_rank(run: Run, base, rank: int):
    """The run's adapter cut to `rank` (dylora) on `base`."""
    import tempfile

    from peft import PeftModel

    with tempfile.TemporaryDirectory() as tmp:  # from_pretrained reads the weights at once
        run.method.at_rank(run.weights_dir, Path(tmp), rank)
        return PeftModel.from_pretrained(base, tmp)
