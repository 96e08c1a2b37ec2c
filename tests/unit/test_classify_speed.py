"""classify's speed levers (objectives/classify_speed.py): frozen linear weights cast to bf16 once give the same loss
as autocast casting them at every step and come back as they were; length-grouped batches see every row once per
epoch with less padding; the config switches validate and turn each lever off."""

import json

import pytest
import torch

from conftest import tiny_config
from tunesmith import api
from tunesmith.config import load_config
from tunesmith.errors import TunesmithError
from tunesmith.hardware import native_bf16
from tunesmith.objectives.classify_speed import FrozenBF16, frozen_linears, same_outputs


def _lora_bert(path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2)
    model = get_peft_model(model, LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8, target_modules=["query"]))
    for name, p in model.named_parameters():  # LoRA B starts at zero: make the adapter do something
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.5)
    return model


def _batches(path, n=3):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    texts = ["a fine film", "dull and far too long for what it says", "yes", "not worth it, really not at all"]
    return [{**tok(texts, padding=True, return_tensors="pt"), "labels": torch.tensor([1, 0, 1, 0])} for _ in range(n)]


def _train(model, batches, cast=None):
    """A few AdamW steps under bf16 autocast (emulated where the CPU has no native bf16: tiny, so fast enough)."""
    torch.manual_seed(1)  # dropout draws the same masks in both runs
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    if cast:
        cast.cast()
    losses = []
    for batch in batches:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(**batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    if cast:
        cast.restore()
    return losses


def test_frozen_weights_cast_once_give_the_same_losses_and_come_back(tiny_bert):
    batches = _batches(tiny_bert)
    plain = _train(_lora_bert(tiny_bert), batches)
    model = _lora_bert(tiny_bert)
    before = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    modules = frozen_linears(model)
    assert modules and all(not m.weight.requires_grad for m in modules)
    assert not any("lora_" in n or "classifier.modules_to_save" in n for n, m in model.named_modules() if m in modules)
    cast = FrozenBF16(modules)
    assert same_outputs(model, cast)
    ahead = _train(model, batches, cast)
    assert ahead == pytest.approx(plain, abs=1e-5) and plain[0] != plain[-1]
    after = dict(model.named_parameters())
    for name, value in before.items():  # fp32 again, the very values of before
        assert after[name].dtype == torch.float32 and torch.equal(after[name], value), name


def test_weights_shared_with_another_module_are_left_alone():
    tied = torch.nn.Module()
    tied.embed = torch.nn.Embedding(10, 4)
    tied.head = torch.nn.Linear(4, 10, bias=False)
    tied.head.weight = tied.embed.weight
    tied.other = torch.nn.Linear(4, 4)
    for p in tied.parameters():
        p.requires_grad_(False)
    tied.trained = torch.nn.Linear(4, 4)
    assert frozen_linears(tied) == [tied.other]


def test_a_model_whose_outputs_change_keeps_its_weights():
    """A forward that reads a weight outside the matrix products (here a column of it, in fp32) is probed and left
    alone."""
    from types import SimpleNamespace

    class Reads(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.config = SimpleNamespace(vocab_size=50)
            self.embed = torch.nn.Embedding(50, 8)
            self.dense = torch.nn.Linear(8, 2)
            torch.nn.init.normal_(self.dense.weight, std=1.0)
            self.dense.requires_grad_(False)

        def forward(self, input_ids):
            h = self.embed(input_ids)
            return SimpleNamespace(logits=self.dense(h) + self.dense.weight[:, 0])

    model = Reads()
    cast = FrozenBF16(frozen_linears(model))
    assert cast.modules == [model.dense]
    assert not same_outputs(model, cast)
    assert model.dense.weight.dtype == torch.float32 and model.training


def test_switches_default_on_and_validate(tiny_bert, sentiment_file, make_config):
    cfg = load_config(make_config(tiny_bert, sentiment_file, "classify"))
    assert cfg.train.group_by_length is False and cfg.train.bf16_frozen_weights is True  # grouping: opt-in
    off = load_config(make_config(tiny_bert, sentiment_file, "classify",
                                  train={"group_by_length": False, "bf16_frozen_weights": False}))
    assert off.train.group_by_length is False and off.train.bf16_frozen_weights is False
    with pytest.raises(TunesmithError, match="train.group_by_length"):
        load_config(make_config(tiny_bert, sentiment_file, "classify", train={"group_by_length": "sometimes"}))
    with pytest.raises(TunesmithError, match="train.bf16_frozen_weights"):
        load_config(make_config(tiny_bert, sentiment_file, "classify", train={"bf16_frozen_weights": [1]}))


def _trainer(path, source, tmp_path, **train):
    from tunesmith.methods.registry import apply_method
    from tunesmith.modeling import ensure_pad_token, load_model
    from tunesmith.training.prepare import Prepared

    cfg = load_config(tiny_config(path, source, "classify", data={"eval_size": 32},
                                  train={"per_device_train_batch_size": 4, "bf16": False, **train}))
    prep = Prepared(cfg, announce=False)
    model = load_model(cfg.model, "classify", **prep.objective.model_kwargs(prep.task))
    ensure_pad_token(prep.tokenizer, model)
    return prep.objective.build_trainer(apply_method(model, cfg.method), prep.tokenizer, prep, cfg, tmp_path)


def _widths(trainer):
    """(rows of one epoch in order, the padded width of each batch)."""
    rows, widths = [], []
    for batch in trainer.get_train_dataloader():
        widths.append(batch["input_ids"].shape[1])
        rows += [tuple(ids[mask.bool()].tolist()) for ids, mask in zip(batch["input_ids"], batch["attention_mask"])]
    return rows, widths


def test_length_grouped_batches_see_every_row_once_with_less_padding(tiny_bert, sentiment_file, tmp_path):
    from transformers.trainer_pt_utils import LengthGroupedSampler

    grouped = _trainer(tiny_bert, sentiment_file, tmp_path / "g", group_by_length=True)
    plain = _trainer(tiny_bert, sentiment_file, tmp_path / "p", group_by_length=False)
    assert isinstance(grouped._get_train_sampler(), LengthGroupedSampler)
    assert not isinstance(plain._get_train_sampler(), LengthGroupedSampler)
    g_rows, g_widths = _widths(grouped)
    p_rows, p_widths = _widths(plain)
    assert sorted(g_rows) == sorted(p_rows) and len(g_rows) == len(plain.train_dataset)  # the same rows, each once
    assert g_rows != p_rows and sum(g_widths) < sum(p_widths)  # other neighbours, less padding
    assert isinstance(grouped._get_eval_sampler(grouped.eval_dataset or plain.train_dataset), LengthGroupedSampler)
    # the evaluations read their rows longest first either way (they train nothing): the same rows, less padding
    evaluated = plain.eval_dataset or plain.train_dataset
    seen, widths = [], []
    for batch in plain.get_eval_dataloader(evaluated):
        widths.append(batch["input_ids"].shape[1])
        seen += [tuple(ids[mask.bool()].tolist()) for ids, mask in zip(batch["input_ids"], batch["attention_mask"])]
    assert sorted(seen) == sorted(tuple(ids) for ids in evaluated["input_ids"])
    del plain._get_eval_sampler  # transformers' own sampler: the rows in order
    in_order = [batch["input_ids"].shape[1] for batch in plain.get_eval_dataloader(evaluated)]
    assert widths == sorted(widths, reverse=True) and sum(widths) < sum(in_order)
    # train.extra's sampling strategy wins
    chosen = _trainer(tiny_bert, sentiment_file, tmp_path / "x", extra={"train_sampling_strategy": "sequential"})
    assert chosen.args.train_sampling_strategy == "sequential"


@pytest.mark.skipif(not native_bf16()[0], reason="train.bf16: true needs a CPU that computes bf16 natively")
def test_training_with_and_without_the_cast_follows_the_same_loss(tiny_bert, sentiment_file, make_config, tmp_path,
                                                                   caplog):
    losses = {}
    for name, on in (("plain", False), ("cast", True)):
        cfg = make_config(tiny_bert, sentiment_file, "classify",
                          train={"max_steps": 4, "bf16": True, "group_by_length": False, "bf16_frozen_weights": on})
        with caplog.at_level("INFO", logger="tunesmith"):
            run = api.train(cfg, out=tmp_path / name)
        rows = [json.loads(line) for line in (run.dir / "metrics.jsonl").read_text().splitlines()]
        losses[name] = [r["loss"] for r in rows if "loss" in r]
        assert all(p.dtype == torch.float32 for p in run.model.parameters())  # measured and saved in fp32
    assert "cast to bf16 once" in caplog.text
    assert len(losses["cast"]) == 4 and losses["cast"] == pytest.approx(losses["plain"], abs=1e-5)
