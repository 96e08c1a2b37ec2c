"""`tunesmith train / eval / predict / generate / export / validate / data preview / assets`: parse, call
tunesmith.api, print with rich."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from tunesmith.cli.common import TRUST_HELP, Typer, app, call, console, fail, start
from tunesmith.cli.tables import print_probes, print_side_by_side, print_stats

data_app = Typer(help="Look at the data as the model will see it.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@app.command()
def train(
    config: Optional[Path] = typer.Argument(None, help="YAML config, e.g. configs/sentiment-lora.yaml (none with --resume)."),
    overrides: Optional[list[str]] = typer.Argument(None, help="Dotted overrides: train.learning_rate=1e-4 method.r=16"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder (default runs/<config stem>)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing run folder that tunesmith wrote, once the new run has finished."),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue a stopped run from its last complete checkpoint (train.save_steps)."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help=TRUST_HELP),
    nproc: int = typer.Option(1, "--nproc", help="Data-parallel training on N processes (per_device_train_batch_size each; gloo on CPU). Under torchrun or accelerate launch leave it out: the launcher starts the processes."),
    nnodes: int = typer.Option(1, "--nnodes", help="Nodes that train together (each runs this command with its --node-rank; the run folder is written from node 0)."),
    node_rank: int = typer.Option(0, "--node-rank", help="This node's number, 0 to --nnodes minus 1."),
    master_addr: Optional[str] = typer.Option(None, "--master-addr", help="Node 0's address, reachable from every node (with --nnodes above 1)."),
    master_port: Optional[int] = typer.Option(None, "--master-port", help="A free port on node 0, the same on every node (with --nnodes above 1)."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
):
    """Train: evaluate the base model, tune it, evaluate the tuned model, write the run folder."""
    if config is None and resume is None:
        call(fail, "train: give a config (e.g. configs/sentiment-lora.yaml), or --resume RUN_DIR to continue a stopped run")
    start(verbose, config=None if resume else config, overrides=overrides)
    import tunesmith.api as api
    from tunesmith.hardware import rank

    if rank() != 0:  # one of several processes under torchrun / accelerate launch: rank 0 logs and prints
        logging.getLogger("tunesmith").setLevel(logging.WARNING)
    run = call(api.train, config, out=out, overwrite=overwrite, overrides=list(overrides or []),
               trust_remote_code=trust_remote_code, resume=resume, nproc=nproc, nnodes=nnodes, node_rank=node_rank,
               master_addr=master_addr, master_port=master_port)
    if run is None:  # another rank, or another node: rank 0 of node 0 wrote the run folder and prints it
        return
    results, m = run.results, run.manifest
    print_probes(results.get("probes", {}))
    print_side_by_side(results, title=f"{m['method']} / {m['objective']} on {m['model']}: base vs tuned ({m['eval_examples']} eval examples)")
    console.print(f"trainable {m['trainable_params']:,} of {m['total_params']:,} params ({m['trainable_percent']}%) · "
                  f"{m['train_seconds']:.1f} s · {m['tokens_per_second']:.0f} tokens/s · peak memory "
                  + ", ".join(f"{k.removesuffix('_mb').replace('_', ' ')} {v:,.0f} MB" for k, v in m["peak_memory"].items()))
    console.print(f"run folder: [bold]{run.dir}[/] (report: {run.dir / 'report.html'})")


@app.command("eval")
def evaluate(
    run_dir: Path = typer.Argument(..., help="A run folder written by `tunesmith train`."),
    data: Optional[str] = typer.Option(None, "--data", help="Another data source with the same columns and labels."),
    split: Optional[str] = typer.Option(None, "--split", help="Split of the source to evaluate on."),
    column: Optional[list[str]] = typer.Option(None, "--column", help="ROLE=COLUMN: the column that holds one of the roles the run's objective reads, e.g. text=review or prompt=question (a wrong role is answered with the objective's roles)."),
    as_json: bool = typer.Option(False, "--json", help='Print {"base": {...}, "tuned": {...}} as JSON.'),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help=TRUST_HELP),
):
    """Evaluate the base and the tuned model of a run on the same data, side by side."""
    start(runs=[run_dir])
    import tunesmith.api as api

    columns = call(_role_columns, run_dir, column) if column else {}
    run = call(api.Run, run_dir, trust_remote_code=trust_remote_code)
    results = call(run.evaluate, data=data, split=split, columns=columns or None)
    if as_json:
        print(json.dumps({"base": results["base"], "tuned": results["tuned"]}, indent=2, default=str))
    else:
        print_side_by_side(results, title=f"{run_dir}: base vs tuned on {results['examples']} examples of {data or 'the run eval set'}",
                           directions=run.objective.metric_directions)


def _role_columns(run_dir: Path, items: list[str]) -> dict[str, str]:
    """--column ROLE=COLUMN items -> {role: column}; the roles are those the run's objective declares."""
    from tunesmith.config import load_config
    from tunesmith.data.roles import role_columns_option
    from tunesmith.objectives.registry import OBJECTIVES

    name = load_config(run_dir / "config.yaml").objective.name
    return role_columns_option(items, name, OBJECTIVES[name].roles)


