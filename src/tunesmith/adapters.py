"""Adapters in practice: several runs' PEFT adapters on one base model, switched per call; export, merged or not."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import torch

from tunesmith.api import Run, to_device
from tunesmith.errors import TunesmithError
from tunesmith.modeling import load_model

log = logging.getLogger("tunesmith")


def _peft_runs(run_dirs) -> list[Run]:
    runs = [Run(d) for d in run_dirs]
    for run in runs:
        if run.method.saves != "adapter" or run.method.load is not None:
            raise TunesmithError(f"--adapter {run.dir}: a {run.config.method.name!r} run has no PEFT adapter; "
                                 "only lora, dora, ia3, prompt and prefix runs share a base model")
    first = runs[0]
    for run in runs[1:]:
        if run.config.model.name != first.config.model.name:
            raise TunesmithError(f"--adapter {run.dir}: trained on {run.config.model.name!r}, but {first.dir} on "
                                 f"{first.config.model.name!r}; adapters share one base model")
        if run.objective.model_kind != first.objective.model_kind:
            raise TunesmithError(f"--adapter {run.dir}: a {run.config.objective.name} run cannot share a base with "
                                 f"the {first.config.objective.name} run {first.dir} (one is a classifier, one a causal LM)")
        peft_type = json.loads((run.dir / "adapter" / "adapter_config.json").read_text())["peft_type"]
        first_type = json.loads((first.dir / "adapter" / "adapter_config.json").read_text())["peft_type"]
        if peft_type != first_type:
            raise TunesmithError(f"--adapter {run.dir}: a {peft_type} adapter cannot sit next to the {first_type} "
                                 f"adapter of {first.dir} in one PEFT model; use runs of the same PEFT type")
    names = [r.dir.name for r in runs]
    if len(set(names)) < len(names):
        raise TunesmithError(f"--adapter: two runs share a folder name ({names}); adapters are named by their folder")
    return runs


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
    """Adapters of several runs on one base model, loaded once; each call picks an adapter by name.

    >>> adapters = tunesmith.load_adapters(["runs/sentiment-lora", "runs/subjectivity-lora"])
    >>> adapters.predict(["A fine film."], adapter="subjectivity-lora")
    """

    def __init__(self, run_dirs):
        from peft import PeftConfig, PeftModel
        from peft.utils import set_peft_model_state_dict
        from safetensors.torch import load_file

        self.runs = {r.dir.name: r for r in _peft_runs(run_dirs)}
        first_name, first = next(iter(self.runs.items()))
        self.model = PeftModel.from_pretrained(first.load_base(), str(first.dir / "adapter"), adapter_name=first_name)
        for name, run in list(self.runs.items())[1:]:
            folder = run.dir / "adapter"
            config = PeftConfig.from_pretrained(str(folder))
            config.inference_mode = True
            self.model.add_adapter(name, config)
            weights = load_file(folder / "adapter_model.safetensors")
            _fit_heads(self.model, name, weights)
            set_peft_model_state_dict(self.model, weights, adapter_name=name)
        to_device(self.model).eval()
        log.info("Loaded adapters %s on one %s base", ", ".join(self.runs), first.config.model.name)

    @property
    def names(self) -> list[str]:
        return list(self.runs)

    def _use(self, adapter: str) -> Run:
        if adapter not in self.runs:
            raise TunesmithError(f"adapter {adapter!r} is not loaded; loaded: {self.names}")
        self.model.set_adapter(adapter)
        run = self.runs[adapter]
        run._model = self.model  # the run's calls now go through the shared base with this adapter active
        return run

    def predict(self, texts, adapter: str) -> list[dict]:
        return self._use(adapter).predict(texts)

    def generate(self, prompts, adapter: str, max_new_tokens: int | None = None) -> list[str]:
        return self._use(adapter).generate(prompts, max_new_tokens=max_new_tokens)


def load_adapters(run_dirs) -> AdapterSet:
    return AdapterSet(run_dirs)


def export(run_dir, out, *, merge: bool = False, overwrite: bool = False) -> Path:
    """Write a run's tuned model to `out`: the weights folder as saved, or (merge) a standalone transformers
    model with a LoRA-family adapter folded into the base weights."""
    run, out = Run(run_dir), Path(out)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise TunesmithError(f"export folder {out} already exists; pass --overwrite to replace it, or choose another --out")
        if not (out / "config.json").exists() and not (out / "adapter_config.json").exists():
            raise TunesmithError(f"{out} is not empty and holds no exported model (no config.json); refusing to delete it; choose another --out")
    saved = run.dir / run.manifest["saved"]
    if merge and run.method.saves == "adapter" and run.method.load is None:
        if not run.method.mergeable:
            raise TunesmithError(f"export --merge: a {run.config.method.name!r} adapter cannot be folded into the weights "
                                 "(prompt and prefix tuning add virtual tokens, not weight updates); export without --merge")
        from peft import PeftModel

        base = load_model(run.config.model, run.objective.model_kind, **run.objective.model_kwargs(run.task))
        model = PeftModel.from_pretrained(base, str(saved)).merge_and_unload()
        shutil.rmtree(out, ignore_errors=True)
        model.save_pretrained(out)
        run.tokenizer.save_pretrained(out)
        log.info("Merged the %s adapter into %s and wrote a standalone model to %s", run.config.method.name,
                 run.config.model.name, out)
        return out
    if merge and run.manifest["saved"] != "model":
        raise TunesmithError(f"export --merge: a {run.config.method.name!r} run is saved in its own format ({saved.name}/), "
                             "not as a PEFT adapter; export without --merge")
    shutil.rmtree(out, ignore_errors=True)
    shutil.copytree(saved, out)
    log.info("Copied %s to %s%s", saved, out, " (already a standalone model)" if merge else "")
    return out
