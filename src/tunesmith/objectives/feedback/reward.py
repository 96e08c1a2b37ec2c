"""reward: a reward model, a sequence classifier with one output (the reward), trained on human feedback.

- pairs (prompt, chosen, rejected, margin optional): the Bradley-Terry loss -log sigmoid(r_chosen - r_rejected
  - margin) through TRL's RewardTrainer: only differences of rewards are learnt, which is all a comparison says.
- ratings (prompt, response, rating): a number -> mean squared error on the rating normalized to mean 0, std 1 over
  the training split (a regression whose scale does not depend on the rating scale); a thumbs up/down -> binary
  cross-entropy on the logit (the reward is the log-odds of a thumbs up). Both through a small transformers Trainer.
With a chat data.format the rows may be conversational (TRL's format): the prompt a list of messages, each response
a list of assistant messages; the whole conversation is rendered through the chat template and scored.

Metrics (base with its untrained head vs tuned, on held-out rows): reward_accuracy (the share of pairs whose chosen
response scores above the rejected one), reward_margin (mean reward chosen - rejected) and the pair loss; Pearson and
Spearman correlation of reward and rating (and accuracy for thumbs: reward > 0 means thumbs up) and the rating loss.
`score` is the interface other runs use (`Run(reward_run).score(rows)`): one reward per {prompt, response} row,
with the prompt and the response joined as in training (reward_data.encode).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from tunesmith.data.chat import is_chat, is_turns, text_of
from tunesmith.data.roles import Role, check_columns, no_packing
from tunesmith.errors import TunesmithError
from tunesmith.objectives.feedback import reward_data
from tunesmith.objectives.spec import Objective
from tunesmith.schema import Section


class RewardModelConfig(Section):
    """A reward model (one output) from pairs (chosen over rejected) or ratings (a number, or thumbs up/down)."""

    name: Literal["reward"]
    data_shape: Literal["auto", "pairs", "ratings"] = Field(
        "auto", description="pairs: prompt?, chosen, rejected, margin?; ratings: prompt?, response, rating. auto: from "
        "the columns (chosen and rejected present: pairs; response and rating: ratings).")
    rating_kind: Literal["auto", "numeric", "thumbs"] = Field(
        "auto", description="ratings: numeric (regression on the normalized rating) or thumbs (two values, binary "
        "cross-entropy). auto: two distinct values are thumbs, more are numbers.")
    positive: str | int | float | bool | None = Field(
        None, description="thumbs: the rating value that means thumbs up (e.g. fresh). Default: true/yes/up/good/"
        "positive/like, or the higher of two numbers.")
    rating_range: tuple[float, float] | None = Field(
        None, description="numeric ratings: the scale, e.g. [1, 5]; a rating outside it is an error naming its rows "
        "(without it, validate only flags values far outside the rest). Declaring it also means numbers when the data "
        "happens to hold two distinct values.")

    @field_validator("rating_range")
    @classmethod
    def _ordered(cls, value):
        if value is not None and not value[0] < value[1]:
            raise ValueError(f"{list(value)} is no range: give [lowest, highest] with lowest < highest, e.g. [1, 5]")
        return value


ROLES = (
    Role("prompt", turns=True, help="optional: what both responses answer (read when the data has the column, or data.columns names it)"),
    Role("chosen", turns=True, help="pairs: the preferred response"),
    Role("rejected", turns=True, help="pairs: the other response"),
    Role("margin", kind="number", help="pairs, optional: how much better chosen is (a number; read when present)"),
    Role("response", turns=True, help="ratings: the rated response"),
    Role("rating", kind="number", help="ratings: a number (stars, a score), or one of two thumbs values"),
)
METRICS = frozenset({"reward_accuracy", "reward_margin", "pearson", "spearman", "accuracy", "loss"})
DIRECTIONS = {"reward_accuracy": "max", "reward_margin": "max", "pearson": "max", "spearman": "max", "accuracy": "max",
              "eval_loss": "min", "loss": "min"}
TRL_EVAL_NAMES = {"reward_accuracy": "accuracy", "reward_margin": "margin"}  # what RewardTrainer logs during training


def check_config(cfg) -> list[str]:
    o, problems = cfg.objective, check_columns(cfg, ROLES) + no_packing(cfg)
    if cfg.data.template:
        problems.append("data.template: objective 'reward' reads a prompt and responses by column (data.columns: "
                        "{prompt: ..., chosen: ..., rejected: ...}); remove data.template")
    if cfg.method.name == "features":
        problems.append("method.name: 'features' fits a scikit-learn classifier to labels; a reward model learns from "
                        "pairs or ratings: use lora, full, head or another method")
    if o.positive is not None and (o.data_shape == "pairs" or o.rating_kind == "numeric"):
        problems.append("objective.positive: names the thumbs-up value of a ratings column; remove it for "
                        f"{'pairs' if o.data_shape == 'pairs' else 'numeric ratings'}")
    if o.rating_kind != "auto" and o.data_shape == "pairs":
        problems.append("objective.rating_kind: applies to ratings; remove it for pairs")
    if o.rating_range is not None and (o.data_shape == "pairs" or o.rating_kind == "thumbs"):
        problems.append("objective.rating_range: the scale of numeric ratings; remove it for "
                        f"{'pairs' if o.data_shape == 'pairs' else 'thumbs'}")
    return problems


def model_kwargs(task) -> dict:
    return {"num_labels": 1, "id2label": {0: "reward"}, "label2id": {"reward": 0}}


# ---------------------------------------------------------------------------------------------
# Scoring: the reward of token ids, batched


def _model_rows(encodings, prefix: str = "") -> list[dict]:
    """{input_ids, token_type_ids?} per example from features or encode() results (prefix 'chosen_' etc.)."""
    ids, types = f"{prefix}ids" if prefix else "input_ids", f"{prefix}type_ids" if prefix else "token_type_ids"
    return [{"input_ids": e[ids], **({"token_type_ids": e[types]} if e.get(types) is not None else {})} for e in encodings]


def _pad(tokenizer, rows: list[dict]) -> dict:
    """Pad a batch as transformers' collators do (without the fast-tokenizer padding notice)."""
    from transformers.data.data_collator import pad_without_fast_tokenizer_warning

    return dict(pad_without_fast_tokenizer_warning(tokenizer, rows, return_tensors="pt"))


