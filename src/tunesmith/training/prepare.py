"""The shared data preparation: `validate`, `data preview`, `train` and `eval` all go through `Prepared` (config,
tokenizer, raw splits, task facts, features tokenized on first use); `measure` is the objective's metrics and probes,
the same for the base and the tuned model."""

from __future__ import annotations

import logging

from tunesmith.config import RunConfig
from tunesmith.data.inspect import describe_example, length_stats
from tunesmith.data.sources import load_splits
from tunesmith.errors import raise_if
from tunesmith.modeling import (
    ensure_pad_token,
    load_tokenizer,
)
from tunesmith.objectives.registry import OBJECTIVES

log = logging.getLogger("tunesmith")


class Prepared:
    """Config, tokenizer, raw splits, task facts and features, checked together."""

    def __init__(self, cfg: RunConfig, tokenizer=None, task: dict | None = None, trust_remote_code: bool = False,
                 announce: bool = True):
        from tunesmith.data.chat import use_chat_template
        from tunesmith.data.templates import reads

        self.cfg = cfg
        self.objective = OBJECTIVES[cfg.objective.name]
        self.tokenizer = tokenizer or load_tokenizer(cfg.model, trust_remote_code=trust_remote_code)
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):  # a run's saved tokenizer has it
            use_chat_template(self.tokenizer, cfg.data)  # data.chat_template; the recipe saves the tokenizer with it
        ensure_pad_token(self.tokenizer)
        self.dropped: list[str] = []  # rows the objective cannot use (null text or label, label -1), per split
        self.data = load_splits(cfg.data, cfg.train.seed, reads(cfg), self.dropped)
        for note in self.dropped if announce else []:
            log.warning("%s", note)
        raise_if(self.objective.check(cfg, self.data, self.tokenizer), source="data")
        self.task = task if task is not None else self.objective.setup(cfg, self.data)
        if cfg.eval.max_examples and cfg.eval.max_examples < len(self.data["eval"]):
            self.data["eval"] = self.data["eval"].shuffle(seed=cfg.train.seed).select(range(cfg.eval.max_examples))
        self.features = Features(self)

    def stats(self) -> dict:
        """Token lengths per split; for conversations also their turns, trained tokens and what truncation cut."""
        return {split: length_stats(self.features[split], self.cfg.data.max_length) for split in self.data}

    def preview(self, n: int = 3, stats: bool = True) -> dict:
        """The first n training examples as the model sees them (tokenized on their own: a split the trainer reads
        as raw text is not tokenized whole for them), the task facts and the dropped rows; with `stats`, the length
        statistics of every split (tokenizing each), else of the splits tokenized already."""
        train = self.data["train"]
        first = self.objective.tokenize(train.select(range(min(n, len(train)))), self.tokenizer, self.cfg, self.task)
        examples = [describe_example(first, i, self.tokenizer, self.task.get("labels")) for i in range(len(first))]
        splits = self.data if stats else [s for s in self.data if s in self.features]
        return {"examples": examples, "task": self.task, "dropped": self.dropped,
                "stats": {s: length_stats(self.features[s], self.cfg.data.max_length) for s in splits}}


class Features(dict):
    """The tokenized splits, each tokenized on first use (an objective whose trainer takes raw text never pays for
    tokenizing its training split)."""

    def __init__(self, prep: Prepared):
        super().__init__()
        self.prep = prep

    def __missing__(self, split: str):
        p = self.prep
        value = self[split] = p.objective.tokenize(p.data[split], p.tokenizer, p.cfg, p.task)
        return value

def measure(model, prep: Prepared, cfg: RunConfig, probes: bool = True) -> dict:
    """The objective's metrics on the eval set and its probes' outputs: the same for the base and the tuned model
    (before and after training, and when a finished run is evaluated again)."""
    objective, tok, task = prep.objective, prep.tokenizer, prep.task
    metrics = objective.evaluate(model, tok, prep.data["eval"], prep.features["eval"], cfg, task)
    probes = objective.probe(model, tok, cfg.eval.probes, cfg, task) if probes and cfg.eval.probes else []
    return {"metrics": metrics, "probes": probes}


