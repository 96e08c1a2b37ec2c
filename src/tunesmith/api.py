"""The Python API that the CLI and users call: train(), validate(), preview(), load_run() and Run (evaluate,
predict, generate, score), bench(). Thin: the recipe is in tunesmith.training.train, run folders in tunesmith.runs."""

from __future__ import annotations

import logging
from pathlib import Path

from tunesmith.config import RunConfig, load_config
from tunesmith.errors import TunesmithError, raise_if
from tunesmith.eval import benchmarks
from tunesmith.hardware import gpu_setting_problems, resolve_bf16
from tunesmith.methods.registry import METHODS
from tunesmith.modeling import load_causal_lm
from tunesmith.objectives.registry import OBJECTIVES
from tunesmith.objectives.trainer import check_engine
from tunesmith.runs import OutputPlan, Run, load_run, plan_output
from tunesmith.runs.start import is_run_folder
from tunesmith.training import distributed
from tunesmith.training.prepare import Prepared
from tunesmith.training.train import train_run

__all__ = ["train", "validate", "validate_constitution", "preview", "load_run", "Run", "bench", "Prepared"]
log = logging.getLogger("tunesmith")


def _overrides(overrides: dict | None, kwargs: dict) -> dict:
    """Keyword overrides: {'train.learning_rate': 1e-4} or train__learning_rate=1e-4."""
    out = dict(overrides or {})
    out.update({k.replace("__", "."): v for k, v in kwargs.items()})
    return out


def validate(config, overrides: dict | list | None = None) -> dict:
    """Check the config and the data (columns, labels, lengths) without loading model weights. It never runs a
    model's own code: a model that asks for it (model.trust_remote_code) is checked with the standard classes."""
    cfg = load_config(config, overrides)
    if cfg.model.trust_remote_code:
        log.info("validate never runs a model's own code: checking %s with the standard transformers classes", cfg.model.name)
        cfg = load_config(cfg, {"model.trust_remote_code": False})
    from tunesmith.hardware import bf16_problems
    from tunesmith.methods.targets import target_problems
    from tunesmith.report.tracking import missing_trackers

    # train.bf16 and the trackers on this machine, and target_modules on the model built without its weights
    raise_if(bf16_problems(cfg.train) + missing_trackers(cfg.train.report_to)
             + target_problems(cfg, OBJECTIVES[cfg.objective.name].model_kind),
             source=str(config) if isinstance(config, (str, Path)) else None)
    prep = Prepared(cfg, announce=False)
    return {"config": cfg, "task": prep.task, "stats": prep.stats(), "dropped": prep.dropped,
            "splits": {k: len(v) for k, v in prep.data.items()}, "columns": prep.data["train"].column_names}


def validate_constitution(path: str | Path) -> dict:
    """Check a `tunesmith constitution` config without generating or training: the config, its constitution's
    principles, its prompt sources (columns, counts) and every stage's config (their data is generated when it runs)."""
    import tempfile

    import yaml

    from tunesmith.experiments.constitution.data import load_prompts
    from tunesmith.experiments.constitution.recipe import pipeline_file, read_config, read_constitution
    from tunesmith.experiments.stages import read_stages, stage_config

    path = Path(path)
    cfg = read_config(path)
    principles = read_constitution(cfg.constitution)
    out = Path("runs") / path.stem
    with tempfile.TemporaryDirectory() as tmp:  # the pipeline `tunesmith constitution` writes into its folder
        pipeline = Path(tmp) / "pipeline.yaml"
        pipeline.write_text(yaml.safe_dump(pipeline_file(cfg, path, out), sort_keys=False, allow_unicode=True))
        try:
            stages = read_stages(pipeline)
        except TunesmithError as err:
            raise TunesmithError(str(err).replace(str(pipeline), f"{path}: stages")) from None
    configs = {}
    for stage in stages:
        try:
            configs[stage["name"]] = load_config(stage_config(stage, out / "stages"))
        except TunesmithError as err:
            raise TunesmithError(f"{path}: stage {stage['name']!r}: {err}") from None
    train, held_out = load_prompts(cfg, path)
    return {"config": cfg, "principles": [p.name for p in principles], "stages": configs,
            "train_prompts": len(train), "held_out_prompts": len(held_out)}


