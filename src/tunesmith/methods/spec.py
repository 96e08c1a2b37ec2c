"""What a method is: a config class, a function that sets the trainable parameters, and a registry entry.

Most methods only need `apply`: the objective's Trainer trains whatever `apply` left trainable, and the run
saves it with `save_pretrained`. The optional hooks cover the methods that differ:
- `check`: problems known before anything loads (qlora needs a CUDA GPU);
- `load_kwargs`: extra `from_pretrained` arguments for the base model (qlora's 4-bit quantization);
- `fit`: trains without a Trainer (features: a scikit-learn classifier on frozen embeddings);
- `start`: keeps what `save` needs from the freshly applied, untrained model in a scratch folder (LoRA with a
  PiSSA/OLoRA initialization keeps its initial adapter there, to save the trained one for the original base);
- `save` / `load`: a saved format other than PEFT's or transformers' (bottleneck adapters, features);
- `callbacks`: TrainerCallbacks that the objective's trainer runs with its own (adalora: the total step count
  when training starts, PEFT's rank allocation after every optimizer step);
- `at_rank`: writes the saved adapter cut to rank k as a plain PEFT adapter (dylora, trained for a range of
  ranks: `tunesmith export RUN --rank K`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable


def _no_problems(cfg) -> list[str]:
    return []


def _no_kwargs(method_cfg) -> dict:
    return {}


@dataclass(frozen=True)
class Method:
    name: str
    config_cls: type
    apply: Callable[[Any, Any], Any]  # (model, method_config) -> model with its trainable parameters set
    saves: str  # the run folder's weights folder: "adapter" (PEFT layout), "model" (transformers), or the method's own
    summary: str
    unsupported: dict[str, str] = field(default_factory=dict)  # objective -> why it does not apply
    check: Callable[[Any], list[str]] = _no_problems  # (RunConfig) -> problems, each naming the key and the fix
    load_kwargs: Callable[[Any], dict] = _no_kwargs  # (method_config) -> extra from_pretrained kwargs for the base
    fit: Callable[..., tuple[Any, dict]] | None = None  # (model, tokenizer, prepared, cfg, run_dir) -> (model, stats)
    start: Callable[[Any, Any, Any], None] | None = None  # (applied model, method_config, scratch folder)
    save: Callable[..., None] | None = None  # (model, folder, scratch folder); default model.save_pretrained(folder)
    load: Callable[[Any, Any], Any] | None = None  # (base model, folder) -> tuned model
    callbacks: Callable[[Any, Any], list] | None = None  # (applied model, RunConfig) -> extra TrainerCallbacks
    at_rank: Callable[[Any, Any, int], None] | None = None  # (saved folder, out folder, k): the adapter at rank k
    peft: bool = False  # saves a plain PEFT adapter (adapter_config.json) that `peft` loads with no tunesmith code
    mergeable: bool = False  # `tunesmith export --merge` can fold it into the base weights
    learning_rate: float = 2e-4  # a usual rate for the method; `compare` uses it for a method the config does not tune