ADAPTER_HELP = "Another run trained on the same base; repeat for more. All adapters load onto one base model and each input runs through each adapter."


def _adapter_set(run_dir: Path, adapter: list[Path] | None, trust_remote_code: bool):
    """None without --adapter; else the run's and the other runs' adapters on one base model."""
    if not adapter:
        return None
    from tunesmith.runs.adapters import load_adapters

    return call(load_adapters, [run_dir, *adapter], trust_remote_code=trust_remote_code)


@app.command()
def predict(
    run_dir: Path = typer.Argument(..., help="A classify run folder."),
    texts: list[str] = typer.Argument(..., help="Texts to classify."),
    adapter: Optional[list[Path]] = typer.Option(None, "--adapter", help=ADAPTER_HELP),
    as_json: bool = typer.Option(False, "--json"),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help=TRUST_HELP),
):
    """Classify texts with a run's tuned model: label and probability (per adapter with --adapter)."""
    start(runs=[run_dir, *(adapter or [])])
    import tunesmith.api as api

    adapters = _adapter_set(run_dir, adapter, trust_remote_code)
    if adapters is None:
        run = call(api.Run, run_dir, trust_remote_code=trust_remote_code)
        preds = {run_dir.name: call(run.predict, texts)}
    else:
        preds = {name: call(adapters.predict, texts, adapter=name) for name in adapters.names}
    if as_json:
        print(json.dumps(preds if adapters else preds[run_dir.name], indent=2))
        return
    table = Table()
    table.add_column("text", overflow="fold")
    for name in preds:
        table.add_column(name if adapters else "label (probability)", overflow="fold")
    for i, text in enumerate(texts):
        table.add_row(text, *(f"{p[i]['label']} ({p[i]['score']:.3f})" for p in preds.values()))
    console.print(table)


@app.command()
def generate(
    run_dir: Path = typer.Argument(..., help="A causal_lm or sft run folder."),
    prompts: list[str] = typer.Argument(..., help="Prompts (formatted with the run's template or chat format)."),
    max_new_tokens: int = typer.Option(64, "--max-new-tokens"),
    temperature: float = typer.Option(0.0, "--temperature", help="0: greedy (the default); above 0: sampled."),
    top_p: float = typer.Option(1.0, "--top-p", help="Nucleus sampling: keep the smallest set of tokens with this much probability."),
    n: int = typer.Option(1, "--n", help="Completions per prompt (with --temperature above 0 they differ)."),
    seed: Optional[int] = typer.Option(None, "--seed", help="Same seed, prompts and options: same samples."),
    stop: Optional[list[str]] = typer.Option(None, "--stop", help="A string that ends a completion (repeatable)."),
    adapter: Optional[list[Path]] = typer.Option(None, "--adapter", help=ADAPTER_HELP),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help=TRUST_HELP),
):
    """Complete prompts with a run's tuned model (per adapter with --adapter); greedy unless --temperature."""
    start(runs=[run_dir, *(adapter or [])])
    import tunesmith.api as api

    options = {"max_new_tokens": max_new_tokens, "temperature": temperature, "top_p": top_p, "n": n, "seed": seed,
               "stop": stop or ()}
    adapters = _adapter_set(run_dir, adapter, trust_remote_code)
    if adapters is None:
        run = call(api.Run, run_dir, trust_remote_code=trust_remote_code)
        outputs = {"": call(run.generate, prompts, **options)}
    else:
        outputs = {f"[{a}] ": call(adapters.generate, prompts, adapter=a, **options) for a in adapters.names}
    for i, prompt in enumerate(prompts):
        console.print(f"[bold]{prompt}[/]", highlight=False)
        for name, texts in outputs.items():
            for k in range(n):
                sample = f"({k + 1}) " if n > 1 else ""
                console.print(f"{name}{sample}{texts[i * n + k]}", highlight=False, markup=False)
        console.print()


