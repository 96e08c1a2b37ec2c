"""Shared fixtures: tiny random models (2 layers, hidden 32) with real tokenizers, and small real data files."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> str:
    """A random 2-layer BERT (hidden 32) with the real minilm-l6 tokenizer."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    from tunesmith.assets import ASSETS

    path = tmp_path_factory.mktemp("tiny-bert")
    tok = AutoTokenizer.from_pretrained(str(ASSETS["minilm-l6"].require()))
    config = BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=37, max_position_embeddings=128)
    import torch

    torch.manual_seed(0)
    BertModel(config).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def smollm_tokenizer():
    """The real SmolLM2 tokenizer (with its chat template), read from the GGUF file (about 5 s)."""
    from transformers import AutoTokenizer

    from tunesmith.assets import ASSETS, cache_dir

    converted = cache_dir() / "models" / "smollm2-135m-instruct"
    if (converted / "tokenizer_config.json").exists():
        return AutoTokenizer.from_pretrained(str(converted))
    gguf = ASSETS["smollm2-135m-instruct"].require()
    return AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory, smollm_tokenizer) -> str:
    """A random 2-layer Llama (hidden 32) with the real SmolLM2 tokenizer and chat template."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    path = tmp_path_factory.mktemp("tiny-llama")
    tok = smollm_tokenizer
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                         tie_word_embeddings=True)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def sentiment_file(tmp_path_factory) -> str:
    """96 real rotten_tomatoes snippets as JSONL (text, label)."""
    from tunesmith.assets import load_catalog_dataset

    ds = load_catalog_dataset("rotten_tomatoes").shuffle(seed=0).select(range(96))
    return str(write_jsonl(tmp_path_factory.mktemp("data") / "sentiment.jsonl", ds.to_list()))


@pytest.fixture(scope="session")
def qa_file(tmp_path_factory) -> str:
    """64 real chatterbot question/answer pairs as JSONL (question, answer, category)."""
    from tunesmith.assets import load_catalog_dataset

    ds = load_catalog_dataset("chatterbot-qa").shuffle(seed=0).select(range(64))
    return str(write_jsonl(tmp_path_factory.mktemp("data") / "qa.jsonl", ds.to_list()))


@pytest.fixture(scope="session")
def text_file(tmp_path_factory) -> str:
    """40 passages of Hamlet as JSONL (text)."""
    from tunesmith.assets import load_catalog_dataset

    ds = load_catalog_dataset("hamlet").select(range(40))
    return str(write_jsonl(tmp_path_factory.mktemp("data") / "hamlet.jsonl", ds.to_list()))


def tiny_config(model: str, source: str, objective: str, method: dict | None = None, **sections) -> dict:
    """A config for a tiny run: a few steps, small eval, no report unless asked."""
    cfg = {
        "model": {"name": model},
        "data": {"source": source, "eval_size": 16, "max_length": 48},
        "method": method or {"name": "lora", "r": 4, "lora_alpha": 8},
        "objective": {"name": objective},
        "train": {"max_steps": 4, "learning_rate": 5e-3, "per_device_train_batch_size": 8, "eval_strategy": "no",
                  "logging_steps": 1},
        "eval": {"num_samples": 2, "max_new_tokens": 4},
        "report": {"html": False},
    }
    if objective == "sft":
        cfg["data"].update({"columns": {"prompt": "question", "response": "answer"}})
    for key, value in sections.items():
        cfg[key] = {**cfg.get(key, {}), **value}
    return cfg


@pytest.fixture
def make_config():
    return tiny_config


@pytest.fixture(scope="module")
def lora_pair(tiny_llama):
    """A PeftModel with LoRA adapters 'ada' and 'bob' (random, large enough to change the answers) on the tiny Llama,
    and its tokenizer (the serve batching tests)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    config = {"r": 4, "lora_alpha": 64, "target_modules": ["q_proj", "v_proj", "o_proj"], "init_lora_weights": False}
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_llama), LoraConfig(**config), adapter_name="ada")
    model.add_adapter("bob", LoraConfig(**config))
    return model.eval(), AutoTokenizer.from_pretrained(tiny_llama)


@pytest.fixture(scope="module")
def plain_registry(tiny_llama):
    """tunesmith serve's registry holding the tiny Llama as a plain model (no run trained)."""
    from tunesmith.serve.registry import load_registry

    registry = load_registry([], [tiny_llama])
    yield registry
    registry.close()

