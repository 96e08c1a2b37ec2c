"""Loading models and tokenizers, the pad token, parameter counts. Shared by every method and objective."""

from __future__ import annotations

import logging

from tunesmith.assets import hub_access, resolve_model
from tunesmith.errors import TunesmithError

log = logging.getLogger("tunesmith")

DTYPES = ("auto", "float32", "bfloat16", "float16")  # model.dtype values; torch dtypes by name


def torch_dtype(name: str, announce: bool = False):
    """A model.dtype as torch's ('auto' resolved for this machine: tunesmith.hardware.resolve_dtype)."""
    import torch

    from tunesmith.hardware import resolve_dtype

    return getattr(torch, resolve_dtype(name, announce=announce))


def device():
    """The torch device training and evaluation run on: the GPU if there is one."""
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def remote_code(model_cfg, trust_remote_code: bool) -> bool:
    """Whether a model's own Python code may run: only when the person running this command says so
    (`--trust-remote-code`, or trust_remote_code=True in Python). A config read off disk never decides it alone."""
    if model_cfg.trust_remote_code and not trust_remote_code:
        raise TunesmithError(
            f"model.trust_remote_code: the config asks to run the Python code that ships with {model_cfg.name!r} "
            "(its auto_map), and tunesmith never runs code because a file says so. If you trust that code, pass "
            "--trust-remote-code on the command line (trust_remote_code=True in Python) for this command"
        )
    return trust_remote_code


def model_path(model_cfg, trust_remote_code: bool = False) -> str:
    """Where `from_pretrained` reads model.name from: a catalog model's local folder; for a run folder, that run's
    tuned model as a plain transformers folder (tunesmith.runs.start); any other name as it is (a folder, a hub id)."""
    from tunesmith.registries import run_model_folder

    folder = run_model_folder(model_cfg.name, trust_remote_code=trust_remote_code)
    return str(folder) if folder is not None else resolve_model(model_cfg.name)


