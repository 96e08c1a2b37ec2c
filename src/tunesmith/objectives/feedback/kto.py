"""kto: learning from single-sided feedback (prompt, completion, desirable or not) through TRL's KTOTrainer.

KTO (Ethayarajh et al., 2024) needs no pairs: each completion is marked desirable or undesirable, and the loss pushes
its implicit reward, beta * (log p - log p_ref) against the base as reference, above (or below) an estimate of the
policy's KL divergence from the reference, which TRL takes from mismatched prompt/completion pairs within a batch
(so a batch needs at least 2 examples, and the batches keep the data's seeded order).

Rows may be texts or, with a chat data.format, conversational (TRL's format): `prompt` a list of messages,
`completion` a list of assistant messages.

Labels (data.columns.label): true/false, 1/0, or the words yes/no, good/bad, desirable/undesirable (any case).

Metrics on the held-out rows, base and tuned alike. Rows have no partner, so they are compared across prompts,
per token (log p / tokens) where raw log-probabilities are compared:
- desirable_logp, undesirable_logp: mean log-probability per token of the desirable and the undesirable completions;
- logp_gap: their difference;
- ranking_accuracy: share of (desirable, undesirable) row pairs in which the desirable completion has the higher
  log-probability per token (ties half: the ROC AUC of log-probability as a desirability score);
- reward_accuracy, reward_margin: the same ranking, and the difference of the means, of KTO's implicit reward
  beta * (log p - log p_ref) (summed over the completion). The base is its own reference: 0.5 and 0;
- eval_loss, perplexity: mean negative log-likelihood per token of the desirable completions.
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np
from pydantic import Field

from tunesmith.data.chat import text_of
from tunesmith.data.roles import Role
from tunesmith.objectives.feedback import checks
from tunesmith.objectives.feedback import preference as pref
from tunesmith.schema import Section

TRUE_WORDS = ("true", "1", "yes", "good", "desirable")
FALSE_WORDS = ("false", "0", "no", "bad", "undesirable")
log = logging.getLogger("tunesmith")


class KTOConfig(Section):
    """Kahneman-Tversky optimization on single-sided labels through TRL's KTOTrainer."""

    name: Literal["kto"]
    beta: float = Field(0.1, gt=0, description="How strongly the policy is held to the reference (higher: closer).")
    loss_type: Literal["kto", "apo_zero_unpaired"] = Field(
        "kto", description="kto: the KTO loss; apo_zero_unpaired: APO-zero's unpaired variant (no KL estimate).")
    desirable_weight: float = Field(1.0, gt=0, description="Weight of the desirable examples' losses (raise it when "
                                    "they are fewer than the undesirable ones: TRL logs a suggested range).")
    undesirable_weight: float = Field(1.0, gt=0, description="Weight of the undesirable examples' losses.")


ROLES = (
    Role("prompt", turns=True, help="what the completion answers or continues (with a chat data.format, the user's "
         "message, or a list of messages)"),
    Role("completion", turns=True, help="one response, rated desirable or not"),
    Role("label", kind="label", help="whether the completion is desirable: true/false, 1/0, yes/no, good/bad, "
         "desirable/undesirable"),
)
METRICS = frozenset({"loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen", "logps/rejected",
                     "kl"})  # what TRL logs in its evaluation (train.metric_for_best_model)
DIRECTIONS = {"desirable_logp": "max", "undesirable_logp": "min", "logp_gap": "max", "ranking_accuracy": "max",
              "reward_accuracy": "max", "reward_margin": "max", "eval_loss": "min", "perplexity": "min", "loss": "min",
              "rewards/chosen": "max", "rewards/rejected": "min", "rewards/margins": "max", "logps/chosen": "max",
              "logps/rejected": "min", "kl": "min"}


