"""dpo: direct preference optimization on pairs (prompt, chosen, rejected) through TRL's DPOTrainer.

DPO (Rafailov et al., 2023) raises the log-probability of the chosen response relative to the rejected one, each
measured against a frozen reference model (the base), with no reward model and no sampling. `loss_type` chooses
TRL's loss (sigmoid: DPO; ipo, hinge, robust, ...), `beta` how far the policy may move from the reference.
Rows may be texts or, with a chat data.format, conversational as TRL documents it: `prompt` a list of messages,
`chosen` and `rejected` lists of assistant messages (preference.py renders both through the chat template).

Metrics on the held-out pairs, for the base model and the tuned model alike (log p: the summed log-probability of
a response's tokens given the prompt, the quantity DPO's implicit reward is made of):
- preference_accuracy: share of pairs with log p(chosen) > log p(rejected) under the measured model itself;
- logp_margin: the mean of log p(chosen) - log p(rejected), in nats;
- reward_accuracy, reward_margin: TRL's held-out rewards/accuracies and rewards/margins, relative to the
  reference: the implicit reward margin beta * ([log p(chosen) - log p_ref(chosen)] - [log p(rejected) -
  log p_ref(rejected)]), its share above 0 (a tie counts half) and its mean. The base is its own reference, so its
  margins are all 0: accuracy 0.5, margin 0;
- eval_loss, perplexity: mean negative log-likelihood per token of the chosen responses (what moving away from
  the reference cost the preferred text);
- chosen_over_unrelated (when data.columns names an `unrelated` role): share of items where the chosen response
  has a higher log-probability per token than the unrelated one, i.e. the model still prefers the meaningful
  response to a meaningless one (StereoSet's language-modeling check; per token, since a meaningless sentence is
  often shorter, and a sum would favour it for that alone).
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from tunesmith.data.roles import Role
from tunesmith.objectives.feedback import checks
from tunesmith.objectives.feedback import preference as pref
from tunesmith.schema import Section

# TRL 1.16's DPO losses (DPOConfig.loss_type); a name outside this list fails at config time, before torch loads
LOSS_TYPES = ("sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair", "sppo_hard", "aot",
              "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft", "sigmoid_norm")


class DPOConfig(Section):
    """Direct preference optimization on (prompt, chosen, rejected) pairs through TRL's DPOTrainer."""

    name: Literal["dpo"]
    beta: float = Field(0.1, gt=0, description="How strongly the policy is held to the reference (higher: closer). "
                        "For loss_type ipo it is IPO's tau.")
    loss_type: str | list[str] = Field(
        "sigmoid", description=f"TRL's DPO loss: sigmoid (DPO), ipo, hinge, robust, ... ({', '.join(LOSS_TYPES)}); "
        "a list combines several, weighted by loss_weights.",
    )
    loss_weights: list[float] | None = Field(None, description="One weight per loss_type of a list (default: 1 each).")
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="The probability that a label is flipped, for "
                                   "loss_type robust (and EXO's epsilon, which must then be > 0).")

    @field_validator("loss_type")
    @classmethod
    def _known_losses(cls, value):
        unknown = [loss for loss in ([value] if isinstance(value, str) else value) if loss not in LOSS_TYPES]
        if unknown:
            raise ValueError(f"{unknown} {'is' if len(unknown) == 1 else 'are'} not a known DPO loss (TRL 1.16's list); "
                             f"expected one of {list(LOSS_TYPES)}")
        return value

    @model_validator(mode="after")
    def _weights(self):
        losses = self.losses()
        if self.loss_weights is not None and len(self.loss_weights) != len(losses):
            raise ValueError(f"objective.loss_weights has {len(self.loss_weights)} weights for the {len(losses)} "
                             "losses of objective.loss_type; give one weight per loss")
        if "exo_pair" in losses and self.label_smoothing == 0:
            raise ValueError("objective.loss_type exo_pair needs objective.label_smoothing > 0 (its epsilon; the paper "
                             "uses 1e-3)")
        return self

    def losses(self) -> list[str]:
        return [self.loss_type] if isinstance(self.loss_type, str) else list(self.loss_type)


ROLES = (
    Role("prompt", turns=True, help="what the responses answer or continue (with a chat data.format, the user's "
         "message, or a list of messages)"),
    Role("chosen", turns=True, help="the preferred response"),
    Role("rejected", turns=True, help="the response the model should come to prefer less"),
    Role("unrelated", turns=True, optional=True, help="a meaningless response; the metrics then report how often the "
         "model still prefers chosen over it (chosen_over_unrelated)"),
)
RESPONSES = ("chosen", "rejected", "unrelated")
METRICS = frozenset({"loss", "rewards/accuracies", "rewards/margins", "rewards/chosen", "rewards/rejected",
                     "logps/chosen", "logps/rejected"})  # what TRL logs in its evaluation (train.metric_for_best_model)
DIRECTIONS = {"preference_accuracy": "max", "logp_margin": "max", "reward_accuracy": "max", "reward_margin": "max",
              "chosen_over_unrelated": "max", "eval_loss": "min", "perplexity": "min", "loss": "min",
              "rewards/accuracies": "max", "rewards/margins": "max", "rewards/chosen": "max", "rewards/rejected": "min",
              "logps/chosen": "max", "logps/rejected": "min"}


