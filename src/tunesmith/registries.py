"""Lookups by name: the one seam through which a lower layer reaches code that lives above it.

A config names its method and objective, and a run folder names what trained it; reading either must find that
method or objective, although `config` and `runs` sit below `methods/` and `objectives/` (which read configs and
load other runs). So the lower layers never import those packages: they ask here, and the built-in registries are
imported by their module's name on the first lookup, as plugins are found by entry points. The same holds for the
two other calls that go up, each named in ARCHITECTURE.md: a run's evaluation (the training recipe measures it)
and a run folder used as `model.name` (the run's tuned model, folded into a plain folder).
"""

from __future__ import annotations

import importlib

_BUILT_IN = {
    "methods": ("tunesmith.methods.registry", "METHODS"),
    "objectives": ("tunesmith.objectives.registry", "OBJECTIVES"),
    "evaluate_run": ("tunesmith.training.evaluate", "evaluate_run"),
    "run_model_folder": ("tunesmith.runs.start", "model_folder"),
    "root_model": ("tunesmith.runs.start", "root_model"),
    "is_run_folder": ("tunesmith.runs.start", "is_run_folder"),
}


def _lookup(what: str):
    module, name = _BUILT_IN[what]
    return getattr(importlib.import_module(module), name)


def methods() -> dict:
    """name -> Method (tunesmith.methods.registry.METHODS)."""
    return _lookup("methods")


def objectives() -> dict:
    """name -> Objective (tunesmith.objectives.registry.OBJECTIVES, plugins added with `register`)."""
    return _lookup("objectives")


def evaluate_run(run, **kwargs):
    """Measure a finished run's base and tuned model (tunesmith.training.evaluate.evaluate_run)."""
    return _lookup("evaluate_run")(run, **kwargs)


def run_model_folder(name, trust_remote_code: bool = False):
    """For `model.name` naming a run folder: a plain transformers folder holding that run's tuned model
    (tunesmith.runs.start.model_folder); None for any other name."""
    if not _lookup("is_run_folder")(name):
        return None
    return _lookup("run_model_folder")(name, trust_remote_code=trust_remote_code)


def root_model(name: str) -> str:
    """The model a chain of runs started from; any other name as it is (tunesmith.runs.start.root_model)."""
    return _lookup("root_model")(name)
