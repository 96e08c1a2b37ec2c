"""adalora: LoRA whose rank is pruned during training by importance (Zhang et al., 2023), through PEFT.

Each targeted matrix gets an SVD-shaped update P·diag(E)·Q of rank `init_r`. After `tinit` warm-up steps the
total rank budget falls on a cubic schedule to `target_r` per matrix on average, keeping the singular triplets
with the highest smoothed sensitivity (|weight × gradient|, averaged with `beta1` and `beta2`), so important layers
keep more rank than others; the last `tfinal` steps train at the final ranks. An orthogonality penalty
(`orth_reg_weight`) keeps P and Q close to orthogonal.

PEFT needs the run's number of optimizer steps (`total_step`) and a call to `update_and_allocate` after every
optimizer step, which transformers' Trainer does not make. Both come from one TrainerCallback (the method's
`callbacks` hook): it reads the step count from the trainer when training starts and allocates after each step.
The saved adapter records the final rank pattern and loads with plain PEFT.
"""

from __future__ import annotations

import logging
from typing import Literal

from pydantic import Field, model_validator

from tunesmith.errors import TunesmithError
from tunesmith.methods.peft_common import LoraFamilySection, lora_family_options, wrap
from tunesmith.methods.spec import Method

log = logging.getLogger("tunesmith")

STEPS_HELP = "a fraction of the run's optimizer steps (below 1) or a number of steps (1 or more)"


class AdaLoraConfig(LoraFamilySection):
    """AdaLoRA: rank init_r per targeted matrix, pruned by importance to target_r on average."""

    name: Literal["adalora"]
    init_r: int = Field(12, gt=0, description="Rank every targeted matrix starts with.")
    target_r: int = Field(8, gt=0, description="Average rank per matrix at the end; the budget (target_r x matrices) "
                          "is shared by importance, so a matrix may end anywhere from 0 to init_r.")
    tinit: float = Field(0.1, ge=0, description=f"Warm-up before pruning starts: {STEPS_HELP}.")
    tfinal: float = Field(0.2, ge=0, description=f"Last steps, trained at the final ranks: {STEPS_HELP}; at least 1 step.")
    deltaT: int = Field(1, gt=0, description="Optimizer steps between two budget allocations while pruning.")
    beta1: float = Field(0.85, gt=0, lt=1, description="Smoothing of the sensitivity (exponential moving average).")
    beta2: float = Field(0.85, gt=0, lt=1, description="Smoothing of its uncertainty.")
    orth_reg_weight: float = Field(0.5, ge=0, description="Weight of the penalty that keeps P and Q orthogonal.")
    lora_alpha: float = Field(16, gt=0, description="Scale: the update is multiplied by lora_alpha / init_r.")

    @model_validator(mode="after")
    def _ranks(self):
        if self.target_r > self.init_r:
            raise ValueError(f"target_r ({self.target_r}) must not exceed init_r ({self.init_r}): AdaLoRA only "
                             "prunes rank")
        return self


def schedule(cfg: AdaLoraConfig, total: int) -> tuple[int, int]:
    """(tinit, tfinal) in steps for a run of `total` optimizer steps. tfinal is at least 1: PEFT fixes the final
    rank pattern at step total - tfinal, which a run of steps 0 .. total-1 reaches only then."""
    def steps(value: float) -> int:
        return int(value) if value >= 1 else round(value * total)

    tinit, tfinal = steps(cfg.tinit), max(1, steps(cfg.tfinal))
    if tinit >= total - tfinal:
        raise TunesmithError(
            f"method.tinit / method.tfinal: {tinit} warm-up and {tfinal} final steps leave no step to prune the rank "
            f"in a run of {total} optimizer steps; lower them (fractions such as tinit: 0.1, tfinal: 0.2 scale with "
            "the run) or train longer")
    return tinit, tfinal


def check(cfg) -> list[str]:
    """A schedule that leaves no pruning phase, when the step count is known from the config (max_steps); keeping
    the best checkpoint, which PEFT cannot load back once the ranks have changed."""
    problems = []
    if cfg.train.load_best_model_at_end:
        problems.append("train.load_best_model_at_end: adalora changes every matrix's rank while it trains, and PEFT "
                        "cannot load an earlier checkpoint (other ranks) back into the final model; set it to false "
                        "(the adapter after the last step, at the final ranks, is kept)")
    if cfg.train.save_steps:
        problems.append("train.save_steps: adalora's checkpoints cannot be resumed (the ranks change while it trains and "
                        "its importance estimates are not in the checkpoint); remove train.save_steps")
    if cfg.train.max_steps > 0:
        try:
            schedule(cfg.method, cfg.train.max_steps)
        except TunesmithError as err:
            problems += err.problems
    return problems


def apply(model, cfg: AdaLoraConfig):
    import peft

    config = peft.AdaLoraConfig(
        **lora_family_options(model, cfg),
        init_r=cfg.init_r,
        target_r=cfg.target_r,
        deltaT=cfg.deltaT,
        beta1=cfg.beta1,
        beta2=cfg.beta2,
        orth_reg_weight=cfg.orth_reg_weight,
        lora_alpha=cfg.lora_alpha,
        total_step=1,  # a placeholder PEFT's checks accept: the callback sets the real schedule when training starts
    )
    return wrap(model, config)


def callbacks(model, cfg) -> list:
    """One TrainerCallback that drives PEFT's rank allocation for `model` (the applied PeftModel)."""
    from transformers import TrainerCallback

    adalora = model.base_model  # PEFT's AdaLoraModel: holds the rank allocator
    config = model.peft_config["default"]  # the allocator reads its schedule from this object at every step

    class RankAllocation(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            config.tinit, config.tfinal = schedule(cfg.method, state.max_steps)
            config.total_step = state.max_steps
            log.info("adalora: rank %d per matrix, pruned after step %d to %d on average by step %d of %d",
                     config.init_r, config.tinit, config.target_r, state.max_steps - config.tfinal, state.max_steps)

        def on_optimizer_step(self, args, state, control, **kwargs):  # after optimizer.step(), before zero_grad()
            adalora.update_and_allocate(state.global_step)

    return [RankAllocation()]


def save(model, folder, scratch=None) -> None:
    config = model.peft_config["default"]
    if config.rank_pattern is None:
        log.warning("adalora: the trainer never ran the rank allocation (an objective whose trainer does not call "
                    "TrainerCallback.on_optimizer_step); the adapter keeps rank %d everywhere, as plain LoRA would",
                    config.init_r)
    model.save_pretrained(folder)


def load(base, folder):
    """Plain PEFT's load. PEFT 0.21 checks rank_pattern keys as LoRA's (module names) and warns that AdaLoRA's
    (lora_E names) match no module, although AdaLoRA resizes by them correctly: that false alarm is silenced."""
    import warnings

    from peft import PeftModel

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The following rank_pattern keys did not match")
        return PeftModel.from_pretrained(base, str(folder))


METHOD = Method(name="adalora", config_cls=AdaLoraConfig, apply=apply, check=check, callbacks=callbacks, save=save,
                load=load, saves="adapter", peft=True, mergeable=True, summary="LoRA with rank pruned by importance (PEFT AdaLoRA)")
