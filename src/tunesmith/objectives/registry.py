"""name -> Objective. Add an objective by writing one module that defines OBJECTIVE."""

from __future__ import annotations

from tunesmith.objectives import causal_lm, classify, sft
from tunesmith.objectives.distill import context as context_distill
from tunesmith.objectives.distill import distill
from tunesmith.objectives.feedback import dpo, kto, reward, rl
from tunesmith.objectives.spec import Objective

OBJECTIVES: dict[str, Objective] = {o.name: o for o in (classify.OBJECTIVE, causal_lm.OBJECTIVE, sft.OBJECTIVE,
                                                   reward.OBJECTIVE, rl.OBJECTIVE, dpo.OBJECTIVE, kto.OBJECTIVE,
                                                   distill.OBJECTIVE, distill.OBJECTIVE_LM,
                                                   context_distill.OBJECTIVE)}


def register(objective: Objective) -> Objective:
    """Add an objective defined outside this package (a plugin, a test): it becomes a valid `objective.name` in
    configs, with its own config class, checks, trainer and metrics."""
    OBJECTIVES[objective.name] = objective
    from tunesmith.config import refresh_schema

    refresh_schema()
    return objective
