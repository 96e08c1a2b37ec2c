"""Loading models and tokenizers, the pad token, parameter counts. Shared by every method and objective."""

from __future__ import annotations

import logging

import torch

from tunesmith.assets import resolve_model
from tunesmith.errors import TunesmithError

log = logging.getLogger("tunesmith")

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "auto": "auto"}


def device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load_tokenizer(model_cfg, path: str | None = None):
    from transformers import AutoTokenizer

    path = path or resolve_model(model_cfg.name)
    try:
        tok = AutoTokenizer.from_pretrained(
            path, revision=model_cfg.revision, trust_remote_code=model_cfg.trust_remote_code
        )
    except OSError as err:
        raise TunesmithError(f"model.name: could not load a tokenizer from {path!r} ({err})") from None
    return tok


def load_model(model_cfg, kind: str, *, path: str | None = None, **kwargs):
    """Load a model for `kind` ('classify' -> sequence classification, else causal LM).

    The keys the checkpoint did not provide (a new classification head) are kept on the model as
    `tunesmith_new_keys`, so the `head` method knows what is new.
    """
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    cls = AutoModelForSequenceClassification if kind == "classify" else AutoModelForCausalLM
    path = path or resolve_model(model_cfg.name)
    try:
        model, info = cls.from_pretrained(
            path,
            dtype=DTYPES[model_cfg.dtype],
            revision=model_cfg.revision,
            trust_remote_code=model_cfg.trust_remote_code,
            output_loading_info=True,
            **kwargs,
        )
    except (OSError, ValueError) as err:
        raise TunesmithError(f"model.name: could not load {path!r} as {cls.__name__} ({err})") from None
    model.tunesmith_new_keys = sorted(info.get("missing_keys") or [])
    if model.tunesmith_new_keys:
        log.debug("Newly initialized (not in the checkpoint): %s", ", ".join(model.tunesmith_new_keys))
    return model


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


def count_parameters(model) -> dict:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {"trainable_params": trainable, "total_params": total, "trainable_percent": round(100 * trainable / max(total, 1), 4)}


def linear_module_names(model) -> list[str]:
    """Names of the linear layers (what LoRA-family methods can target)."""
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
    """Modules whose weights the checkpoint did not provide (e.g. 'classifier', 'score')."""
    keys = getattr(model, "tunesmith_new_keys", None)
    if keys:
        return sorted({k.rsplit(".", 1)[0] for k in keys})
    return [n for n in ("classifier", "score") if hasattr(model, n)]
