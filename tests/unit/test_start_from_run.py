"""model.name may be a finished run folder: the next stage starts from that run's tuned model."""

from __future__ import annotations

import pytest
import torch

from tunesmith import api
from tunesmith.errors import TunesmithError
from tunesmith.runs.start import model_folder, root_model


def _logits(model, tokenizer, text="What is AI?"):
    with torch.no_grad():
        return model(**tokenizer(text, return_tensors="pt")).logits


def test_a_lora_run_is_folded_once_and_the_next_stage_starts_from_it(tiny_llama, qa_file, make_config, tmp_path):
    from transformers import AutoModelForCausalLM

    first = api.train(make_config(tiny_llama, qa_file, "sft"), out=tmp_path / "sft")
    folder = model_folder(first.dir)
    assert (folder / "config.json").exists() and not (folder / "adapter_config.json").exists()
    assert model_folder(first.dir) == folder  # cached: merged once
    merged = AutoModelForCausalLM.from_pretrained(folder).eval()
    assert torch.allclose(_logits(merged, first.tokenizer), _logits(first.model, first.tokenizer), atol=1e-5)

    second = api.train(make_config(str(first.dir), qa_file, "sft"), out=tmp_path / "second")
    base = second.load_base()  # the second stage's base is the first stage's tuned model
    assert torch.allclose(_logits(base, second.tokenizer), _logits(merged, first.tokenizer), atol=1e-5)
    assert root_model(str(second.dir)) == tiny_llama


def test_a_retrained_run_is_merged_afresh_and_a_full_run_is_used_as_saved(tiny_llama, qa_file, make_config, tmp_path):
    cfg = make_config(tiny_llama, qa_file, "sft")
    first = api.train(cfg, out=tmp_path / "sft")
    before = model_folder(first.dir)
    api.train({**cfg, "train": {**cfg["train"], "seed": 7}}, out=tmp_path / "sft", overwrite=True)
    assert model_folder(tmp_path / "sft") != before

    full = api.train(make_config(tiny_llama, qa_file, "sft", method={"name": "full"}), out=tmp_path / "full")
    assert model_folder(full.dir) == full.dir / "model"


def test_runs_that_cannot_be_started_from_say_why(tiny_llama, qa_file, make_config, tmp_path):
    prompt = api.train(make_config(tiny_llama, qa_file, "sft", method={"name": "prompt", "num_virtual_tokens": 2}),
                       out=tmp_path / "prompt")
    with pytest.raises(TunesmithError, match="'prompt' run.*lora, dora, ia3"):
        model_folder(prompt.dir)
    (tmp_path / "prompt" / "manifest.json").write_text('{"format": "tunesmith-run", "status": "running"}')
    with pytest.raises(TunesmithError, match="did not finish"):
        model_folder(prompt.dir)