def preview(config, n: int = 3, overrides: dict | list | None = None) -> dict:
    """The first n training examples as the model sees them, plus length statistics."""
    return Prepared(load_config(config, overrides), announce=False).preview(n)


# ---------------------------------------------------------------------------------------------
# Training


def default_run_dir(config) -> Path:
    stem = Path(config).stem if isinstance(config, (str, Path)) else "run"
    return Path("runs") / stem


def read_inputs(config, cfg: RunConfig) -> list[Path]:
    """Files and folders a run reads (its config, local data sources, benchmark files): an output folder may
    never contain them, so that replacing it cannot delete them."""
    paths = [Path(config)] if isinstance(config, (str, Path)) else []
    sources = [cfg.data.source, *(m.source for m in cfg.data.mix), *cfg.eval.forgetting]
    return paths + [Path(s).expanduser() for s in sources if Path(s).expanduser().exists()]


def train(config=None, *, out: str | Path | None = None, overwrite: bool = False, overrides: dict | list | None = None,
          trust_remote_code: bool = False, resume: str | Path | None = None, nproc: int = 1, nnodes: int = 1,
          node_rank: int = 0, master_addr: str | None = None, master_port: int | None = None, **kwargs) -> Run | None:
    """Train a model from a config path, dict or RunConfig; returns the finished Run.

    An existing run folder is replaced only with `overwrite`, only if tunesmith wrote it, and only once the new
    run has finished (it is written beside it and swapped in). `trust_remote_code` lets a model's own Python code
    run (the config's model.trust_remote_code alone never does). `resume`: a stopped run's folder, continued from
    its last complete checkpoint with the config it started with (train.save_steps writes checkpoints). `nproc`:
    data-parallel training on that many processes, on `nnodes` nodes with `node_rank`, `master_addr`, `master_port`
    (tunesmith.training.distributed). Started by a launcher (torchrun, accelerate launch), every process calls
    train: rank 0 plans and writes the run folder and returns the Run, the others train and return None."""
    distributed.check_launch(nproc, nnodes)
    nodes = distributed.check_nodes(nnodes, node_rank, master_addr, master_port)
    if resume is not None:
        return _resume(resume, config, overrides, trust_remote_code, nproc, nodes)
    cfg = load_config(config, overrides if isinstance(overrides, list) else _overrides(overrides, kwargs))
    bf16 = resolve_bf16(cfg.train)  # true on hardware without native bf16 stops here, before anything loads
    check_processes(cfg, max(nproc * nnodes, distributed.world_size()))
    target = Path(out) if out else default_run_dir(config)

    def plan():
        return plan_output(target, overwrite=overwrite, protected=read_inputs(config, cfg))

    if distributed.launched():  # rank 0 plans, every rank trains, rank 0 writes and swaps
        return _ranked(train_run, cfg, distributed.on_rank0(plan, cfg.train.use_cpu), bf16, trust_remote_code=trust_remote_code)
    if nproc > 1 or nodes:
        writer = not nodes or nodes["node_rank"] == 0  # another node's starting process never touches the folder
        folder = distributed.launch(cfg, plan() if writer else OutputPlan(target, target), bf16, nproc, trust_remote_code,
                                    nodes=nodes)
        return Run(folder, trust_remote_code=trust_remote_code) if writer else None
    return train_run(cfg, plan(), bf16, trust_remote_code=trust_remote_code)


def _ranked(fn, *args, **kwargs):
    """fn under a launcher: a TunesmithError names the rank it happened on (the launcher stops the others)."""
    try:
        return fn(*args, **kwargs)
    except TunesmithError as err:
        if str(err).startswith("(rank "):
            raise
        raise TunesmithError(f"(rank {distributed.rank()} of {distributed.world_size()}) {err}") from None