TRL_OPTIONS = ("beta", "loss_type", "loss_weights", "label_smoothing")  # objective fields passed to TRL's DPOConfig


def check_config(cfg) -> list[str]:
    return checks.config_problems(cfg, ROLES) + checks.train_extra_overlap(cfg, TRL_OPTIONS)


def _roles(cfg) -> list[str]:
    return [r for r in ("prompt", *RESPONSES) if cfg.data.column(r) is not None]


def check(cfg, dd, tokenizer) -> list[str]:
    return checks.data_problems(cfg, dd, tokenizer, _roles(cfg), RESPONSES,
                              lambda ds, split: checks.identical_pairs(cfg, ds, split))


def _responses(cfg) -> list[str]:
    return [r for r in RESPONSES if cfg.data.column(r) is not None]


def tokenize(ds, tokenizer, cfg, task):
    """prompt_ids and the ids of each response (TRL's tokenization, see preference.split_ids), plus the columns
    validate and `data preview` read (prompt + chosen)."""
    d, responses = cfg.data, _responses(cfg)

    def encode(row):
        prompt, ids = pref.split_ids(tokenizer, d, row[d.column("prompt")], [row[d.column(r)] for r in responses])
        longest = len(prompt) + max(len(i) for i in ids)
        return {"prompt_ids": prompt, **{f"{r}_ids": i for r, i in zip(responses, ids)},
                **pref.stats_features(prompt, ids[0], longest)}

    return ds.map(encode, remove_columns=ds.column_names, desc=f"tokenize {len(ds):,} pairs")


def trl_dataset(ds, cfg):
    """The split as TRL's DPOTrainer reads it: prompt, chosen, rejected (text, or chat messages)."""
    from datasets import Dataset

    d = cfg.data
    return Dataset.from_dict({
        "prompt": [pref.prompt_value(d, p) for p in ds[d.column("prompt")][:]],
        "chosen": [pref.response_value(d, c) for c in ds[d.column("chosen")][:]],
        "rejected": [pref.response_value(d, r) for r in ds[d.column("rejected")][:]],
    })


def build_trainer(model, tokenizer, prep, cfg, run_dir, callbacks):
    """TRL's DPOTrainer on the method-applied model (preference.trl_trainer)."""
    options = {key: getattr(cfg.objective, key) for key in TRL_OPTIONS} | {"loss_type": cfg.objective.losses()}
    return pref.trl_trainer("DPOTrainer", model, tokenizer, prep, cfg, run_dir, callbacks,
                            lambda split: trl_dataset(prep.data[split], cfg), options)


def evaluate(model, tokenizer, raw, features, cfg, task) -> dict:
    """The module docstring's metrics on the held-out pairs (those whose prompt leaves room for a response within
    data.max_length, the pairs TRL would train on)."""
    max_length, batch = cfg.data.max_length, cfg.train.per_device_eval_batch_size
    rows = pref.scorable(features, cfg)
    prompts = rows["prompt_ids"][:]

    def score(m, role):
        return pref.response_logps(m, tokenizer, list(zip(prompts, rows[f"{role}_ids"][:])), max_length, batch)

    (chosen, chosen_n), (rejected, _) = score(model, "chosen"), score(model, "rejected")
    metrics = {"preference_accuracy": pref.beats(chosen, rejected), "logp_margin": float(np.mean(chosen - rejected)),
               **pref.nll_metrics(chosen, chosen_n)}
    if "unrelated_ids" in rows.column_names:
        unrelated, unrelated_n = score(model, "unrelated")  # per token: an unrelated sentence is often shorter
        metrics["chosen_over_unrelated"] = pref.beats(chosen / np.maximum(chosen_n, 1),
                                                      unrelated / np.maximum(unrelated_n, 1))
    with pref.reference_model(model, cfg) as ref:
        ref_chosen, ref_rejected = (chosen, rejected) if ref is None else (score(ref, "chosen")[0],
                                                                           score(ref, "rejected")[0])
    margins = cfg.objective.beta * ((chosen - ref_chosen) - (rejected - ref_rejected))
    metrics.update(reward_accuracy=pref.beats(margins, np.zeros_like(margins)), reward_margin=float(np.mean(margins)))
    shown, d = raw.select(range(min(cfg.eval.num_samples, len(raw)))), cfg.data
    metrics["samples"] = pref.samples(model, tokenizer, shown[d.column("prompt")][:], shown[d.column("chosen")][:],
                                      cfg)
    return pref.finite(metrics)


OBJECTIVE = pref.objective(
    "DPOConfig", name="dpo", config_cls=DPOConfig, metric_names=METRICS, roles=ROLES, check_config=check_config,
    check=check, tokenize=tokenize, evaluate=evaluate, build_trainer=build_trainer, metric_directions=DIRECTIONS,
    summary="preference pairs -> DPO and its relatives through TRL (preference accuracy, reward margin, chosen loss)",
)
