"""`tunesmith constitution`: constitutional AI (Bai et al. 2022, "Harmlessness from AI Feedback") as a recipe.

The policy answers a set of prompts (red-team prompts and ordinary questions); a critic (the policy itself unless
`critic:` names another model or run) critiques each answer by one principle of a constitution, sampled per
prompt, and then revises the answer by that principle's revision request. That gives two data sets:

- <out>/data/sft.jsonl: prompt -> the revision (the paper's SL-CAI stage), for the `sft` objective;
- <out>/data/pairs.jsonl: prompt, chosen (the revision), rejected (the original answer): AI feedback for `dpo`.

Both are trained as the stages of an ordinary `tunesmith pipeline` (<out>/stages/), and the policy before and after
is measured on held-out prompts with rule-based checks that do not ask a model to judge itself
(constitution_measure.py). This module reads the config and the constitution file (no torch: a mistake is reported
in about a second) and runs the steps in order; constitution_data.py generates the data.

A config (configs/constitutional-ai.yaml):

    constitution: default          # the packaged one (src/tunesmith/constitutions/default.yaml) or a YAML file
    policy: smollm2-135m-instruct  # a model name or a run folder
    critic: {model: ...}           # optional: {model: NAME} or {run: RUN_DIR}; default: the policy
    prompts:
      - {source: red-team-prompts, train: 30, held_out: 12}
      - {source: chatterbot-qa, column: question, reference: answer, kind: ordinary, train: 30, held_out: 24}
    generation: {max_new_tokens: 48, temperature: 0.7, seed: 0}
    stages:                        # a pipeline; `data: sft` / `data: pairs` points a stage at the generated set
      - {name: sft, data: sft, config: {...}}
      - {name: dpo, from: sft, data: pairs, config: {...}}
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from tunesmith.config_io import beside, read_yaml
from tunesmith.errors import TunesmithError
from tunesmith.schema import Section

log = logging.getLogger("tunesmith")

PACKAGED = Path(__file__).parents[2] / "constitutions"  # src/tunesmith/constitutions
PRINCIPLE_KEYS = ("name", "critique", "revision")
CHECKS = ("refusal", "profanity", "personal_data")
DATA_SETS = {"sft": "sft.jsonl", "pairs": "pairs.jsonl"}


@dataclass(frozen=True)
class Principle:
    """One principle: a critique request, a revision request, and optionally the rule-based check that measures it."""

    name: str
    critique: str
    revision: str
    check: str | None = None


class CriticConfig(Section):
    """Who critiques and revises: another model (`model`) or a finished run (`run`). A 135M policy is a weak critic
    of itself; a larger or tuned critic gives better revisions."""

    model: str | None = Field(None, description="Catalog name, local folder or hub id of the critic.")
    run: str | None = Field(None, description="A finished run folder whose tuned model critiques.")

    @model_validator(mode="after")
    def _one(self):
        if (self.model is None) == (self.run is None):
            raise ValueError("give exactly one of critic.model or critic.run (or leave critic out: the policy critiques itself)")
        return self

    @property
    def name(self) -> str:
        return self.model or self.run


class PromptSource(Section):
    """A set of prompts: a data source, the column with the prompt, and how many go to generation and to measuring."""

    source: str = Field(description="Catalog name (red-team-prompts, prompt-injection-attack, chatterbot-qa) or a file.")
    column: str = Field("prompt", description="The column that holds the prompt.")
    reference: str | None = Field(None, description="A column with a reference answer (ordinary questions): "
                                  "helpfulness is measured against it.")
    kind: Literal["red_team", "ordinary"] = Field("red_team", description="red_team prompts measure harmlessness, "
                                                  "ordinary questions measure what it costs in helpfulness.")
    train: int = Field(ge=0, description="Prompts that are answered, critiqued and revised (the training data).")
    held_out: int = Field(0, ge=0, description="Other prompts, never trained on, for measuring base vs tuned.")


class GenerationConfig(Section):
    max_new_tokens: int = Field(48, ge=1, description="Tokens per answer, critique and revision.")
    temperature: float = Field(0.7, ge=0, description="Sampling temperature for generating the data (0: greedy). "
                               "Measuring is always greedy.")
    top_p: float = Field(1.0, gt=0, le=1)
    seed: int = Field(0, description="Seeds the held-out split, the principle drawn per prompt and the sampling.")
    batch_size: int = Field(8, ge=1)


class ConstitutionConfig(Section):
    constitution: str = Field("default", description="'default' (the packaged constitution) or a YAML file.")
    policy: str = Field(description="The model that answers and is trained: a model name or a run folder.")
    critic: CriticConfig | None = None
    prompts: list[PromptSource]
    generation: GenerationConfig = Field(default_factory=GenerationConfig)
    stages: list[dict] = Field(description="The pipeline that trains on the generated data (see `tunesmith pipeline`).")

    @property
    def critic_name(self) -> str:
        return self.critic.name if self.critic else self.policy


def read_config(path: str | Path) -> ConstitutionConfig:
    """The checked config; relative file paths in it are made relative to the config's folder."""
    path = Path(path)
    raw = read_yaml(path)
    try:
        cfg = ConstitutionConfig.model_validate(raw)
    except ValidationError as err:
        from tunesmith.config import describe_errors

        raise TunesmithError(describe_errors(err, raw, ConstitutionConfig), source=str(path)) from None
    if not any(p.train for p in cfg.prompts):
        raise TunesmithError(f"{path}: prompts: no source gives any training prompts (every train is 0, or the list is "
                             "empty); set train: N on at least one source")
    if cfg.constitution != "default":
        cfg.constitution = str(beside(cfg.constitution, path))
    return cfg