def rewards(model, tokenizer, rows: list[dict], batch_size: int = 32) -> list[float]:
    """The model's single output for each {input_ids, token_type_ids?} row, in eval mode, batched with padding."""
    import torch

    model.eval()
    device = next(model.parameters()).device
    out: list[float] = []
    for start in range(0, len(rows), batch_size):
        batch = _pad(tokenizer, rows[start : start + batch_size])
        with torch.no_grad():
            logits = model(**{k: v.to(device) for k, v in batch.items()}).logits
        out += logits[:, 0].float().cpu().tolist()
    return out


def score(model, tokenizer, rows: list[dict], cfg, task) -> list[float]:
    """The reward of each {"prompt": str or None, "response": str} row (with a chat data.format, either may also be
    a list of chat messages). A model trained without prompts scores the
    response alone (a row's prompt is not read; put the whole text in "response" to score it)."""
    encodings = []
    for i, row in enumerate(rows):
        response = row.get("response") if isinstance(row, dict) else None
        prompt = row.get("prompt") if isinstance(row, dict) else None
        chat = is_chat(cfg.data)  # conversational rows: the prompt and the response may be lists of messages
        if not (isinstance(response, str) or chat and is_turns(response)) or not text_of(response).strip():
            raise TunesmithError(f"score: row {i + 1} has no response text ({str(row)[:80]}); each row is "
                                 '{"prompt": "..." (optional), "response": "..."}')
        if prompt is not None and not (isinstance(prompt, str) or chat and is_turns(prompt)):
            raise TunesmithError(f"score: row {i + 1}: prompt must be a string or None"
                                 f"{' (or a list of chat messages)' if chat else ''}, found {type(prompt).__name__}")
        encodings.append(reward_data.encode(tokenizer, cfg.data, prompt if task.get("prompt") else None, response))
    return rewards(model, tokenizer, _model_rows(encodings), cfg.train.per_device_eval_batch_size)


def probe(model, tokenizer, texts, cfg, task, **options) -> list[str]:  # options are generation's: unused here
    rows = [{"prompt": None, "response": t} for t in texts]
    return [f"reward {r:+.3f}" for r in score(model, tokenizer, rows, cfg, task)]


# ---------------------------------------------------------------------------------------------
# Metrics


def _softplus(x):
    import numpy as np

    return np.logaddexp(0.0, x)


def pair_metrics(chosen, rejected, margins=None) -> dict:
    import numpy as np

    diff = np.asarray(chosen, float) - np.asarray(rejected, float)
    margin = np.zeros_like(diff) if margins is None else np.asarray(margins, float)
    return {"reward_accuracy": float((diff > 0).mean()), "reward_margin": float(diff.mean()),
            "eval_loss": float(_softplus(-(diff - margin)).mean())}  # Bradley-Terry: -log sigmoid(diff - margin)


def rating_metrics(scores, targets, thumbs: bool) -> dict:
    """Pearson and Spearman correlation of reward and target (0.0 when the rewards are all equal: nothing ranks),
    the training loss (MSE on normalized ratings, or BCE with logits), and for thumbs the accuracy of reward > 0."""
    import numpy as np
    from scipy.stats import pearsonr, spearmanr

    r, y = np.asarray(scores, float), np.asarray(targets, float)
    flat = np.ptp(r) == 0 or np.ptp(y) == 0
    out = {"pearson": 0.0 if flat else float(pearsonr(r, y)[0]), "spearman": 0.0 if flat else float(spearmanr(r, y)[0])}
    if thumbs:
        out["accuracy"] = float(((r > 0) == (y > 0.5)).mean())
        out["eval_loss"] = float((_softplus(r) - y * r).mean())
    else:
        out["eval_loss"] = float(((r - y) ** 2).mean())
    return out


