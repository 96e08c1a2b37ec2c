"""sft's speed levers (objectives/lm_speed.py) skip work without changing the loss: logits only at the response
positions, and packed batches whose examples never attend to each other; the config switches validate; a model
or method that cannot take them falls back to the plain batch."""

import json

import pytest
import torch

from conftest import tiny_config
from tunesmith import api
from tunesmith.config import load_config
from tunesmith.errors import TunesmithError
from tunesmith.objectives.lm_speed import SpeedCollator, loss_positions, pack, probe


@pytest.fixture(scope="module")
def features(tiny_llama, qa_file):
    """Six tokenized sft examples of different lengths (chat format, loss on the answer only)."""
    from tunesmith.training.prepare import Prepared

    cfg = load_config(tiny_config(tiny_llama, qa_file, "sft", data={"format": "chat", "max_length": 64}))
    prep = Prepared(cfg, announce=False)
    rows = prep.features["train"].select(range(6))
    return prep.tokenizer, [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in rows]


def _model(path, method):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(path)
    if method == "lora":
        model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
        for name, p in model.named_parameters():  # LoRA B starts at zero: make the adapter do something
            if "lora_B" in name:
                torch.nn.init.normal_(p, std=0.5)
    return model.eval()


def _only(labels, keep):
    """labels with every position outside `keep` (a boolean tensor of the same shape) set to -100."""
    return torch.where(keep, labels, torch.full_like(labels, -100))


@pytest.mark.parametrize("method", ["lora", "full"])
def test_logits_at_labels_give_the_plain_loss_and_gradient(tiny_llama, features, method):
    tokenizer, feats = features
    model = _model(tiny_llama, method)
    batch = SpeedCollator(tokenizer)(feats)
    plain = model(**batch)
    sparse = model(**batch, **loss_positions(batch["labels"]))
    kept = int((batch["labels"][:, 1:] != -100).sum())
    assert sparse.logits.shape == (kept, plain.logits.shape[-1])  # the output layer ran at the loss positions only
    assert torch.allclose(sparse.loss, plain.loss, atol=1e-6, rtol=1e-5)
    grads = []
    for out in (plain, sparse):
        model.zero_grad()
        out.loss.backward()
        grads.append([p.grad.clone() for p in model.parameters() if p.requires_grad])
    assert all(torch.allclose(a, b, atol=1e-6, rtol=1e-4) for a, b in zip(*grads))


@pytest.fixture(scope="module")
def conversations(tiny_llama, tmp_path_factory):
    """Six tokenized multi-turn conversations (ShareGPT, 1 to 3 exchanges, every assistant turn trained)."""
    from conftest import write_jsonl
    from tunesmith.training.prepare import Prepared

    rows = []
    for i in range(24):
        turns = [({"from": "human", "value": f"Question {i}.{k}: what is {i} plus {k}?"},
                  {"from": "gpt", "value": f"{i} plus {k} is {i + k}." + " Indeed." * (i % 3)}) for k in range(1 + i % 3)]
        rows.append({"conversations": [turn for pair in turns for turn in pair]})
    path = write_jsonl(tmp_path_factory.mktemp("chats") / "chats.jsonl", rows)
    cfg = tiny_config(tiny_llama, str(path), "sft", data={"format": "chat", "max_length": 160})
    cfg["data"].pop("columns")
    prep = Prepared(load_config(cfg), announce=False)
    rows = prep.features["train"].select(range(6))
    assert sum(rows["turns"]) > 6  # several conversations have more than one trained turn
    return prep.tokenizer, [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in rows]