def read_constitution(value: str | Path) -> list[Principle]:
    """The principles of a constitution file ('default': the packaged one); a missing or unknown key, an empty
    request or an unknown check is an error that names the file, the principle and the key."""
    path = PACKAGED / "default.yaml" if str(value) == "default" else Path(value)
    if not path.is_file():
        raise TunesmithError(f"constitution: {str(path)!r} is not a file; give a YAML file of principles (see "
                             "docs/constitution.md) or 'default'")
    raw = read_yaml(path)
    entries = raw.get("principles")
    if set(raw) != {"principles"} or not isinstance(entries, list) or not entries:
        raise TunesmithError(f"{path}: a constitution has one key, principles: a list, each with name, critique and "
                             "revision (see src/tunesmith/constitutions/default.yaml)")
    principles: list[Principle] = []
    for i, entry in enumerate(entries):
        where = f"{path}: principles[{i}]"
        if not isinstance(entry, dict):
            raise TunesmithError(f"{where}: expected a mapping with name, critique and revision, found {entry!r}")
        where += f" ({entry['name']})" if isinstance(entry.get("name"), str) else ""
        for key in PRINCIPLE_KEYS:
            if not isinstance(entry.get(key), str) or not entry[key].strip():
                found = "missing" if key not in entry else f"found {entry[key]!r}"
                raise TunesmithError(f"{where}: {key!r} is {found}; every principle needs {', '.join(PRINCIPLE_KEYS)} "
                                     "as non-empty text")
        unknown = sorted(set(entry) - set(PRINCIPLE_KEYS) - {"check"})
        if unknown:
            raise TunesmithError(f"{where}: unknown key(s) {unknown}; a principle has {[*PRINCIPLE_KEYS, 'check']}")
        if entry.get("check") is not None and entry["check"] not in CHECKS:
            raise TunesmithError(f"{where}: 'check' is {entry['check']!r}; expected one of {list(CHECKS)} or none")
        if any(p.name == entry["name"] for p in principles):
            raise TunesmithError(f"{where}: the name {entry['name']!r} is used twice; name each principle once")
        principles.append(Principle(entry["name"].strip(), entry["critique"].strip(), entry["revision"].strip(),
                                    entry.get("check")))
    return principles