@app.command()
def export(
    run_dir: Path = typer.Argument(..., help="A run folder written by `tunesmith train`."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write."),
    merge: bool = typer.Option(False, "--merge", help="Fold a LoRA/DoRA/IA3 adapter into the base: a standalone transformers model."),
    rank: Optional[int] = typer.Option(None, "--rank", help="dylora runs: the adapter cut to this rank (r_min..r_max), a plain PEFT LoRA adapter."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an earlier export (a folder tunesmith exported), once the new one is written."),
    gguf: bool = typer.Option(False, "--gguf", help="Merge and convert to one GGUF file for llama.cpp, with an Ollama Modelfile (needs a llama.cpp checkout: --llama-cpp)."),
    quant: str = typer.Option("f16", "--quant", help="--gguf: f16, bf16, q8_0 or f32 (the types llama.cpp's converter writes)."),
    llama_cpp: Optional[Path] = typer.Option(None, "--llama-cpp", help="--gguf: a llama.cpp checkout holding convert_hf_to_gguf.py (default: $LLAMA_CPP_DIR, else the script on PATH)."),
    trust_remote_code: bool = typer.Option(False, "--trust-remote-code", help=TRUST_HELP),
):
    """Export a run's tuned model: the adapter or model as saved, merged into a standalone model, or (--gguf) one
    GGUF file for llama.cpp and Ollama."""
    start(runs=[run_dir])
    if gguf:
        if rank is not None:
            call(fail, "export --gguf: --rank cuts a dylora adapter for a PEFT export; a GGUF holds the whole merged model: leave --rank out")
        from tunesmith.runs.gguf import export_gguf

        path = call(export_gguf, run_dir, out, quant=quant, llama_cpp=llama_cpp, overwrite=overwrite,
                    trust_remote_code=trust_remote_code)
        console.print(f"wrote [bold]{path}[/] and {path.parent / 'Modelfile'} (ollama create NAME -f {path.parent / 'Modelfile'})")
        return
    if quant != "f16" or llama_cpp is not None:
        call(fail, "export: --quant and --llama-cpp apply to --gguf; add --gguf, or leave them out")
    from tunesmith.report.card import write_card
    from tunesmith.runs.adapters import export as export_run

    path = call(export_run, run_dir, out, merge=merge, rank=rank, overwrite=overwrite, trust_remote_code=trust_remote_code,
                card=write_card)
    console.print(f"wrote [bold]{path}[/]" + (" (loads with AutoModel*.from_pretrained, no PEFT needed)" if merge else ""))


@app.command()
def validate(
    config: Path = typer.Argument(..., help="A file to check: a run config (with or without sweep: or compare:), a pipeline, a constitution config or a constitution."),
    overrides: Optional[list[str]] = typer.Argument(None, help="Dotted overrides (a run config; a pipeline: every stage)."),
):
    """Check a file as what it is, without training: a run config and its data (columns, labels, lengths) and its
    sweep or compare section; a pipeline: every stage; a constitution config: its principles, prompts and stages."""
    kind = call(file_kind, config)
    if kind == "pipeline":
        from tunesmith.cli.experiments import validate_pipeline

        return validate_pipeline(config, overrides)
    if kind in ("constitution", "principles"):
        if overrides:
            call(fail, f"validate {config}: overrides apply to run configs and pipelines; a {kind} file takes none "
                       f"(edit the file instead)")
        return _validate_constitution(config, kind)
    start(config=config, overrides=overrides)
    import tunesmith.api as api

    info = call(api.validate, config, list(overrides or []))
    cfg = info["config"]
    console.print(f"[green]ok[/] {config}: {cfg.method.name} / {cfg.objective.name} on {cfg.model.name}; "
                  f"splits {info['splits']}; columns {info['columns']}")
    if info["task"].get("labels"):
        console.print(f"labels: {info['task']['labels']}")
    for note in info["dropped"]:  # rows the objective cannot use (null text or label, label -1)
        console.print(note, style="yellow", markup=False, highlight=False, soft_wrap=True)
    if info["task"].get("chat"):
        console.print(f"conversations: {info['task']['chat']}", highlight=False, markup=False)
    print_stats(info["stats"])
    _print_conversation_stats(info["stats"])
    _more_sections(config, cfg, overrides)


CONSTITUTION_KEYS = {"constitution", "policy", "critic", "prompts", "generation"}
RUN_SECTIONS = {"model", "data", "method", "objective"}


DATA_SUFFIXES = (".jsonl", ".csv", ".tsv", ".parquet")  # never a config (a .json file may be one)


def _not_a_config(path: Path) -> str:
    """What validate was given instead of a config file, and the command that checks it."""
    if path.is_dir():
        inside = path / "config.yaml"
        what = f"a run folder; its config is {inside}: `tunesmith validate {inside}`" if inside.is_file() else "a folder"
        return f"{path} is {what}; validate checks a file: a run config, a pipeline, a constitution config or a constitution"
    return (f"{path} is a data file, not a config; validate checks a config and the data it reads: "
            f"`tunesmith validate CONFIG data.source={path}`")


def file_kind(path: Path) -> str:
    """Which file tunesmith reads this is, by its top-level keys: 'run' (a run config, also one with sweep: or
    compare:), 'pipeline' (stages: only), 'constitution' (a `tunesmith constitution` config: policy, prompts,
    stages) or 'principles' (a constitution: principles)."""
    from tunesmith.config_io import read_yaml

    if path.is_dir() or path.suffix.lower() in DATA_SUFFIXES:
        fail(_not_a_config(path))
    keys = set(read_yaml(path))
    if keys & RUN_SECTIONS:
        return "run"
    if "principles" in keys:
        return "principles"
    if keys & CONSTITUTION_KEYS:
        return "constitution"
    return "pipeline" if "stages" in keys else "run"


def _validate_constitution(path: Path, kind: str) -> None:
    from tunesmith.experiments.constitution.recipe import read_constitution

    if kind == "principles":
        names = [p.name for p in call(read_constitution, path)]
        console.print(f"[green]ok[/] {path}: a constitution of {len(names)} principles: {', '.join(names)} (a "
                      "constitution config names it in constitution:)", highlight=False)
        return
    start()
    import tunesmith.api as api

    info = call(api.validate_constitution, path)
    cfg = info["config"]
    stages = ", ".join(f"{name} ({c.method.name} / {c.objective.name})" for name, c in info["stages"].items())
    console.print(f"[green]ok[/] {path}: a constitution config (`tunesmith constitution {path}` runs it): policy "
                  f"{cfg.policy}, critic {cfg.critic_name}, {len(info['principles'])} principles; "
                  f"{info['train_prompts']} training and {info['held_out_prompts']} held-out prompts; stages {stages} "
                  "(their data is generated when it runs)", highlight=False)


def _more_sections(path: Path, cfg, overrides) -> None:
    """What `tunesmith sweep` and `tunesmith compare` read from a run config beyond the run itself."""
    if cfg.sweep:
        s = cfg.sweep
        console.print(f"sweep: {s.trials} trials over {', '.join(s.parameters)} (the values it tries are checked); "
                      f"`tunesmith sweep {path}` runs it", highlight=False)
    if cfg.compare:
        from tunesmith.config import apply_overrides, load_config, read_yaml
        from tunesmith.experiments.compare import variants

        raw = apply_overrides(read_yaml(path), list(overrides or []))  # as `tunesmith compare` reads it
        names = [f"{v['name']} ({call(load_config, v['raw']).method.name})" for v in call(variants, raw, cfg, None)]
        console.print(f"compare: variants {', '.join(names)} checked; `tunesmith compare {path}` runs them", highlight=False)


@data_app.command("preview")
def data_preview(
    config: Path = typer.Argument(..., help="YAML config."),
    overrides: Optional[list[str]] = typer.Argument(None, help="Dotted overrides, e.g. data.train_on=last_assistant."),
    n: int = typer.Option(3, "-n", help="How many training examples to show."),
):
    """Show examples as the model sees them: text, tokens, and (underlined, green) the tokens that carry loss;
    conversations also each token's role, and per split their turns, trained tokens and what truncation cut."""
    start(config=config, overrides=overrides)
    import tunesmith.api as api

    info = call(api.preview, config, n, list(overrides or []))
    if info["task"].get("chat"):
        console.print(f"conversations: {info['task']['chat']}", highlight=False, markup=False)
    for i, ex in enumerate(info["examples"]):
        console.rule(f"example {i}: {ex['length']} tokens" + (f" (cut from {ex['full_length']})" if ex["full_length"] > ex["length"] else ""))
        console.print(ex["text"], highlight=False, markup=False)
        console.print(_token_line(ex))
        if "label" in ex:
            console.print(f"label: [bold]{ex['label']}[/]")
        else:
            turns = (f" · {ex['messages']} messages, {ex['turns']} assistant turns trained" if "roles" in ex else "")
            cut = f" · truncation cut assistant turn(s) {ex['turns_cut']}" if ex.get("turns_cut") else ""
            console.print(f"{ex['loss_tokens']} of {ex['length']} tokens carry loss (green){turns}{cut}", highlight=False)
    for note in info["dropped"]:
        console.print(note, style="yellow", markup=False, highlight=False, soft_wrap=True)
    print_stats(info["stats"])
    _print_conversation_stats(info["stats"])


ROLE_STYLES = {"system": "magenta", "user": "cyan", "assistant": "yellow", "tool": "blue", "other": "dim"}


def _token_line(ex: dict):
    """Tokens in a line: loss tokens green and underlined; in a conversation each role's tokens in its colour, with
    the role named where it changes."""
    from rich.text import Text

    line, roles, role = Text(), ex.get("roles"), None
    for k, (tok, loss) in enumerate(ex["tokens"]):
        if roles and roles[k] != role:
            role = roles[k]
            line.append(f"[{role}] ", style=f"bold {ROLE_STYLES.get(role, 'dim')} reverse")
        style = "bold green underline" if loss else ROLE_STYLES.get(role, "dim") if roles else "dim"
        line.append(tok, style=style)
        line.append(" ")
    return line


def _print_conversation_stats(stats: dict) -> None:
    rows = {split: s for split, s in stats.items() if "conversations" in s}
    if not rows:
        return
    table = Table(title="conversations")
    for col in ("split", "conversations", "messages", "assistant turns", "trained tokens", "truncated", "turns cut"):
        table.add_column(col, justify="right")
    for split, s in rows.items():
        cut = ", ".join(f"turn {t}: {c}" for t, c in s["turns_cut"].items()) or "-"
        table.add_row(split, str(s["conversations"]), str(s["messages"]), str(s["turns"]), str(s["trained_tokens"]),
                      str(s["truncated_conversations"]), cut)
    console.print(table)


@app.command()
def assets():
    """List the offline models and datasets, whether each is installed, and its size."""
    from tunesmith.assets import list_assets

    table = Table(title="offline assets (any other name goes to the Hugging Face hub)")
    for col in ("name", "kind", "installed", "MB", "description"):
        table.add_column(col, overflow="fold")
    for row in list_assets():
        table.add_row(row["name"], row["kind"], "yes" if row["installed"] else f"no: {row['install']}",
                      str(row["size_mb"]), row["description"])
    console.print(table)