def desirable(value) -> bool | None:
    """A label as desirable (True) or not (False); None for a value that is neither."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    word = str(value).strip().lower() if isinstance(value, str) else None
    return True if word in TRUE_WORDS else False if word in FALSE_WORDS else None


TRL_OPTIONS = ("beta", "loss_type", "desirable_weight", "undesirable_weight")  # objective fields for TRL's KTOConfig


def check_config(cfg) -> list[str]:
    problems = checks.config_problems(cfg, ROLES)
    kl = cfg.objective.loss_type == "kto"
    if kl and cfg.train.per_device_train_batch_size < 2:
        problems.append(f"train.per_device_train_batch_size: KTO estimates its KL term from the other completions of "
                        f"a batch, so a batch needs at least 2 examples (found {cfg.train.per_device_train_batch_size}); "
                        "set it to 2 or more (lower gradient_accumulation_steps to keep the effective batch)")
    if kl and cfg.train.extra.get("train_sampling_strategy", "sequential") != "sequential":
        problems.append("train.extra.train_sampling_strategy: KTO's KL estimate pairs each example with its neighbour "
                        "in a batch, which needs 'sequential' (tunesmith shuffles the training rows once, seeded); "
                        "remove the key")
    return problems + checks.train_extra_overlap(cfg, TRL_OPTIONS)


def check(cfg, dd, tokenizer) -> list[str]:
    problems = checks.data_problems(cfg, dd, tokenizer, ["prompt", "completion", "label"], ["completion"],
                                  lambda ds, split: _unknown_labels(cfg, ds, split))
    return problems or one_sided(cfg, dd)


def _unknown_labels(cfg, ds, split: str) -> list[str]:
    from tunesmith.data.clean import short_value

    d = cfg.data
    labels, prompts = ds[d.column("label")][:], ds[d.column("prompt")][:]
    bad = [i for i, v in enumerate(labels) if desirable(v) is None]
    if not bad:
        return []
    rows = f"{len(bad)} row{'s hold' if len(bad) > 1 else ' holds'}"
    return [f"{d.source} ({split} split): column {d.column('label')!r} (label) says whether a completion is desirable, "
            f"and {rows} something else, the first {short_value(labels[bad[0]])} (prompt "
            f"{short_value(text_of(prompts[bad[0]]))}); use true/false, 1/0, yes/no, good/bad or desirable/undesirable"]


# Which kind of row each of TRL's evaluation metrics needs in the eval split (train.metric_for_best_model)
NEEDS = {"rewards/chosen": "desirable", "logps/chosen": "desirable", "rewards/rejected": "undesirable",
         "logps/rejected": "undesirable", "rewards/margins": "both"}


def one_sided(cfg, dd) -> list[str]:
    """Labels of one kind only. In the training split KTO still trains, one-sidedly (a warning); in the eval split
    the metrics that compare the kinds cannot be measured (a warning), and a train.metric_for_best_model that needs
    the missing kind would stop the first evaluation (an error)."""
    column = cfg.data.column("label")
    counts = {}
    for split, ds in dd.items():
        labels = [desirable(v) for v in ds[column][:]]
        counts[split] = (sum(labels), len(labels) - sum(labels))
    good, bad = counts["train"]
    if not good or not bad:
        log.warning("%s (train split): every label in column %r is %s (%d desirable, %d undesirable): KTO's loss is "
                    "then one-sided: it only %s the log-probability of these completions relative to the reference, "
                    "with no %s example to contrast them with; add %s rows, or %s",
                    cfg.data.source, column, "desirable" if good else "undesirable", good, bad,
                    "raises" if good else "lowers", *["undesirable" if good else "desirable"] * 2,
                    f"train on them with objective sft (data.columns: {{response: {cfg.data.column('completion')}}})" if good
                    else "check the labels")
    good, bad = counts["eval"]
    missing = "desirable" if not good else "undesirable" if not bad else None
    if missing is None or not good + bad:
        return []
    metric = (cfg.train.metric_for_best_model or "").removeprefix("eval_")
    if cfg.train.eval_strategy != "no" and NEEDS.get(metric) in (missing, "both"):
        return [f"train.metric_for_best_model: {metric!r} needs {missing} rows in the eval split, and {cfg.data.source}'s "
                f"eval split has {good} desirable and {bad} undesirable; TRL would stop at the first evaluation. Use "
                f"eval_loss, or hold out both kinds (a larger data.eval_size, or a data.eval_split with both)"]
    log.warning("%s (eval split): no %s row among the %d held out (%d desirable, %d undesirable): ranking_accuracy, "
                "reward_accuracy, reward_margin and logp_gap cannot be measured (eval.json leaves them out)%s; hold out "
                "both kinds: a larger data.eval_size, or a data.eval_split with both", cfg.data.source, missing,
                good + bad, good, bad, ", nor eval_loss and perplexity (they read the desirable completions)"
                if missing == "desirable" else "")
    return []


def tokenize(ds, tokenizer, cfg, task):
    """prompt_ids, completion_ids (TRL's tokenization, see preference.split_ids), desirable, and the columns validate
    and `data preview` read."""
    d = cfg.data

    def encode(row):
        prompt, (completion,) = pref.split_ids(tokenizer, d, row[d.column("prompt")], [row[d.column("completion")]])
        return {"prompt_ids": prompt, "completion_ids": completion, "desirable": desirable(row[d.column("label")]),
                **pref.stats_features(prompt, completion, len(prompt) + len(completion))}

    return ds.map(encode, remove_columns=ds.column_names, desc=f"tokenize {len(ds):,} rows")


def trl_dataset(ds, cfg, seed: int | None = None):
    """The split as TRL's KTOTrainer reads it: prompt, completion (text, or chat messages), label (a bool). The
    training rows are shuffled once (seeded): TRL reads them in order, pairing neighbours for its KL estimate."""
    from datasets import Dataset

    d = cfg.data
    out = Dataset.from_dict({
        "prompt": [pref.prompt_value(d, p) for p in ds[d.column("prompt")][:]],
        "completion": [pref.response_value(d, c) for c in ds[d.column("completion")][:]],
        "label": [desirable(v) for v in ds[d.column("label")][:]],
    })
    return out if seed is None else out.shuffle(seed=seed)


def build_trainer(model, tokenizer, prep, cfg, run_dir, callbacks):
    """TRL's KTOTrainer on the method-applied model (preference.trl_trainer); the training rows shuffled once."""
    options = {key: getattr(cfg.objective, key) for key in TRL_OPTIONS}
    return pref.trl_trainer("KTOTrainer", model, tokenizer, prep, cfg, run_dir, callbacks,
                            lambda split: trl_dataset(prep.data[split], cfg, cfg.train.seed if split == "train" else None),
                            options)


def evaluate(model, tokenizer, raw, features, cfg, task) -> dict:
    """The module docstring's metrics on the held-out rows whose prompt leaves room for a completion."""
    max_length, batch = cfg.data.max_length, cfg.train.per_device_eval_batch_size
    rows = pref.scorable(features, cfg)
    pieces = list(zip(rows["prompt_ids"][:], rows["completion_ids"][:]))
    good = np.array(rows["desirable"][:], dtype=bool)
    logps, counts = pref.response_logps(model, tokenizer, pieces, max_length, batch)
    per_token = logps / np.maximum(counts, 1)
    metrics = {"desirable_logp": _mean(per_token[good]), "undesirable_logp": _mean(per_token[~good]),
               "ranking_accuracy": pref.ranking(per_token[good], per_token[~good]),
               **pref.nll_metrics(logps[good], counts[good])}
    metrics["logp_gap"] = metrics["desirable_logp"] - metrics["undesirable_logp"]
    with pref.reference_model(model, cfg) as ref:
        ref_logps = logps if ref is None else pref.response_logps(ref, tokenizer, pieces, max_length, batch)[0]
    rewards = cfg.objective.beta * (logps - ref_logps)
    metrics["reward_accuracy"] = pref.ranking(rewards[good], rewards[~good])
    metrics["reward_margin"] = _mean(rewards[good]) - _mean(rewards[~good])
    d = cfg.data
    wanted = [i for i, v in enumerate(raw[d.column("label")][:]) if desirable(v)][: cfg.eval.num_samples]
    shown = raw.select(wanted)
    metrics["samples"] = pref.samples(model, tokenizer, shown[d.column("prompt")][:],
                                      shown[d.column("completion")][:], cfg)
    return pref.finite(metrics)


def _mean(values) -> float:
    """NaN (left out of eval.json) when the held-out rows have none of that kind."""
    return float(np.mean(values)) if len(values) else float("nan")


OBJECTIVE = pref.objective(
    "KTOConfig", name="kto", config_cls=KTOConfig, metric_names=METRICS, roles=ROLES, check_config=check_config,
    check=check, tokenize=tokenize, evaluate=evaluate, build_trainer=build_trainer, metric_directions=DIRECTIONS,
    summary="single-sided labels -> KTO through TRL (desirable vs undesirable log-probability, implicit reward)",
)