def _resume(run_dir, config, overrides, trust_remote_code: bool, nproc: int = 1, nodes: dict | None = None) -> Run | None:
    if config is not None or overrides:
        raise TunesmithError("--resume continues a stopped run with the config it started with; give only the run "
                             "folder (no config, no overrides)")
    writer = not nodes or nodes["node_rank"] == 0
    processes = max(nproc * (nodes or {}).get("nnodes", 1), distributed.world_size())
    if distributed.launched():  # rank 0 checks and trims the stopped run; every rank reads its config
        folder, checkpoint = map(Path, distributed.on_rank0(lambda: _stopped(run_dir, processes)))
    else:
        folder, checkpoint = map(Path, _stopped(run_dir, processes, trim=writer))
    cfg = load_config(folder / "config.yaml")
    plan, bf16 = OutputPlan(Path(run_dir), folder), resolve_bf16(cfg.train)
    if distributed.launched():
        return _ranked(train_run, cfg, plan, bf16, trust_remote_code=trust_remote_code, checkpoint=checkpoint)
    if nproc > 1 or nodes:
        folder = distributed.launch(cfg, plan, bf16, nproc, trust_remote_code, checkpoint, nodes=nodes)
        return Run(folder, trust_remote_code=trust_remote_code) if writer else None
    return train_run(cfg, plan, bf16, trust_remote_code=trust_remote_code, checkpoint=checkpoint)


def _stopped(run_dir, processes: int, trim: bool = True) -> tuple[str, str]:
    """The stopped run's folder and checkpoint, checked; its metrics trimmed to the checkpoint (by one process)."""
    from tunesmith.runs.resume import stopped_run, trim_metrics

    folder, checkpoint = stopped_run(run_dir)
    cfg = load_config(folder / "config.yaml")
    if METHODS[cfg.method.name].fit:
        raise TunesmithError(f"--resume: method {cfg.method.name!r} trains without checkpoints; train it again with --overwrite")
    check_processes(cfg, processes)  # before anything in the folder changes
    if trim:
        trim_metrics(folder, int(checkpoint.name.split("-")[-1]))
        log.info("Resuming %s from %s", folder, checkpoint.name)
    return str(folder), str(checkpoint)


# ---------------------------------------------------------------------------------------------
# Benchmarks


def bench(model_or_run, tasks, limit: int | None = None, shots: int = 0, batch_size: int = 16,
          seed: int = benchmarks.SEED, trust_remote_code: bool = False) -> dict:
    """Multiple-choice benchmarks scored by log-likelihood (acc, acc_norm, n, shots per task).

    A run folder (or Run) -> {"base": {task: {...}}, "tuned": {...}}; a model (catalog name, local folder or hub
    id) -> {"model": {task: {...}}}. Tasks: names or sources, a list or comma-separated ("boolq,openbookqa").
    `limit` takes the first N questions after a seeded shuffle, the same for every model.
    """
    run = None
    if isinstance(model_or_run, Run) or is_run_folder(model_or_run):
        run = model_or_run if isinstance(model_or_run, Run) else Run(model_or_run, trust_remote_code=trust_remote_code)
        if run.objective.model_kind != "causal_lm":
            raise TunesmithError(f"benchmarks score a causal LM's log-likelihood; run {run.dir} is a {run.config.objective.name} run")
    task_list = benchmarks.load_tasks(tasks)  # bad names fail before any model loads
    options = {"limit": limit, "shots": shots, "batch_size": batch_size, "seed": seed}
    if run is not None:
        base = benchmarks.run_benchmarks(run.load_base(), run.tokenizer, task_list, what="base model", **options)
        tuned = benchmarks.run_benchmarks(run.model, run.tokenizer, task_list, what="tuned model", **options)
        return {"base": base, "tuned": tuned}
    model, tok = load_causal_lm(str(model_or_run), trust_remote_code)
    return {"model": benchmarks.run_benchmarks(model, tok, task_list, what=str(model_or_run), **options)}


def check_processes(cfg, nproc: int) -> None:
    """Refuse what would not train as one model on N processes (all nodes together), before anything starts."""
    if nproc < 1:
        raise TunesmithError(f"--nproc {nproc}: give 1 or more processes")
    problems = check_engine(cfg.train) + gpu_setting_problems(cfg.model, cfg.train)
    if problems:
        raise TunesmithError("; ".join(problems))
    if nproc == 1:
        return
    if METHODS[cfg.method.name].fit:
        raise TunesmithError(f"--nproc {nproc}: method {cfg.method.name!r} trains its classifier without a Trainer, "
                             "on one process; drop --nproc (it trains in seconds)")
    if not OBJECTIVES[cfg.objective.name].distributed:
        raise TunesmithError(f"--nproc {nproc}: objective {cfg.objective.name!r} trains with its own loop, which does not "
                             "split batches across processes; drop --nproc")
