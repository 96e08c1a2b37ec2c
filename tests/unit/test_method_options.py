"""Method options, closed-form parameter counts, errors, and adapters that load with plain PEFT."""

import pytest
import torch

from tunesmith import api
from tunesmith.config import load_config
from tunesmith.errors import TunesmithError
from tunesmith.hardware import native_bf16
from tunesmith.methods.registry import apply_method
from tunesmith.modeling import count_parameters, load_model


def applied(make_config, model_path, data, objective, method):
    cfg = load_config(make_config(model_path, data, objective, method))
    kind = "classify" if objective == "classify" else "causal_lm"
    model = load_model(cfg.model, kind, **({"num_labels": 2} if kind == "classify" else {}))
    return apply_method(model, cfg.method)


@pytest.mark.parametrize("method", [{"name": "lora"}, {"name": "dora"}, {"name": "ia3"}, {"name": "prompt", "num_virtual_tokens": 4},
                                    {"name": "prefix", "num_virtual_tokens": 4},
                                    {"name": "lora", "init_lora_weights": "pissa", "target_modules": ["query", "value"]}])
def test_adapter_loads_with_plain_peft(method, tiny_bert, sentiment_file, make_config, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    run = api.train(make_config(tiny_bert, sentiment_file, "classify", method), out=tmp_path / "run")
    base = AutoModelForSequenceClassification.from_pretrained(tiny_bert, num_labels=2)
    model = PeftModel.from_pretrained(base, str(run.dir / "adapter")).eval()
    tok = AutoTokenizer.from_pretrained(str(run.dir / "adapter"))
    with torch.no_grad():
        probs = torch.softmax(model(**tok(["What a film."], return_tensors="pt")).logits, -1)[0]
    assert abs(float(probs.max()) - run.predict("What a film.")[0]["score"]) < 1e-4


def test_lora_target_that_matches_nothing_lists_linear_modules(tiny_bert, sentiment_file, make_config):
    with pytest.raises(TunesmithError, match=r"\['q_proj'\] match no linear module.*'query'"):
        applied(make_config, tiny_bert, sentiment_file, "classify", {"name": "lora", "target_modules": ["q_proj"]})


def test_lora_trainable_count_matches_closed_form(tiny_bert, sentiment_file, make_config):
    model = applied(make_config, tiny_bert, sentiment_file, "classify", {"name": "lora", "r": 4, "target_modules": ["query", "value"]})
    lora = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    assert lora == 2 * 2 * 4 * (32 + 32)  # 2 layers x 2 matrices x r x (d_in + d_out)


def test_dora_adds_one_magnitude_per_output_feature(tiny_bert, sentiment_file, make_config):
    model = applied(make_config, tiny_bert, sentiment_file, "classify", {"name": "dora", "r": 4, "target_modules": ["query"]})
    magnitude = sum(p.numel() for n, p in model.named_parameters() if "lora_magnitude_vector" in n)
    lora = sum(p.numel() for n, p in model.named_parameters() if "lora_A" in n or "lora_B" in n)
    assert (lora, magnitude) == (2 * 4 * (32 + 32), 2 * 32)


def test_rslora_scales_by_square_root_of_rank(tiny_bert, sentiment_file, make_config):
    model = applied(make_config, tiny_bert, sentiment_file, "classify",
                    {"name": "lora", "r": 16, "lora_alpha": 8, "use_rslora": True, "target_modules": ["query"]})
    layer = model.base_model.model.bert.encoder.layer[0].attention.self.query
    assert layer.scaling["default"] == pytest.approx(8 / 16 ** 0.5)


def test_prompt_tuning_count_is_virtual_tokens_times_hidden(tiny_llama, qa_file, make_config):
    model = applied(make_config, tiny_llama, qa_file, "sft", {"name": "prompt", "num_virtual_tokens": 7})
    assert count_parameters(model)["trainable_params"] == 7 * 32


def test_prompt_tuning_initialized_from_text(tiny_llama, qa_file, make_config):
    model = applied(make_config, tiny_llama, qa_file, "sft", {"name": "prompt", "num_virtual_tokens": 3, "init_text": "Answer briefly"})
    tok_ids = model.base_model.get_input_embeddings()
    from transformers import AutoTokenizer

    ids = AutoTokenizer.from_pretrained(tiny_llama)("Answer briefly")["input_ids"]
    expected = tok_ids.weight[torch.tensor((ids * 3)[:3])]
    assert torch.equal(model.prompt_encoder["default"].embedding.weight.detach(), expected.detach())


def test_freeze_top_k_and_patterns(tiny_bert, sentiment_file, make_config):
    model = applied(make_config, tiny_bert, sentiment_file, "classify", {"name": "freeze", "top_k_layers": 1, "patterns": ["*LayerNorm*"]})
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any(".layer.1." in n for n in trainable) and not any(".layer.0.attention.self" in n for n in trainable)
    assert "bert.embeddings.LayerNorm.weight" in trainable and "classifier.weight" in trainable


@pytest.mark.parametrize("method,match", [
    ({"name": "freeze", "top_k_layers": 5}, r"method.top_k_layers: 5 is more than the 2 blocks"),
    ({"name": "freeze", "patterns": ["*nothing*"]}, r"method.patterns: '\*nothing\*' matches no parameter"),
])
def test_freeze_errors_name_the_field(method, match, tiny_bert, sentiment_file, make_config):
    with pytest.raises(TunesmithError, match=match):
        applied(make_config, tiny_bert, sentiment_file, "classify", method)


@pytest.mark.parametrize("method,match", [
    ({"name": "freeze"}, r"set method.top_k_layers"),
    ({"name": "lora", "init_lora_weights": "svd"}, r"method.init_lora_weights: .*expected true, false or one of"),
    ({"name": "ia3", "feedforward_modules": ["output.dense"]}, r"feedforward_modules needs target_modules"),
    ({"name": "prefix", "encoder_hidden_size": 64}, r"encoder_hidden_size applies only with prefix_projection"),
])
def test_method_config_errors(method, match, tiny_bert, sentiment_file, make_config):
    with pytest.raises(TunesmithError, match=match):
        load_config(make_config(tiny_bert, sentiment_file, "classify", method))


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a CUDA GPU")
def test_qlora_without_gpu_says_why_and_suggests_lora(tiny_llama, qa_file, make_config):
    with pytest.raises(TunesmithError, match=r"'qlora' .* needs a CUDA GPU.*use method.name: lora"):
        load_config(make_config(tiny_llama, qa_file, "sft", {"name": "qlora"}))


def test_run_folder_is_never_clobbered(tiny_bert, sentiment_file, make_config, tmp_path):
    out = tmp_path / "run"
    api.train(make_config(tiny_bert, sentiment_file, "classify"), out=out)
    with pytest.raises(TunesmithError, match="already exists; pass --overwrite"):
        api.train(make_config(tiny_bert, sentiment_file, "classify"), out=out)
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("precious")
    with pytest.raises(TunesmithError, match="not a folder tunesmith wrote as a run"):
        api.train(make_config(tiny_bert, sentiment_file, "classify"), out=mine, overwrite=True)
    assert (mine / "notes.txt").read_text() == "precious"


@pytest.mark.skipif(not native_bf16()[0], reason=f"no native bf16 here ({native_bf16()[1]}); "
                    "the resolution is tested in test_precision.py")
def test_bf16_mixed_precision_trains_where_native(tiny_llama, qa_file, make_config, tmp_path):
    """train.bf16: true on a GPU or a CPU with AVX-512 BF16 / AMX (on a CPU the Trainer needs use_cpu=True, which
    tunesmith sets without a GPU). Without native bf16 it would be emulated, ~40x slower, and `true` is an error."""
    from tunesmith.report.runlog import read_metrics

    run = api.train(make_config(tiny_llama, qa_file, "sft", train={"bf16": True}), out=tmp_path / "run")
    losses = [r["loss"] for r in read_metrics(run.dir) if "loss" in r]
    assert losses and all(loss == loss and loss < 50 for loss in losses)  # finite
    assert run.results["tuned"]["eval_loss"] < run.results["base"]["eval_loss"]


def test_prefix_on_an_encoder_without_past_key_values_says_why(tiny_bert, sentiment_file, make_config, monkeypatch):
    """transformers 5.24 renamed BERT's past_key_values to cache; PEFT's prefix tuning then fails mid-training.
    tunesmith stops before training with the reason and the fix (simulated here on any version)."""
    from transformers import BertForSequenceClassification, BertModel

    for cls in (BertModel, BertForSequenceClassification):
        original = cls.forward
        monkeypatch.setattr(cls, "forward", lambda self, input_ids=None, attention_mask=None, _f=original, **kw:
                            _f(self, input_ids=input_ids, attention_mask=attention_mask, **kw))
    with pytest.raises(TunesmithError, match=r"prefix tuning needs a model whose forward takes past_key_values.*transformers<5.24"):
        applied(make_config, tiny_bert, sentiment_file, "classify", {"name": "prefix", "num_virtual_tokens": 4})
