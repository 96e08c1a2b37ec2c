"""The `sweep:` section of a run config (what `tunesmith sweep` searches, and how it judges a trial) and its
checks, which config cross-checks call so that `tunesmith validate` reports them. Imported whenever a config is
read: no torch, no optuna. The sweep itself is tunesmith.experiments.sweep."""

from __future__ import annotations

from typing import Any, Literal

import yaml
from pydantic import Field

from tunesmith.errors import TunesmithError
from tunesmith.schema import Section

GENERATION_METRICS = {"rouge1", "rouge2", "rougeL", "bleu", "chrf", "exact_match"}


class SweepParameter(Section):
    """One swept key: a range (low, high) or a list of choices."""

    low: int | float | None = Field(None, description="Lowest value of a range.")
    high: int | float | None = Field(None, description="Highest value of a range.")
    log: bool = Field(False, description="Sample the range on a log scale (learning rates).")
    type: Literal["int", "float"] | None = Field(None, description="Default: int when both bounds are integers.")
    choices: list[Any] | None = Field(None, description="Values to choose from; a value may be a list (target_modules).")

    @property
    def kind(self) -> str:
        if self.choices is not None:
            return "choices"
        if self.type:
            return self.type
        return "int" if isinstance(self.low, int) and isinstance(self.high, int) else "float"

    def labels(self) -> dict:
        """{label Optuna stores: value}. Optuna's choices are scalars, so a list is stored as its YAML text."""
        return {label(v): v for v in self.choices or []}


class SweepConfig(Section):
    """What `tunesmith sweep` searches, and how it judges a trial."""

    parameters: dict[str, SweepParameter] = Field(
        description="Dotted config keys, each {low, high, log, type} or {choices: [...]}, e.g. "
        "train.learning_rate: {low: 1.0e-5, high: 1.0e-3, log: true}.")
    trials: int = Field(10, gt=0, description="Trials to finish (completed, pruned or failed); --trials overrides.")
    metric: str | None = Field(None, description="A tuned metric of eval.json. Default: the objective's best-model "
                               "metric (train.metric_for_best_model, else e.g. accuracy or eval_loss).")
    direction: Literal["max", "min", "maximize", "minimize"] | None = Field(
        None, description="Which way the metric is better. Default: the metric's own direction.")
    pruning: bool = Field(False, description="Stop trials whose eval metric during training (train.eval_strategy "
                          "epoch or steps) is worse than the median of earlier trials at the same step.")
    sampler: Literal["tpe", "random"] = "tpe"
    seed: int | None = Field(None, description="The sampler's seed. Default: train.seed.")


def label(value: Any) -> Any:
    """What Optuna stores for a choice: the value itself, or a list's YAML text ('[query, value]')."""
    return value if value is None or isinstance(value, (str, int, float, bool)) else \
        yaml.safe_dump(value, default_flow_style=True, width=10**6).strip()


# ---------------------------------------------------------------------------------------------
# Checks (config cross-checks call sweep_problems, so `tunesmith validate` reports them)


def _shape_problems(key: str, p: SweepParameter) -> list[str]:
    where = f"sweep.parameters.{key}"
    ranged = p.low is not None or p.high is not None
    if p.choices is not None and ranged:
        return [f"{where}: give either choices or low/high, not both"]
    if p.choices is not None:
        if not p.choices:
            return [f"{where}: choices is empty; list at least two values, e.g. choices: [8, 16]"]
        problems = [f"{where}: log and type apply to a range (low, high), not to choices; remove them"] \
            if p.log or p.type else []
        if len(p.labels()) < len(p.choices):
            problems.append(f"{where}: choices repeat a value; list each value once")
        return problems
    if p.low is None or p.high is None:
        return [f"{where}: needs a range (low and high, e.g. {{low: 1.0e-5, high: 1.0e-3}}) or choices (a list)"]
    if p.low >= p.high:
        return [f"{where}: low ({p.low}) is not below high ({p.high}); "
                + ("swap them" if p.low > p.high else "widen the range, or set the key in the config instead")]
    if p.log and p.low <= 0:
        return [f"{where}: log: true needs low above 0 (found {p.low}); raise low or drop log"]
    if p.type == "int" and (p.low != int(p.low) or p.high != int(p.high)):
        return [f"{where}: type int needs whole-number bounds (found {p.low}, {p.high})"]
    return []


def _values(p: SweepParameter) -> list:
    """The values a parameter's validity is checked with: each choice, or both bounds."""
    if p.kind == "choices":
        return list(p.choices)
    cast = int if p.kind == "int" else float
    return [cast(p.low), cast(p.high)]


def sweep_problems(cfg, load_config) -> list[str]:
    """Problems with cfg.sweep, each naming its key: a parameter's shape, a key or value that makes the config
    invalid (each choice and both bounds are tried), the metric and its direction, pruning without evaluation."""
    s = cfg.sweep
    problems = [] if s.parameters else ["sweep.parameters: empty; name a key to sweep, e.g. "
                                        "train.learning_rate: {low: 1.0e-5, high: 1.0e-3, log: true}"]
    base = cfg.model_dump(mode="json", exclude={"sweep", "compare"})
    try:  # problems the config has anyway are reported once, by the other checks
        load_config(base)
        already = set()
    except TunesmithError as err:
        already = set(err.problems)
    for key, p in s.parameters.items():
        shape = _shape_problems(key, p)
        if key.split(".")[0] in ("sweep", "compare"):
            shape.append(f"sweep.parameters.{key}: the {key.split('.')[0]} section cannot be swept; choose a key of "
                         "model, data, method, objective, train or eval")
        problems += shape
        for value in [] if shape else _values(p):
            try:
                load_config(base, {key: value})
            except TunesmithError as err:
                new = [problem for problem in err.problems if problem not in already]
                problems += [f"sweep.parameters.{key}: {problem} (checked with {key}={value!r})" for problem in new]
                if new:
                    break
    if s.pruning and cfg.train.eval_strategy == "no":
        problems.append("sweep.pruning: needs evaluation during training to compare trials; set train.eval_strategy "
                        "to epoch (or steps with train.eval_steps), or pruning: false")
    try:
        resolve_metric(cfg)
    except TunesmithError as err:
        problems += err.problems
    return problems


def resolve_metric(cfg) -> tuple[str, str]:
    """(metric, 'maximize' | 'minimize'): sweep.metric, else the objective's best-model metric; the direction
    given, else the metric's own (the one eval.json records)."""
    from tunesmith.eval.metrics import direction as metric_direction
    from tunesmith.registries import objectives

    s, objective = cfg.sweep, objectives()[cfg.objective.name]
    known = {m.removeprefix("eval_") for m in (*objective.metric_names, *objective.metric_directions)}
    known |= GENERATION_METRICS if cfg.eval.generation_metrics else set()
    metric = s.metric or cfg.train.metric_for_best_model or objective.best_metric
    if metric.removeprefix("eval_") not in known:
        import difflib

        close = difflib.get_close_matches(metric, sorted(known), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise TunesmithError(f"sweep.metric: {metric!r} is not a metric objective {cfg.objective.name!r} reports{hint}; "
                             f"expected one of {sorted(known)}")
    way = {"max": "maximize", "min": "minimize"}.get(s.direction, s.direction)
    if way is None:
        way = {"max": "maximize", "min": "minimize"}.get(metric_direction(metric, objective.metric_directions))
    if way is None:
        raise TunesmithError(f"sweep.direction: {metric!r} has no better side (it describes, it does not grade); "
                             "set sweep.direction: max or min, or choose another sweep.metric")
    return metric, way
