"""head: transfer learning. The pretrained backbone is frozen; only a new, randomly initialized head trains."""

from __future__ import annotations

import logging
from typing import Literal

from pydantic import Field

from tunesmith.errors import TunesmithError
from tunesmith.methods.spec import Method
from tunesmith.modeling import new_modules
from tunesmith.schema import Section

log = logging.getLogger("tunesmith")


class HeadConfig(Section):
    """Freeze the backbone and train the head the checkpoint did not have (e.g. `classifier`)."""

    name: Literal["head"]
    modules: list[str] | None = Field(
        None, description="Modules to train (name or suffix). Default: the newly initialized head."
    )


def apply(model, cfg: HeadConfig):
    targets = cfg.modules or new_modules(model)
    if not targets:
        raise TunesmithError(
            "method.name: 'head' found no new head on this model (every weight came from the checkpoint); "
            "name the modules to train in method.modules, or use 'lora' or 'full'"
        )
    names = [n for n, _ in model.named_modules()]
    missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if missing:
        top = sorted({n.split(".")[0] for n in names if n})
        raise TunesmithError(f"method.modules: {missing} match no module of the model; its top-level modules are {top}")
    for name, param in model.named_parameters():
        module = name.rsplit(".", 1)[0]
        param.requires_grad_(any(module == t or module.endswith("." + t) or module.startswith(t + ".") for t in targets))
    log.info("head: training %s; backbone frozen", ", ".join(targets))
    return model


METHOD = Method(
    name="head",
    config_cls=HeadConfig,
    apply=apply,
    saves="model",
    summary="frozen backbone, new head",
    learning_rate=1e-3,
    unsupported={
        "causal_lm": "a causal LM has no new head: its output layer is pretrained (often tied to the embeddings); use lora or full",
        "sft": "a causal LM has no new head: its output layer is pretrained (often tied to the embeddings); use lora or full",
    },
)
