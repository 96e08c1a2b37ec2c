"""classify's trainer, built to do less work per step (tests/unit/test_classify_speed.py):

- train.group_by_length: batches of rows of similar length (transformers' train_sampling_strategy: group_by_length:
  each epoch a fresh random order, cut into groups of 50 batches, each group sorted by length; the evaluations'
  batches the same way), so that far less padding is computed. Every row is still seen once per epoch; which rows
  share a batch changes, so the run follows another (equally random) path. train.extra's train_sampling_strategy wins.
- The evaluations during training (eval_strategy) always read their rows longest first (without
  train.group_by_length too): they only score the model, so less padding changes nothing it learns. The metrics are
  computed over the same rows (predictions and labels come in the same order); the base and tuned measurements of a
  run do not go through these batches.
- train.bf16_frozen_weights: under bf16 autocast on fp32 weights (a CPU with native bf16), every linear layer casts
  its weight to bf16 at every forward pass (autocast caches casts of trainable weights only), and with LoRA or a
  frozen backbone most weights are frozen: minilm-l6's casts were about a fifth of a training step. Those frozen
  weights are cast once when training starts and the fp32 originals are put back when it ends, so the tuned model
  is measured and saved as before. The matrix products see the same bf16 values, so the results are the same;
  a probe checks it on the model (one short input, without and with the cast, in eval mode) and keeps the plain
  path where the outputs differ. Weights shared with another kind of module (tied embeddings) are left alone, and
  the lever is off where checkpoints would store the cast weights (a whole model with train.save_steps) or where
  weights are sharded (train.distributed fsdp, zero2, zero3). Costs memory while training: a bf16 copy of them.
"""

from __future__ import annotations

import functools
import logging
from collections import Counter

log = logging.getLogger("tunesmith")


def build_trainer(model, tokenizer, prep, cfg, out_dir, callbacks=()):
    """classify's Objective.build_trainer: the default Trainer with the speed levers (see the module docstring)."""
    from tunesmith.objectives.trainer import build_trainer as default_trainer

    t = cfg.train
    more = {}
    if t.group_by_length and "train_sampling_strategy" not in t.extra:
        more["train_sampling_strategy"] = "group_by_length"
    trainer = default_trainer(model, tokenizer, prep, cfg, out_dir, callbacks, **more)
    if trainer.args.train_sampling_strategy != "group_by_length":
        trainer._get_eval_sampler = functools.partial(longest_first_eval, trainer)
    cast = frozen_bf16_cast(model, cfg, trainer.args.bf16)
    if cast is not None:
        trainer.add_callback(cast)
    log.info("classify batches: %s; frozen linear weights %s",
             "grouped by length" if trainer.args.train_sampling_strategy == "group_by_length" else "in random order",
             f"cast to bf16 once ({len(cast.modules)} layers)" if cast else "as they are")
    return trainer


def longest_first_eval(trainer, eval_dataset):
    """The evaluations' sampler: the rows longest first, so each batch pads to its own longest row only."""
    if eval_dataset is None or not hasattr(eval_dataset, "__len__"):
        return None
    name = trainer.processing_class.model_input_names[0]
    lengths = [len(ids) for ids in eval_dataset[name]]
    return sorted(range(len(lengths)), key=lambda i: -lengths[i])


def frozen_bf16_cast(model, cfg, bf16: bool):
    """The callback that casts the frozen linear weights at the start of training and restores them at the end, or
    None where the lever is off, does not apply, or the probe finds different outputs."""
    t = cfg.train
    if not (t.bf16_frozen_weights and bf16) or t.distributed != "ddp":
        return None
    if t.save_steps and not hasattr(model, "peft_config"):  # whole-model checkpoints would hold the cast weights
        return None
    modules = frozen_linears(model)
    if not modules:
        return None
    cast = FrozenBF16(modules)
    if not same_outputs(model, cast):
        log.info("bf16 frozen weights: this model's outputs change when its frozen weights are cast ahead; kept as they are")
        return None
    return cast


def frozen_linears(model) -> list:
    """nn.Linear modules whose fp32 weight (and bias, if any) is frozen and belongs to no other module."""
    import torch

    owners = Counter(id(p) for m in model.modules() for p in m._parameters.values() if p is not None)
    found = []
    for module in model.modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        params = [p for p in (module.weight, module.bias) if p is not None]
        if all(p.dtype == torch.float32 and not p.requires_grad and owners[id(p)] == 1 for p in params):
            found.append(module)
    return found


def _training_callback():
    from transformers import TrainerCallback

    return TrainerCallback


class FrozenBF16(_training_callback()):
    """Casts the given linear layers' weights to bf16 on_train_begin and puts the fp32 originals back on_train_end."""

    def __init__(self, modules: list):
        self.modules = modules
        self.originals: dict[int, dict] = {}

    def cast(self) -> None:
        import torch

        for module in self.modules:
            if id(module) in self.originals:
                continue
            params = {name: p for name, p in module._parameters.items() if p is not None}
            self.originals[id(module)] = {name: p.data for name, p in params.items()}
            for p in params.values():
                p.data = p.data.to(torch.bfloat16)

    def restore(self) -> None:
        for module in self.modules:
            for name, data in self.originals.pop(id(module), {}).items():
                module._parameters[name].data = data

    def on_train_begin(self, args, state, control, **kwargs):
        self.cast()

    def on_train_end(self, args, state, control, **kwargs):
        self.restore()


def same_outputs(model, cast: FrozenBF16) -> bool:
    """Whether one short input gives exactly the same logits under bf16 autocast with the weights cast ahead as
    without; eval mode, no gradient, no random numbers drawn; the weights are as before afterwards."""
    import torch

    param = next(model.parameters())
    vocab = getattr(getattr(model, "config", None), "vocab_size", None) or 100
    ids = ((torch.arange(7, device=param.device) * 37 + 5) % vocab)[None]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), torch.autocast(param.device.type, dtype=torch.bfloat16):
            plain = model(input_ids=ids).logits.float()
            cast.cast()
            ahead = model(input_ids=ids).logits.float()
    except Exception as err:  # noqa: BLE001 - a model that does not take this input trains the plain way
        log.info("bf16 frozen weights: the probe failed (%s: %s)", type(err).__name__, err)
        return False
    finally:
        cast.restore()
        model.train(was_training)
    return bool(torch.equal(plain, ahead))
