"""A run as one GGUF file for llama.cpp and Ollama: merged, converted by llama.cpp's own converter, with an Ollama
Modelfile (the run's chat template and stop tokens) beside it.

The converter is llama.cpp's `convert_hf_to_gguf.py`, the one ggml-org maintains for every architecture llama.cpp
runs. No PyPI package installs it: the `gguf` package (ggml-org's gguf-py) is its reader/writer library only, and
llama-cpp-python's wheel carries the compiled library, not the script. So it runs from a llama.cpp checkout
(`--llama-cpp DIR` or LLAMA_CPP_DIR; `git clone https://github.com/ggml-org/llama.cpp`), or from a
`convert_hf_to_gguf.py` on PATH, with this Python (torch, transformers and gguf are tunesmith's own dependencies)."""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from tunesmith.errors import TunesmithError
from tunesmith.progress import bar, shown
from tunesmith.runs import Run, commit_output, discard_output, plan_output, write_export_marker

log = logging.getLogger("tunesmith")

QUANTS = ("f16", "bf16", "q8_0", "f32")  # the converter's own output types; k-quants need llama.cpp's llama-quantize
CONVERTER = "convert_hf_to_gguf.py"
ENV = "LLAMA_CPP_DIR"
CLONE = "git clone https://github.com/ggml-org/llama.cpp"


def refusal(run: Run) -> str | None:
    """Why GGUF cannot hold this run (None: it can). GGUF holds a causal LM's weights, nothing beside them."""
    method, kind = run.config.method.name, run.objective.model_kind
    if kind != "causal_lm":
        return (f"a {run.config.objective.name} run is a {kind} with its own head (a classifier or a scorer); "
                "llama.cpp runs causal language models only; export it as a transformers model (tunesmith export --merge)")
    if method in ("prompt", "prefix"):
        return (f"a {method} tuning run adds virtual tokens in front of every input, which GGUF has no place for; "
                "train lora or dora to run the model in llama.cpp")
    if method in ("adapter", "features") or (not run.is_peft_adapter and run.manifest.get("saved") != "model"):
        return (f"a {method!r} run is saved in tunesmith's own format ({run.manifest.get('saved')}/), layers llama.cpp "
                "does not have; train lora, dora, ia3, full or freeze to run the model in llama.cpp")
    if run.is_peft_adapter and not run.method.mergeable:
        return f"a {method!r} adapter cannot be folded into the weights; train lora or dora to run it in llama.cpp"
    return None


def find_converter(llama_cpp: str | Path | None = None) -> Path:
    """llama.cpp's convert_hf_to_gguf.py: in `llama_cpp` (a checkout), else in $LLAMA_CPP_DIR, else on PATH."""
    for where, folder in (("--llama-cpp", llama_cpp), (ENV, os.environ.get(ENV))):
        if folder:
            script = Path(folder).expanduser()
            script = script if script.name == CONVERTER else script / CONVERTER
            if not script.is_file():
                raise TunesmithError(f"export --gguf: {where} {folder} holds no {CONVERTER}; give the folder of a "
                                     f"llama.cpp checkout ({CLONE})")
            return script
    on_path = shutil.which(CONVERTER) or shutil.which(CONVERTER.removesuffix(".py"))
    if on_path:
        return Path(on_path)
    raise TunesmithError(f"export --gguf: llama.cpp's converter ({CONVERTER}) was not found; no PyPI package installs "
                         f"it. Get llama.cpp ({CLONE}) and pass --llama-cpp PATH/TO/llama.cpp or set {ENV}")


def convert(model_dir: Path, outfile: Path, quant: str, converter: Path) -> None:
    """Run the converter on a transformers model folder (its own progress bar shows where a bar is shown)."""
    command = [sys.executable, str(converter), str(model_dir), "--outfile", str(outfile), "--outtype", quant]
    loud = shown()  # the script puts its checkout's gguf-py first on sys.path itself
    done = subprocess.run(command, stdout=None if loud else subprocess.PIPE,
                          stderr=None if loud else subprocess.STDOUT, text=True)
    if done.returncode != 0 or not outfile.is_file():
        said = [line for line in (done.stdout or "").splitlines() if line.strip()]
        last = said[-1] if said else "(its output is above)"
        missing = re.search(r"No module named '([\w.]+)'", last)
        fix = (f"install what the converter needs: pip install {missing.group(1).split('.')[0]} (all of it: pip install -r "
               f"{converter.parent / 'requirements' / 'requirements-convert_hf_to_gguf.txt'})" if missing else
               "a llama.cpp checkout older than the model's architecture fails so: update it (git pull)")
        raise TunesmithError(f"export --gguf: llama.cpp's converter {converter} failed (exit {done.returncode}): {last}; {fix}")


def export_gguf(run_dir, out, *, quant: str = "f16", llama_cpp: str | Path | None = None, overwrite: bool = False,
                trust_remote_code: bool = False) -> Path:
    """Write `out`/<name>-<quant>.gguf (the run merged and converted) and `out`/Modelfile for Ollama."""
    from tunesmith.runs.adapters import export
    from tunesmith.runs.modelfile import modelfile

    if quant not in QUANTS:
        raise TunesmithError(f"export --quant {quant}: expected one of {', '.join(QUANTS)} (llama.cpp's converter writes "
                             "these; for k-quants run llama.cpp's llama-quantize on the f16 file)")
    run = Run(run_dir, trust_remote_code=trust_remote_code)
    why = refusal(run)
    if why:
        raise TunesmithError(f"export --gguf {run.dir}: {why}")
    converter = find_converter(llama_cpp)
    plan = plan_output(out, overwrite=overwrite, kind="export", protected=[run.dir])
    existed = plan.target.exists()
    name = f"{Path(plan.target).resolve().name}-{quant}.gguf"
    try:
        with tempfile.TemporaryDirectory(prefix="tunesmith-gguf-") as tmp, \
                bar(total=3, desc="gguf export", unit="step", long=True) as progress:
            progress.set_postfix_str("merging")
            merged = export(run.dir, Path(tmp) / "merged", merge=run.is_peft_adapter, trust_remote_code=trust_remote_code)
            run.tokenizer.save_pretrained(merged)  # the run's chat template travels into the GGUF's metadata
            progress.update()
            progress.set_postfix_str("converting")
            plan.stage.mkdir(parents=True, exist_ok=True)
            convert(merged, plan.stage / name, quant, converter)
            progress.update()
            progress.set_postfix_str("Modelfile")
            (plan.stage / "Modelfile").write_text(modelfile(f"./{name}", run.tokenizer), encoding="utf-8")
            write_export_marker(plan.stage, run=str(run.dir), merged=True, method=run.config.method.name,
                                model=run.config.model.name, gguf=name, quant=quant)
            progress.update()
    except BaseException:
        discard_output(plan)
        if not plan.swaps:
            shutil.rmtree(plan.target, ignore_errors=True)
            if existed:
                plan.target.mkdir()
        raise
    commit_output(plan)
    log.info("Wrote %s (%s) and an Ollama Modelfile to %s", name, quant, plan.target)
    return plan.target / name