@pytest.mark.parametrize("which", ["features", "conversations"])
def test_packed_batch_gives_each_example_its_unpacked_loss(tiny_llama, which, request):
    tokenizer, feats = request.getfixturevalue(which)
    model = _model(tiny_llama, "lora")
    padded = SpeedCollator(tokenizer)(feats)
    packed = pack(feats, 2 * max(len(f["input_ids"]) for f in feats), tokenizer.pad_token_id)
    assert "attention_mask" not in packed and packed["input_ids"].shape[0] < len(feats)  # rows hold several examples
    assert int((packed["labels"] != -100).sum()) == int((padded["labels"][:, 1:] != -100).sum())
    # Which example each packed position belongs to: position ids restart at 0 for each.
    starts = (packed["position_ids"] == 0).cumsum(-1)
    with torch.no_grad():
        for i, f in enumerate(feats):
            alone = model(input_ids=torch.tensor([f["input_ids"]]), labels=torch.tensor([f["labels"]])).loss
            row = padded["labels"].new_zeros(padded["labels"].shape, dtype=torch.bool)
            row[i] = True
            in_padded = model(**{**padded, "labels": _only(padded["labels"], row)}).loss
            # the packed row and sequence number that hold example i: match its token ids
            found = [(r, s) for r in range(packed["input_ids"].shape[0]) for s in starts[r].unique().tolist()
                     if packed["input_ids"][r][starts[r] == s].tolist() == f["input_ids"]]
            r, s = found[0]
            mine = torch.zeros_like(packed["labels"], dtype=torch.bool)
            mine[r] = starts[r] == s
            in_packed = model(**{**packed, "labels": _only(packed["labels"], mine)}).loss
            assert torch.allclose(in_packed, alone, atol=1e-5, rtol=1e-5), i
            assert torch.allclose(in_padded, alone, atol=1e-5, rtol=1e-5), i
    if which == "conversations":  # and the packed batch's loss with logits at the labels only is the padded batch's
        with torch.no_grad():
            plain = model(**padded).loss
            both = model(**SpeedCollator(tokenizer, packed["input_ids"].shape[1], logits_at_labels=True)(feats)).loss
        assert torch.allclose(both, plain, atol=1e-6, rtol=1e-5)


def test_packed_and_logits_at_labels_give_the_batch_loss(tiny_llama, features):
    tokenizer, feats = features
    model = _model(tiny_llama, "lora")
    with torch.no_grad():
        plain = model(**SpeedCollator(tokenizer)(feats)).loss
        both = model(**SpeedCollator(tokenizer, 96, logits_at_labels=True)(feats)).loss
    assert torch.allclose(both, plain, atol=1e-6, rtol=1e-5)


def test_pack_fills_rows_first_fit_and_never_splits_an_example():
    feats = [{"input_ids": [5] * n, "labels": [7] * n} for n in (6, 3, 4, 2, 5)]
    out = pack(feats, 10, pad_id=0)
    assert out["input_ids"].shape == (2, 10)  # 6+4 and 5+3+2
    assert sorted((out["position_ids"] == 0).sum(-1).tolist()) == [2, 3]
    assert int((out["labels"] != -100).sum()) == sum(n - 1 for n in (6, 3, 4, 2, 5))
    longer = pack([{"input_ids": [5] * 12, "labels": [7] * 12}, {"input_ids": [5] * 3, "labels": [7] * 3}], 10, 0)
    assert longer["input_ids"].shape == (2, 12)  # an example longer than a row gets a row of its own, whole


def test_probe_finds_what_the_model_supports(tiny_llama):
    assert probe(_model(tiny_llama, "lora")) == (True, True)
    assert probe(_model(tiny_llama, "full")) == (True, True)
    from peft import PromptTuningConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    prompt = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_llama),
                            PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=4))
    assert probe(prompt)[0] is False  # virtual tokens: position ids are dropped, packed examples would mix


def test_switches_default_on_and_validate(tiny_llama, qa_file, make_config):
    cfg = load_config(make_config(tiny_llama, qa_file, "sft"))
    assert cfg.train.pack_batches is True and cfg.train.logits_at_labels is True
    off = load_config(make_config(tiny_llama, qa_file, "sft", train={"pack_batches": False, "logits_at_labels": False}))
    assert off.train.pack_batches is False and off.train.logits_at_labels is False
    with pytest.raises(TunesmithError, match="train.pack_batches"):
        load_config(make_config(tiny_llama, qa_file, "sft", train={"pack_batches": "sometimes"}))
    with pytest.raises(TunesmithError, match="train.logits_at_labels"):
        load_config(make_config(tiny_llama, qa_file, "sft", train={"logits_at_labels": [1]}))


def test_training_with_and_without_the_levers_follows_the_same_loss(tiny_llama, qa_file, make_config, tmp_path, caplog):
    losses = {}
    for name, on in (("plain", False), ("fast", True)):
        cfg = make_config(tiny_llama, qa_file, "sft", data={"format": "chat"},
                          train={"max_steps": 3, "pack_batches": on, "logits_at_labels": on},
                          eval={"num_samples": 0, "max_new_tokens": 2})
        with caplog.at_level("INFO", logger="tunesmith"):
            run = api.train(cfg, out=tmp_path / name)
        rows = [json.loads(line) for line in (run.dir / "metrics.jsonl").read_text().splitlines()]
        losses[name] = [r["loss"] for r in rows if "loss" in r]
    assert "packed into rows" in caplog.text and "at the response positions only" in caplog.text
    assert len(losses["fast"]) == 3 and losses["fast"] == pytest.approx(losses["plain"], rel=1e-4)