def load_tokenizer(model_cfg, path: str | None = None, *, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    trusted = remote_code(model_cfg, trust_remote_code)
    path = path or model_path(model_cfg, trust_remote_code=trusted)
    try:
        tok = AutoTokenizer.from_pretrained(
            path, revision=model_cfg.revision, trust_remote_code=trusted, **hub_access(path, model_cfg.revision)
        )
    except (OSError, ValueError) as err:
        raise TunesmithError(f"model.name: could not load a tokenizer from {path!r} ({err})") from None
    return tok


def load_model(model_cfg, kind: str, *, path: str | None = None, trust_remote_code: bool = False, **kwargs):
    """Load a model for `kind` ('classify' -> sequence classification, else causal LM), in model.dtype ('auto'
    resolved for this machine) with model.attn_implementation if set."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    cls = AutoModelForSequenceClassification if kind == "classify" else AutoModelForCausalLM
    trusted = remote_code(model_cfg, trust_remote_code)
    base = path is None  # model.keep_layers cuts the base; a saved model (path) was saved cut
    path = path or model_path(model_cfg, trust_remote_code=trusted)
    attention = {"attn_implementation": model_cfg.attn_implementation} if model_cfg.attn_implementation else {}
    try:
        model, info = cls.from_pretrained(
            path,
            dtype=torch_dtype(model_cfg.dtype, announce=True),
            **attention,
            revision=model_cfg.revision,
            trust_remote_code=trusted,
            output_loading_info=True,
            **hub_access(path, model_cfg.revision),
            **kwargs,
        )
    except (OSError, ValueError, ImportError) as err:
        if attention and ("attn" in str(err).lower() or "attention" in str(err).lower()):
            raise TunesmithError(f"model.attn_implementation: {model_cfg.attn_implementation} cannot load {path!r} "
                                 f"({err}); use sdpa or eager, or leave it unset") from None
        raise TunesmithError(f"model.name: could not load {path!r} as {cls.__name__} ({err})") from None
    if info.get("missing_keys"):
        log.debug("Newly initialized (not in the checkpoint): %s", ", ".join(sorted(info["missing_keys"])))
    if base:
        keep_layers(model, model_cfg)
    return model


def layer_stack(model):
    """(owner module, attribute name, ModuleList) of the model's transformer blocks: the first ModuleList with
    config.num_hidden_layers entries (BERT encoder.layer, Llama model.layers, ...); None if there is none."""
    import torch

    count = getattr(model.config, "num_hidden_layers", None)
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.ModuleList) and len(module) == count and count:
            owner_name, _, attr = name.rpartition(".")
            return model.get_submodule(owner_name) if owner_name else model, attr, module
    return None


def kept_layers(model_cfg, count: int) -> list[int] | None:
    """The blocks model.keep_layers / model.num_layers keep out of `count`; None when neither is set."""
    if model_cfg.keep_layers is not None:
        out = [i for i in model_cfg.keep_layers if i >= count]
        if out:
            raise TunesmithError(f"model.keep_layers: {out} out of range: {model_cfg.name!r} has {count} transformer "
                                 f"blocks, numbered 0 to {count - 1}")
        return list(model_cfg.keep_layers)
    if model_cfg.num_layers is not None:
        if model_cfg.num_layers > count:
            raise TunesmithError(f"model.num_layers: {model_cfg.num_layers} is more than the {count} transformer "
                                 f"blocks of {model_cfg.name!r}")
        return [i * count // model_cfg.num_layers for i in range(model_cfg.num_layers)]
    return None


def keep_layers(model, model_cfg) -> None:
    """Cut the base to the blocks model.keep_layers or model.num_layers name (a smaller student initialised from
    the big model's own blocks, as DistilBERT did). The config says how many blocks there are (num_hidden_layers,
    layer_types), and each block's layer_idx is renumbered (the KV cache is indexed by it), so the saved model
    reloads and generates with plain transformers."""
    import torch

    if model_cfg.keep_layers is None and model_cfg.num_layers is None:
        return
    found = layer_stack(model)
    if found is None:
        raise TunesmithError(f"model.keep_layers: could not find the transformer blocks of {model_cfg.name!r} (no "
                             "list of config.num_hidden_layers blocks); remove model.keep_layers / model.num_layers")
    owner, attr, blocks = found
    keep = kept_layers(model_cfg, len(blocks))
    for new_index, block in enumerate(blocks[i] for i in keep):
        for module in block.modules():
            if isinstance(getattr(module, "layer_idx", None), int):
                module.layer_idx = new_index
    setattr(owner, attr, torch.nn.ModuleList([blocks[i] for i in keep]))
    for config in {id(c): c for c in (model.config, model.config.get_text_config())}.values():
        config.num_hidden_layers = len(keep)
        if isinstance(getattr(config, "layer_types", None), list):
            config.layer_types = [config.layer_types[i] for i in keep]
    log.info("model.keep_layers: kept blocks %s of %d", keep, len(blocks))


def ensure_pad_token(tokenizer, model=None) -> None:
    """Give a tokenizer without a pad token one (its EOS, else a new [PAD]) and tell the model."""
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is not None:
            tokenizer.pad_token = tokenizer.eos_token
            log.info("Tokenizer has no pad token: using its EOS token %r for padding", tokenizer.eos_token)
        else:
            tokenizer.add_special_tokens({"pad_token": "[PAD]"})
            log.info("Tokenizer has no pad or EOS token: added [PAD]")
            if model is not None:
                model.resize_token_embeddings(len(tokenizer))
    if model is not None and getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id


def load_causal_lm(name: str, trust_remote_code: bool = False):
    """(model, tokenizer) of a causal LM named as model.name names one (catalog name, folder, hub id, or a run
    folder: its tuned model), in eval mode on the device, the tokenizer with a pad token."""
    from tunesmith.config import ModelConfig

    cfg = ModelConfig(name=name)
    tokenizer = load_tokenizer(cfg, trust_remote_code=trust_remote_code)
    model = load_model(cfg, "causal_lm", trust_remote_code=trust_remote_code)
    ensure_pad_token(tokenizer, model)
    return to_device(model).eval(), tokenizer


def count_parameters(model) -> dict:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {"trainable_params": trainable, "total_params": total, "trainable_percent": round(100 * trainable / max(total, 1), 4)}


def linear_module_names(model) -> list[str]:
    """Names of the linear layers (what LoRA-family methods can target)."""
    import torch
    from transformers.pytorch_utils import Conv1D

    return [n for n, m in model.named_modules() if isinstance(m, (torch.nn.Linear, Conv1D))]


def suffixes(names: list[str]) -> list[str]:
    """Short, distinct names a user can write as targets: 'query', 'attention.output.dense', ..."""
    out = []
    for name in names:
        parts = [p for p in name.split(".") if not p.isdigit()]
        short = parts[-1]
        same = [n for n in names if n.split(".")[-1] == short]
        if len({tuple(p for p in n.split(".") if not p.isdigit())[-2:] for n in same}) > 1:
            short = ".".join(parts[-2:])
        if short not in out:
            out.append(short)
    return out


def new_modules(model) -> list[str]:
    """A classifier's task head: its top-level modules with weights outside the pretrained backbone (e.g. 'classifier',
    'score', DistilBERT's 'pre_classifier'), read from the model's structure; what `head`, LoRA's modules_to_save and
    the bottleneck adapter train in full. Empty for a causal LM (its output layer is pretrained)."""
    if not type(model).__name__.endswith("ForSequenceClassification"):
        return []
    backbone = getattr(model, "base_model_prefix", "")
    return [name for name, child in model.named_children() if name != backbone and any(True for _ in child.parameters())]


# ---------------------------------------------------------------------------------------------
# The model's module names without its weights (validate checks target_modules with them)


def model_without_weights(model_cfg, kind: str, **kwargs) -> tuple[object | None, str]:
    """(model, "") built from the model's config alone on the meta device: module names and types, no weights read
    or allocated; (None, why) when the config cannot be read that way (it needs the model's own code, or fails)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

    from tunesmith.registries import root_model

    cls = AutoModelForSequenceClassification if kind == "classify" else AutoModelForCausalLM
    path = resolve_model(root_model(model_cfg.name))  # a chain of runs has its first model's architecture
    try:
        config = AutoConfig.from_pretrained(path, revision=model_cfg.revision, trust_remote_code=False,
                                            **hub_access(path, model_cfg.revision), **kwargs)
        with torch.device("meta"):
            model = cls.from_config(config, trust_remote_code=False)
        keep_layers(model, model_cfg)  # a keep_layers index out of range is reported by validate too
        return model, ""
    except TunesmithError:
        raise
    except Exception as err:  # noqa: BLE001 - any failure only means "not checked here"; loading reports it later
        return None, f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}".rstrip(": ")


def module_names_without_weights(model_cfg, kind: str, **kwargs) -> list[str] | None:
    """Names of the model's modules, read without loading its weights; None when that is not possible."""
    model, _ = model_without_weights(model_cfg, kind, **kwargs)
    return None if model is None else [n for n, _ in model.named_modules() if n]


def to_device(model):
    """Move to the GPU if there is one; a quantized model was placed by from_pretrained and stays."""
    if not getattr(model, "is_quantized", False):
        model.to(device())
    return model


