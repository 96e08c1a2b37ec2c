"""lora, dora, qlora: low-rank adapters through PEFT. The base stays frozen; the adapter saves in PEFT's layout.

- lora: W + (lora_alpha / r) * B @ A on the targeted linear layers (Hu et al., 2021).
- dora: the same update split into magnitude and direction (Liu et al., 2024); PEFT's `use_dora`.
- qlora: the base loaded in 4-bit NF4 with bitsandbytes, LoRA on top (Dettmers et al., 2023). Needs a CUDA GPU.

Initializations that move the base weights (`pissa`, `olora`, `corda`) are saved converted back to a plain
LoRA adapter on the original base (PEFT's `path_initial_model_for_weight_conversion`), so the adapter loads
with plain PEFT on the unmodified base model like any other.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from tunesmith.methods.peft_common import LoraFamilySection, lora_family_options, wrap
from tunesmith.methods.spec import Method

log = logging.getLogger("tunesmith")

MOVES_BASE = ("pissa", "olora")  # initializations that rewrite the base weights
INITS = ("gaussian", "pissa", "olora", "orthogonal")


class LoraConfig(LoraFamilySection):
    """LoRA: W + (lora_alpha / r) * B @ A on the targeted linear layers."""

    name: Literal["lora"]
    r: int = Field(8, gt=0, description="Rank of the update.")
    lora_alpha: float = Field(16, gt=0, description="Scale: the update is multiplied by lora_alpha / r (rsLoRA: / sqrt(r)).")
    bias: Literal["none", "all", "lora_only"] = "none"
    use_rslora: bool = Field(False, description="Rank-stabilized LoRA: scale by lora_alpha / sqrt(r) (Kalajdzievski, 2023).")
    init_lora_weights: bool | str = Field(
        True, description="True: B = 0 (the default); 'gaussian'; 'pissa' / 'pissa_niter_4' (principal singular "
        "vectors); 'olora' (QR); 'orthogonal'. PiSSA/OLoRA adapters are saved converted for the original base.",
    )

    @field_validator("init_lora_weights")
    @classmethod
    def _known_init(cls, value):
        if isinstance(value, bool) or value in INITS or re.fullmatch(r"pissa_niter_\d+", value):
            return value
        raise ValueError(f"expected true, false or one of {list(INITS)} (or 'pissa_niter_N')")


class DoraConfig(LoraConfig):
    """DoRA: LoRA's update split into a learned magnitude and a direction (PEFT `use_dora`)."""

    name: Literal["dora"]  # type: ignore[assignment]


class QLoraConfig(LoraConfig):
    """QLoRA: the base model in 4-bit (bitsandbytes), LoRA adapters in higher precision on top. CUDA only."""

    name: Literal["qlora"]  # type: ignore[assignment]
    bnb_4bit_quant_type: Literal["nf4", "fp4"] = Field("nf4", description="4-bit data type of the base weights.")
    bnb_4bit_use_double_quant: bool = Field(True, description="Quantize the quantization constants too (~0.4 bit/param saved).")
    bnb_4bit_compute_dtype: Literal["bfloat16", "float16", "float32"] = Field(
        "bfloat16", description="dtype the 4-bit weights are dequantized to for each matmul."
    )


def apply(model, cfg: LoraConfig):
    import peft

    shared = lora_family_options(model, cfg)
    if cfg.name == "qlora":
        model = peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    config = peft.LoraConfig(
        **shared,
        r=cfg.r,
        lora_alpha=cfg.lora_alpha,
        bias=cfg.bias,
        use_rslora=cfg.use_rslora,
        use_dora=cfg.name == "dora",
        init_lora_weights=cfg.init_lora_weights,
    )
    return wrap(model, config)


INITIAL = "initial-adapter"  # in the scratch folder: the adapter as initialized, when the initialization moved the base


def start(model, cfg: LoraConfig, scratch: Path) -> None:
    """Keep the initial adapter (as a zero-init LoRA) when the initialization moved the base weights, so `save`
    can convert the trained adapter back to one for the original base."""
    if not str(cfg.init_lora_weights).startswith(MOVES_BASE):
        return
    model.peft_config["default"].init_lora_weights = True
    model.save_pretrained(Path(scratch) / INITIAL)
    model.peft_config["default"].init_lora_weights = cfg.init_lora_weights
    log.info("%s: %s moved the base weights; the adapter will be saved converted for the original base",
             cfg.name, cfg.init_lora_weights)


def save(model, folder: Path, scratch: Path | None = None) -> None:
    initial = Path(scratch) / INITIAL if scratch else None
    if initial is None or not initial.is_dir():
        model.save_pretrained(folder)
        return
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import load_file, save_file

    model.save_pretrained(folder, path_initial_model_for_weight_conversion=str(initial))
    # PEFT 0.21's conversion keeps only lora_A/lora_B and drops the rest (modules_to_save such as a new
    # classifier head, trained biases): put those back, unchanged, so the adapter is complete.
    path = Path(folder) / "adapter_model.safetensors"
    converted = load_file(path)
    rest = {k: v.contiguous() for k, v in get_peft_model_state_dict(model).items()
            if "lora_A" not in k and "lora_B" not in k and k not in converted}
    if rest:
        save_file({**converted, **rest}, path, metadata={"format": "pt"})


def check_qlora(cfg) -> list[str]:
    """QLoRA needs bitsandbytes and a CUDA GPU; say so before anything loads."""
    import importlib.util

    import torch

    problems = []
    if not torch.cuda.is_available():
        problems.append("method.name: 'qlora' loads the base model in 4-bit with bitsandbytes, which needs a CUDA GPU, "
                        "and this machine has none (torch.cuda.is_available() is False); use method.name: lora "
                        "(the same adapter on a full-precision base) or run on a GPU machine")
    elif importlib.util.find_spec("bitsandbytes") is None:
        problems.append("method.name: 'qlora' needs the bitsandbytes package; install it with "
                        "pip install 'tunesmith[gpu]' (or pip install bitsandbytes)")
    return problems


def qlora_load_kwargs(cfg: QLoraConfig) -> dict:
    import torch
    from transformers import BitsAndBytesConfig

    quant = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=cfg.bnb_4bit_quant_type,
        bnb_4bit_use_double_quant=cfg.bnb_4bit_use_double_quant,
        bnb_4bit_compute_dtype=getattr(torch, cfg.bnb_4bit_compute_dtype),
    )
    return {"quantization_config": quant, "device_map": {"": 0}}


LORA = Method(name="lora", config_cls=LoraConfig, apply=apply, start=start, save=save, saves="adapter", peft=True, mergeable=True,
              summary="low-rank adapters (PEFT)")
DORA = Method(name="dora", config_cls=DoraConfig, apply=apply, start=start, save=save, saves="adapter", peft=True, mergeable=True,
              summary="weight-decomposed low-rank adapters (PEFT use_dora)")
QLORA = Method(name="qlora", config_cls=QLoraConfig, apply=apply, start=start, save=save, saves="adapter", peft=True, mergeable=True,
               check=check_qlora, load_kwargs=qlora_load_kwargs, summary="LoRA on a 4-bit base (bitsandbytes, CUDA)")
