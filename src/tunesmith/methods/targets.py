"""target_modules checked before any weights load, for `tunesmith validate`.

The model's architecture is built from its config alone on the meta device (no weights read), and the method's
own check runs on it: the same message as when the model loads for training, minutes earlier.
"""

from __future__ import annotations

import logging

from tunesmith.errors import TunesmithError
from tunesmith.methods.adapter import find_targets
from tunesmith.methods.peft_common import check_targets
from tunesmith.modeling import model_without_weights

log = logging.getLogger("tunesmith")


def _peft_targets(model, method_cfg) -> None:
    check_targets(model, method_cfg.target_modules)


def _adapter_targets(model, method_cfg) -> None:
    find_targets(model, method_cfg)  # also checks the default output projections when none are given


def _needs_model(method_cfg) -> bool:
    if method_cfg.name == "adapter":
        return True
    targets = method_cfg.target_modules
    return targets is not None and targets != "all-linear"  # None: PEFT's default for the model type


CHECKS = {"lora": _peft_targets, "dora": _peft_targets, "qlora": _peft_targets, "ia3": _peft_targets,
          "adalora": _peft_targets, "dylora": _peft_targets, "adapter": _adapter_targets}


def target_problems(cfg, kind: str) -> list[str]:
    """Problems with method.target_modules found on the weightless model ('classify' or 'causal_lm' kind).
    When the architecture cannot be read that way, logs that they were not checked and returns []."""
    check = CHECKS.get(cfg.method.name)
    if check is None or not _needs_model(cfg.method):
        return []
    model, why = model_without_weights(cfg.model, kind)
    if model is None:
        log.warning("method.target_modules: not checked: the architecture of %r could not be read from its config "
                    "without loading weights or running its code (%s); they are checked when the model loads for "
                    "training", cfg.model.name, why)
        return []
    try:
        check(model, cfg.method)
    except TunesmithError as err:
        return err.problems
    return []