def pipeline_file(cfg: ConstitutionConfig, config_path: Path, out: Path) -> dict:
    """The `stages:` as a self-contained pipeline: stage config files read in (relative to the constitution config),
    `data: sft|pairs` turned into data.source overrides, and stages without `from:` starting from the policy."""
    from tunesmith.experiments.stages import STAGE_KEYS

    stages = []
    for i, entry in enumerate(cfg.stages):
        entry = copy.deepcopy(entry)
        where = f"{config_path}: stages[{i}]"
        data = entry.pop("data", None)
        if data is not None and data not in DATA_SETS:
            raise TunesmithError(f"{where}.data: {data!r}; expected one of {list(DATA_SETS)} (the generated set this "
                                 "stage trains on) or leave it out")
        unknown = sorted(set(entry) - STAGE_KEYS)
        if unknown:
            raise TunesmithError(f"{where}: unknown key(s) {unknown}; a stage has {sorted(STAGE_KEYS | {'data'})}")
        if isinstance(entry.get("config"), str):
            entry["config"] = read_yaml(beside(entry["config"], config_path))
        overrides = dict(entry.get("overrides") or {})
        if data is not None:
            overrides["data.source"] = str((out / "data" / DATA_SETS[data]).resolve())
        if entry.get("from") is None:
            policy = Path(cfg.policy).expanduser()
            overrides.setdefault("model.name", str(policy.resolve()) if policy.exists() else cfg.policy)
        entry["overrides"] = overrides
        stages.append(entry)
    return {"stages": stages}


def check_out_folder(out: Path) -> None:
    """The output folder is new, empty, or one this command wrote (it holds constitution.yaml)."""
    if out.exists() and not out.is_dir():
        raise TunesmithError(f"--out {out}: is an existing file; choose a folder, e.g. --out runs/constitutional-ai")
    if out.is_dir() and any(out.iterdir()) and not (out / "constitution.yaml").is_file():
        raise TunesmithError(f"--out {out}: is a folder that `tunesmith constitution` did not write; choose a new or "
                             "empty folder")


def run_constitution(config_path: str | Path, *, out: str | Path | None = None, overwrite: bool = False,
                     trust_remote_code: bool = False, progress=None) -> dict:
    """Generate (or reuse) the data, train the stages, measure base vs tuned; returns what constitution.json holds."""
    from tunesmith.config import load_config
    from tunesmith.experiments.stages import read_stages, stage_config

    config_path = Path(config_path)
    cfg = read_config(config_path)
    principles = read_constitution(cfg.constitution)
    out = Path(out) if out else Path("runs") / config_path.stem
    check_out_folder(out)
    pipeline = pipeline_file(cfg, config_path, out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "constitution.yaml").write_text(yaml.safe_dump(cfg.model_dump(exclude_none=True), sort_keys=False))
    (out / "pipeline.yaml").write_text(yaml.safe_dump(pipeline, sort_keys=False, allow_unicode=True))
    stages = read_stages(out / "pipeline.yaml")
    for stage in stages:  # every stage is valid before minutes of generation
        try:
            load_config(stage_config(stage, out / "stages"))
        except TunesmithError as err:
            raise TunesmithError(f"{config_path}: stage {stage['name']!r}: {err}") from None

    from tunesmith.experiments.constitution.data import generate_data, load_prompts
    from tunesmith.experiments.constitution.measure import measure, write_report
    from tunesmith.experiments.stages import run_pipeline

    train, held_out = load_prompts(cfg, config_path)
    step = (lambda what: progress(what)) if progress else (lambda what: None)
    step("generating answers, critiques and revisions")
    made = generate_data(cfg, principles, train, out / "data", overwrite=overwrite, trust_remote_code=trust_remote_code)
    step("training the stages")
    summary = run_pipeline(out / "pipeline.yaml", out=out / "stages", rerun=made["generated"] > 0,
                           trust_remote_code=trust_remote_code)
    tuned = out / "stages" / stages[-1]["name"]
    step("measuring base and tuned on held-out prompts")
    measures = measure(cfg, held_out, tuned, trust_remote_code=trust_remote_code)
    result = {"config": str(config_path), "policy": cfg.policy, "critic": cfg.critic_name,
              "constitution": cfg.constitution, "principles": [p.name for p in principles], "data": made,
              "stages": [{k: s.get(k) for k in ("stage", "run", "skipped", "train_seconds")} for s in summary["stages"]],
              "tuned": str(tuned), **measures}
    write_report(out, result, principles)
    return result