def evaluate(model, tokenizer, raw, features, cfg, task) -> dict:
    bs = cfg.train.per_device_eval_batch_size
    if task["shape"] == "pairs":
        rows = features.to_list()
        margins = features["margin"][:] if "margin" in features.column_names else None
        return pair_metrics(rewards(model, tokenizer, _model_rows(rows, "chosen_"), bs),
                            rewards(model, tokenizer, _model_rows(rows, "rejected_"), bs), margins)
    rows = features.to_list()
    return rating_metrics(rewards(model, tokenizer, _model_rows(rows), bs), features["labels"][:], task["rating"] == "thumbs")


def compute_metrics(task):
    """Trainer compute_metrics for ratings (evaluation during training): the rating metrics of the logits."""
    if task.get("shape") != "ratings":
        return None

    def compute(eval_pred):
        logits, labels = eval_pred
        logits = logits[0] if isinstance(logits, tuple) else logits
        return rating_metrics(logits.reshape(-1), labels.reshape(-1), task["rating"] == "thumbs")

    return compute


# ---------------------------------------------------------------------------------------------
# Training: TRL's RewardTrainer for pairs, a Trainer with the rating loss for ratings


class PairCollator:
    """A batch of pairs for TRL's RewardTrainer: the chosen rows then the rejected rows (it splits the rewards into
    these two halves), padded by the tokenizer, with token type ids where the tokenizer makes them (so that training
    reads a text pair as `tokenizer(prompt, response)` does), and the margin when the data has one."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer

    def __call__(self, examples: list[dict]) -> dict:
        import torch

        batch = _pad(self.tokenizer, _model_rows(examples, "chosen_") + _model_rows(examples, "rejected_"))
        if "margin" in examples[0]:
            batch["margin"] = torch.tensor([e["margin"] for e in examples], dtype=torch.float)
        return batch


def _rating_trainer(thumbs: bool, **kwargs):
    import torch
    from transformers import Trainer

    class RatingTrainer(Trainer):
        """The model's single output against the rating: MSE on the normalized rating, or BCE with logits (thumbs)."""

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            target = inputs.pop("labels").float()
            outputs = model(**inputs)
            reward = outputs.logits[:, 0].float()
            if thumbs:
                loss = torch.nn.functional.binary_cross_entropy_with_logits(reward, target)
            else:
                loss = torch.nn.functional.mse_loss(reward, target)
            return (loss, outputs) if return_outputs else loss

    return RatingTrainer(**kwargs)


def build_trainer(model, tokenizer, prep, cfg, run_dir, callbacks=()):
    from transformers import DataCollatorWithPadding

    from tunesmith.objectives.trainer import training_arguments

    t, task = cfg.train, prep.task
    # RewardConfig's own defaults differ from tunesmith's: gradient checkpointing on, a length filter that drops
    # pairs (ours are cut to data.max_length when tokenized), unused columns removed (ours are all model inputs).
    ours = {"max_length": None, "remove_unused_columns": False, **({} if t.gradient_checkpointing else {"gradient_checkpointing": False})}
    args = training_arguments(cfg, run_dir, prep.objective, **{k: v for k, v in ours.items() if k not in t.extra})
    if args.metric_for_best_model and task["shape"] == "pairs":
        name = args.metric_for_best_model.removeprefix("eval_")
        args.metric_for_best_model = TRL_EVAL_NAMES.get(name, name)
    train = prep.features["train"].remove_columns(["full_length"])
    evalset = prep.features["eval"].remove_columns(["full_length"]) if t.eval_strategy != "no" else None
    common = {"model": model, "args": args, "train_dataset": train, "eval_dataset": evalset,
              "processing_class": tokenizer, "callbacks": list(callbacks)}
    if task["shape"] == "pairs":
        from trl import RewardTrainer

        return RewardTrainer(data_collator=PairCollator(tokenizer), **common)
    return _rating_trainer(task["rating"] == "thumbs", data_collator=DataCollatorWithPadding(tokenizer),
                           compute_metrics=compute_metrics(task), **common)


def _reward_config() -> type:
    from trl import RewardConfig

    return RewardConfig


OBJECTIVE = Objective(
    name="reward", config_cls=RewardModelConfig, model_kind="classify",
    roles=ROLES, check_config=check_config,
    metric_names=METRICS, best_metric="eval_loss",
    check=reward_data.check, setup=reward_data.setup, tokenize=reward_data.tokenize,
    collator=lambda tokenizer: PairCollator(tokenizer), compute_metrics=compute_metrics, evaluate=evaluate, probe=probe, model_kwargs=model_kwargs,
    summary="a reward model from pairs (Bradley-Terry) or ratings (regression / thumbs): pairwise accuracy, correlation",
    build_trainer=build_trainer, args_class=_reward_config, metric_directions=DIRECTIONS, score=score,
)
