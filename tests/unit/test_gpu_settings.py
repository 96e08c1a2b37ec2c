"""The GPU settings, resolved and checked on CPU: model.dtype auto (bf16 on a GPU that computes it, float32
elsewhere, logged), model.attn_implementation (sdpa, eager; flash_attention_2 needs CUDA and flash_attn) and
train.use_liger_kernel (a CUDA GPU and the liger-kernel package), each refused here with the key and the fix."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from tunesmith import api, hardware
from tunesmith.config import load_config
from tunesmith.errors import TunesmithError


def _cfg(make_config, tiny_llama, text_file, model=None, train=None):
    cfg = make_config(tiny_llama, text_file, "causal_lm", train={"max_steps": 1, "bf16": False, **(train or {})})
    cfg["model"].update(model or {})
    return cfg


def test_dtype_auto_is_float32_on_cpu_and_bf16_on_a_gpu_with_bf16(monkeypatch, caplog):
    with caplog.at_level(logging.INFO, logger="tunesmith"):
        assert hardware.resolve_dtype("auto") == ("bfloat16" if torch.cuda.is_available() and hardware.native_bf16()[0]
                                                  else "float32")
    assert "model.dtype: auto ->" in caplog.text
    assert hardware.resolve_dtype("float16") == "float16" and hardware.resolve_dtype("float32") == "float32"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(hardware, "native_bf16", lambda use_cpu=False: (True, "GPU X computes bf16 natively"))
    assert hardware.resolve_dtype("auto") == "bfloat16"
    assert hardware.resolve_dtype("auto", use_cpu=True) == "float32"  # train.use_cpu: CPU weights stay float32
    monkeypatch.setattr(hardware, "native_bf16", lambda use_cpu=False: (False, "GPU X has no native bf16"))
    assert hardware.resolve_dtype("auto") == "float32"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU machine's choice")
def test_dtype_auto_loads_float32_weights_on_cpu(make_config, tiny_llama, text_file):
    from tunesmith.modeling import load_model

    cfg = load_config(_cfg(make_config, tiny_llama, text_file, model={"dtype": "auto", "attn_implementation": "eager"}))
    model = load_model(cfg.model, "causal_lm")
    assert next(model.parameters()).dtype == torch.float32
    assert model.config._attn_implementation == "eager"
    sdpa = load_model(load_config(cfg, {"model.attn_implementation": "sdpa"}).model, "causal_lm")
    assert sdpa.config._attn_implementation == "sdpa"


def test_attn_implementation_values_are_checked(make_config, tiny_llama, text_file):
    with pytest.raises(TunesmithError, match="model.attn_implementation") as err:
        load_config(_cfg(make_config, tiny_llama, text_file, model={"attn_implementation": "flash3"}))
    assert "sdpa" in str(err.value) and "flash_attention_2" in str(err.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a CPU-only machine")
@pytest.mark.parametrize("key, value, message", [
    ("model.attn_implementation", "flash_attention_2", "flash_attention_2 needs a CUDA GPU .* use sdpa"),
    ("train.use_liger_kernel", True, "train.use_liger_kernel: true needs a CUDA GPU .*set it to false here"),
])
def test_gpu_only_settings_are_refused_on_cpu_before_anything_loads(key, value, message, tmp_path, make_config,
                                                                    tiny_llama, text_file):
    section, field = key.split(".")
    cfg = _cfg(make_config, tiny_llama, text_file, **{section: {field: value}})
    with pytest.raises(TunesmithError, match=message):
        api.train(cfg, out=tmp_path / "run")
    assert not (tmp_path / "run").exists()
    api.validate(cfg)  # a GPU config is checked on a laptop: validate does not refuse it


def test_gpu_settings_pass_where_gpu_and_packages_are(monkeypatch, make_config, tiny_llama, text_file):
    import importlib.util

    real = importlib.util.find_spec
    cfg = load_config(_cfg(make_config, tiny_llama, text_file, model={"attn_implementation": "flash_attention_2"},
                           train={"use_liger_kernel": True}))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name in ("flash_attn", "liger_kernel") else real(name, *a))
    assert hardware.gpu_setting_problems(cfg.model, cfg.train) == []
    assert "the flash_attn package" not in " ".join(hardware.gpu_setting_problems(cfg.model, cfg.train))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in ("flash_attn", "liger_kernel") else real(name, *a))
    problems = hardware.gpu_setting_problems(cfg.model, cfg.train)
    assert "pip install flash-attn" in problems[0] and "pip install liger-kernel" in problems[1]
    assert "CUDA GPU" not in " ".join(problems)


def test_use_liger_kernel_reaches_the_trainer(monkeypatch, make_config, tiny_llama, text_file):
    from tunesmith.objectives.registry import OBJECTIVES
    from tunesmith.objectives.trainer import training_arguments

    cfg = load_config(_cfg(make_config, tiny_llama, text_file))
    assert training_arguments(cfg, Path("/tmp/unused"), OBJECTIVES["causal_lm"]).use_liger_kernel is False
    on = load_config(cfg, {"train.use_liger_kernel": True})
    try:
        args = training_arguments(on, Path("/tmp/unused"), OBJECTIVES["causal_lm"])
    except ImportError as err:  # transformers checks the package when the arguments are made
        assert "liger" in str(err).lower()
    else:
        assert args.use_liger_kernel is True
