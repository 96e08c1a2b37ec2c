"""adapter: bottleneck adapters (Houlsby et al., 2019) after each block's attention and/or FFN output projection.

The maintained library (AdapterHub `adapters`) pins transformers 4, so this is a small module of ours.
Each wrapped projection computes ``h = proj(x); h + up(act(down(h)))`` with ``up`` zero-initialized, so the
freshly adapted model computes exactly what the base computes. The base stays frozen; the adapters, a new
classification head and `modules_to_save` train.

Saved format (a folder; loadable without tunesmith):
- ``bottleneck_config.json``: ``{"format": "tunesmith-bottleneck-adapter", "version": 1, "bottleneck": b,
  "after": ["attention", "ffn"], "activation": "relu" | "gelu" | "tanh" | "silu" (torch.nn ReLU, GELU, Tanh, SiLU),
  "modules": {"<module name>": {"after": "attention" | "ffn", "hidden_size": d}, ...},
  "trained_in_full": ["<module name>", ...]}``; module names are those of the base model's ``named_modules()``.
- ``adapter_model.safetensors``: for each listed module M, ``M.down.weight`` [b, d], ``M.down.bias`` [b],
  ``M.up.weight`` [d, b], ``M.up.bias`` [d] (``down``/``up`` are ``torch.nn.Linear``); and every parameter of
  each ``trained_in_full`` module under its name in the adapted model (``classifier.weight``, ...).
To load by hand: load the base model; set the trained_in_full parameters from the file; replace each listed
module M by a module with ``base = M``, ``down``, ``up`` and ``forward(x) = h + up(act(down(h)))``, ``h = base(x)``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Literal

from pydantic import Field

from tunesmith.errors import TunesmithError, raise_if
from tunesmith.methods.peft_common import is_classifier
from tunesmith.methods.spec import Method
from tunesmith.modeling import linear_module_names, new_modules, suffixes
from tunesmith.schema import Section

log = logging.getLogger("tunesmith")

FORMAT, VERSION = "tunesmith-bottleneck-adapter", 1
CONFIG_FILE, WEIGHTS_FILE = "bottleneck_config.json", "adapter_model.safetensors"
# Output projections by family (BERT, Llama). A module that suffixes of both positions match goes to the
# longer suffix: BERT's FFN "layer.N.output.dense" is "output.dense" but not "attention.output.dense".
DEFAULT_TARGETS = {"attention": ["attention.output.dense", "self_attn.o_proj"], "ffn": ["output.dense", "mlp.down_proj"]}


class AdapterConfig(Section):
    """Bottleneck adapters (Houlsby et al., 2019): h + up(act(down(h))) on each block's sublayer output."""

    name: Literal["adapter"]
    bottleneck: int = Field(64, gt=0, description="Width b of the bottleneck: each adapter has 2*d*b + b + d parameters.")
    after: list[Literal["attention", "ffn"]] = Field(
        ["attention", "ffn"], min_length=1, description="Sublayers whose output gets an adapter (Houlsby: both)."
    )
    activation: Literal["relu", "gelu", "tanh", "silu"] = Field("relu", description="Nonlinearity inside the bottleneck.")
    target_modules: dict[Literal["attention", "ffn"], list[str] | str] | None = Field(
        None,
        description="Output projection Linear names or suffixes per sublayer, e.g. {ffn: [mlp.c_proj]}. "
        "Default: 'attention.output.dense' / 'output.dense' (BERT family), 'self_attn.o_proj' / 'mlp.down_proj' (Llama family).",
    )
    modules_to_save: list[str] | None = Field(
        None, description="Modules trained in full and saved with the adapter. A new head is added automatically."
    )


def _matches(name: str, suffix: str) -> bool:
    return name == suffix or name.endswith("." + suffix)


def find_targets(model, cfg: AdapterConfig) -> dict[str, str]:
    """Wrapped module name -> 'attention' or 'ffn'; every position in cfg.after must match a Linear."""
    names = linear_module_names(model)
    given = cfg.target_modules or {}
    searched = {pos: [given[pos]] if isinstance(given.get(pos), str) else given.get(pos, DEFAULT_TARGETS[pos])
                for pos in DEFAULT_TARGETS}
    found = {}
    for name in names:
        hits = [(len(s), pos) for pos, sfx in searched.items() for s in sfx if _matches(name, s)]
        if hits and max(hits)[1] in cfg.after:
            found[name] = max(hits)[1]
    raise_if([
        f"method.target_modules: no {pos} output projection in {type(model).__name__}; searched for Linear modules "
        f"named {searched[pos]}; its linear modules are {suffixes(names)}; set e.g. method.target_modules: "
        f"{{{pos}: [<name>]}}" for pos in dict.fromkeys(cfg.after) if pos not in found.values()
    ])
    return found


def full_modules(model, cfg: AdapterConfig) -> list[str]:
    """Names of the modules trained in full: cfg.modules_to_save and, for a classifier, its new head."""
    wanted = list(cfg.modules_to_save or [])
    if is_classifier(model):  # a classifier: its new head trains too
        wanted += [n for n in new_modules(model) if n not in wanted]
    names = [n for n, _ in model.named_modules() if n]
    missing = [t for t in wanted if not any(_matches(n, t) for n in names)]
    if missing:
        top = sorted({n.split(".")[0] for n in names})
        raise TunesmithError(f"method.modules_to_save: {missing} match no module of the model; its top-level modules are {top}")
    return [n for n in names if any(_matches(n, t) for t in wanted)]


