"""name -> Objective. Add an objective by writing one module that defines OBJECTIVE."""

from __future__ import annotations

from tunesmith.objectives import causal_lm, classify, sft
from tunesmith.objectives.spec import Objective

OBJECTIVES: dict[str, Objective] = {o.name: o for o in (classify.OBJECTIVE, causal_lm.OBJECTIVE, sft.OBJECTIVE)}
