"""QLoRA on a real CUDA GPU: a 4-bit base, LoRA on top, trained and reloaded. Skipped without a GPU (the
CPU-side error is tested in test_method_options.py)."""

import pytest
import torch

from tunesmith import api

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="QLoRA needs a CUDA GPU")]


def test_qlora_trains_lora_on_a_4bit_base_and_reloads(tiny_llama, qa_file, make_config, tmp_path):
    pytest.importorskip("bitsandbytes")
    import bitsandbytes as bnb

    cfg = make_config(tiny_llama, qa_file, "sft", {"name": "qlora", "r": 4, "lora_alpha": 8}, train={"bf16": True})
    run = api.train(cfg, out=tmp_path / "run")
    model = run.model
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules()), "base is not 4-bit"
    assert all("lora_" in n for n, p in model.named_parameters() if p.requires_grad)
    assert run.results["tuned"]["eval_loss"] < run.results["base"]["eval_loss"]
    reloaded = api.load_run(run.dir)
    assert run.generate(["Why?"], max_new_tokens=4) == reloaded.generate(["Why?"], max_new_tokens=4)