def trained_names(model, info: dict) -> list[str]:
    """The parameters the adapter trains and saves: adapter weights and the trained-in-full modules."""
    prefixes = tuple([f"{m}.{part}." for m in info["modules"] for part in ("down", "up")]
                     + [f"{m}." for m in info["trained_in_full"]])
    return [n for n, _ in model.named_parameters(remove_duplicate=False) if n.startswith(prefixes)]


def insert(model, info: dict):
    """Wrap the modules info names, freeze everything else, make the adapters and full modules trainable."""
    from tunesmith.methods.bottleneck import Bottleneck

    model.requires_grad_(False)
    for name, spec in info["modules"].items():
        model.set_submodule(name, Bottleneck(model.get_submodule(name), spec["hidden_size"], info["bottleneck"],
                                             info["activation"], spec["after"]))
    params = dict(model.named_parameters(remove_duplicate=False))
    for name in trained_names(model, info):
        params[name].requires_grad_(True)
    return model


def layout(model) -> dict:
    """The adapter layout of a model with bottleneck adapters (what bottleneck_config.json holds), read off the model
    itself: its Bottleneck modules, and the modules outside them whose parameters all train (trained in full)."""
    from tunesmith.methods.bottleneck import Bottleneck

    wrapped = {n: m for n, m in model.named_modules() if isinstance(m, Bottleneck)}
    if not wrapped:
        raise TunesmithError("adapter: the model has no bottleneck adapters to save; apply the 'adapter' method first")
    modules = {n: {"after": m.after, "hidden_size": m.down.in_features} for n, m in wrapped.items()}
    inside, full = tuple(f"{n}." for n in wrapped), []
    for name, module in model.named_modules():  # parents come before their children: the topmost trainable modules
        if not name or name in wrapped or name.startswith(inside) or name.startswith(tuple(f"{f}." for f in full)):
            continue
        params = list(module.parameters())
        if params and all(p.requires_grad for p in params):
            full.append(name)
    first = next(iter(wrapped.values()))
    return {"format": FORMAT, "version": VERSION, "bottleneck": first.down.out_features,
            "after": list(dict.fromkeys(m["after"] for m in modules.values())), "activation": first.activation,
            "modules": modules, "trained_in_full": full}


def apply(model, cfg: AdapterConfig):
    targets = find_targets(model, cfg)
    modules = {}
    for name, pos in targets.items():
        base = model.get_submodule(name)
        modules[name] = {"after": pos, "hidden_size": getattr(base, "out_features", None) or base.nf}  # Linear, Conv1D
    info = {"format": FORMAT, "version": VERSION, "bottleneck": cfg.bottleneck, "after": list(cfg.after),
            "activation": cfg.activation, "modules": modules, "trained_in_full": full_modules(model, cfg)}
    for pos in dict.fromkeys(cfg.after):
        wrapped = [n for n, p in targets.items() if p == pos]
        log.info("adapter: after %s on %d modules (%s)", pos, len(wrapped), ", ".join(suffixes(wrapped)))
    if info["trained_in_full"]:
        log.info("adapter: training in full %s", ", ".join(info["trained_in_full"]))
    return insert(model, info)


def save(model, folder, scratch=None) -> None:
    from safetensors.torch import save_file

    info = layout(model)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG_FILE).write_text(json.dumps(info, indent=2) + "\n")
    params = dict(model.named_parameters(remove_duplicate=False))
    tensors = {n: params[n].detach().to("cpu", copy=True).contiguous() for n in trained_names(model, info)}
    save_file(tensors, str(folder / WEIGHTS_FILE), metadata={"format": "pt"})


def load(model, folder):
    """The base model with the adapters and trained modules saved in `folder`, in eval mode."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    config, weights = Path(folder) / CONFIG_FILE, Path(folder) / WEIGHTS_FILE
    try:
        info = json.loads(config.read_text())
        tensors = load_file(str(weights))
    except (OSError, ValueError, SafetensorError) as err:
        raise TunesmithError(f"{folder}: cannot read a bottleneck adapter ({err}); expected {CONFIG_FILE} and {WEIGHTS_FILE}") from None
    if info.get("format") != FORMAT or info.get("version", 0) > VERSION:
        raise TunesmithError(f"{config}: format {info.get('format')!r} version {info.get('version')!r}; expected {FORMAT!r} version <= {VERSION}")
    names = {n for n, _ in model.named_modules()}
    absent = [m for m in [*info["modules"], *info["trained_in_full"]] if m not in names]
    if absent:
        raise TunesmithError(f"{config}: modules {absent} are not in {type(model).__name__}; load the base model the adapter was trained on")
    insert(model, info)
    params = dict(model.named_parameters(remove_duplicate=False))
    expected = set(trained_names(model, info))
    missing, unexpected = sorted(expected - tensors.keys()), sorted(tensors.keys() - expected)
    wrong = [f"{n} {tuple(t.shape)} (model: {tuple(params[n].shape)})" for n, t in tensors.items()
             if n in expected and t.shape != params[n].shape]
    if missing or unexpected or wrong:
        raise TunesmithError(f"{weights}: does not match {config.name}: missing {missing}, unexpected {unexpected}, "
                             f"wrong shapes {wrong}; save and load the adapter with the same base model")
    for name, tensor in tensors.items():
        params[name].data.copy_(tensor)
    return model.eval()


METHOD = Method(name="adapter", config_cls=AdapterConfig, apply=apply, saves="adapter", save=save, load=load,
                summary="bottleneck adapters after attention/FFN (Houlsby)", learning_rate=1e-3)
