"""dylora: one LoRA adapter trained for every rank in [r_min, r_max] (Valipour et al., 2023, DyLoRA).

Each training forward pass samples a rank b uniformly from [r_min, r_max] and uses only the first b components of
every targeted matrix's update: the first b rows of A and columns of B, scaled by lora_alpha / b (the paper's
nested truncation). The first components learn to carry the most, so after training the adapter cut to any rank k
in range works without retraining: `tunesmith export RUN --rank K` writes it as a plain PEFT LoRA adapter
(r = k, the same lora_alpha, so PEFT's scale lora_alpha / r is the one training used at rank k).

Ours, not a library's: PEFT has no DyLoRA, and LyCORIS's (for diffusion models) patches module forwards, samples
a rank at inference too and saves in its own format. The layout is PEFT's LoRA at r = r_max; two forward hooks
(no change to PEFT's modules) do the truncation: one on the model samples b when it is called in training mode,
one on each `lora_A` zeroes the components past the rank in use and rescales by r_max / b. In eval mode the rank
is `eval_rank` (default r_max, where the hooks change nothing and the saved adapter is an ordinary PEFT LoRA).
The adapter folder holds `dylora.json` beside PEFT's files: the rank range, the evaluation rank, and how to cut.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from tunesmith.errors import TunesmithError
from tunesmith.methods.peft_common import LoraFamilySection, lora_family_options, wrap
from tunesmith.methods.spec import Method

RANKS_FILE = "dylora.json"  # in the adapter folder (and in the scratch folder until saving)
PEFT_FILES = ("adapter_config.json", "adapter_model.safetensors")


class DyLoraConfig(LoraFamilySection):
    """DyLoRA: LoRA at rank r_max trained so that its first k components work alone, for any k in [r_min, r_max]."""

    name: Literal["dylora"]
    r_min: int = Field(1, gt=0, description="Smallest rank sampled in training (and exportable).")
    r_max: int = Field(8, gt=0, description="Largest rank: the adapter's size.")
    eval_rank: int | None = Field(
        None, gt=0, description="Rank the run is evaluated and reloaded at; None: r_max. Any rank in range can be "
        "exported later with `tunesmith export RUN --rank K`.",
    )
    lora_alpha: float = Field(16, gt=0, description="Scale: the update at rank b is multiplied by lora_alpha / b.")

    @model_validator(mode="after")
    def _ranks(self):
        if self.r_min > self.r_max:
            raise ValueError(f"r_min ({self.r_min}) must not exceed r_max ({self.r_max})")
        if self.eval_rank is not None and not self.r_min <= self.eval_rank <= self.r_max:
            raise ValueError(f"eval_rank ({self.eval_rank}) must lie in [r_min, r_max] = [{self.r_min}, {self.r_max}]")
        return self

    @property
    def rank_for_eval(self) -> int:
        return self.eval_rank or self.r_max


class NestedRanks:
    """The rank in use, shared by the hooks of one model: sampled per training forward pass, eval_rank otherwise."""

    def __init__(self, cfg: DyLoraConfig):
        self.r_min, self.r_max, self.eval_rank = cfg.r_min, cfg.r_max, cfg.rank_for_eval
        self.rank = cfg.r_max

    def sample(self, module, args, kwargs=None):
        """Forward pre-hook on the whole model: one rank for all layers in this step (uses torch's seeded RNG)."""
        if module.training:
            import torch

            self.rank = int(torch.randint(self.r_min, self.r_max + 1, ()))

    def truncate(self, module, args, output):
        """Forward hook on a lora_A: keep the first `rank` components, scaled so the update is (alpha / rank)·B·A
        (PEFT multiplies by alpha / r_max afterwards)."""
        rank = self.rank if module.training else self.eval_rank
        if rank == self.r_max:
            return None  # unchanged: exactly PEFT's LoRA at r_max
        import torch

        keep = (torch.arange(self.r_max, device=output.device) < rank).to(output.dtype) * (self.r_max / rank)
        return output * keep


def apply(model, cfg: DyLoraConfig):
    import peft

    config = peft.LoraConfig(**lora_family_options(model, cfg), r=cfg.r_max, lora_alpha=cfg.lora_alpha)
    model = wrap(model, config)
    ranks = NestedRanks(cfg)
    model.register_forward_pre_hook(ranks.sample)
    for name, module in model.named_modules():
        if name.endswith(".lora_A.default"):
            module.register_forward_hook(ranks.truncate)
    return model


def start(model, cfg: DyLoraConfig, scratch: Path) -> None:
    """Keep the rank facts for `save`, which gets the model but not the config."""
    Path(scratch).mkdir(parents=True, exist_ok=True)
    facts = {"format": "tunesmith-dylora", "r_min": cfg.r_min, "r_max": cfg.r_max, "eval_rank": cfg.rank_for_eval,
             "lora_alpha": cfg.lora_alpha,
             "how": "For rank k in [r_min, r_max]: keep the first k rows of every lora_A and the first k columns of "
                    "every lora_B, set r = k in adapter_config.json and keep lora_alpha "
                    "(`tunesmith export RUN --rank k` does this). As saved, the adapter is rank r_max."}
    (Path(scratch) / RANKS_FILE).write_text(json.dumps(facts, indent=2) + "\n")


def save(model, folder: Path, scratch: Path | None = None) -> None:
    model.save_pretrained(folder)
    shutil.copy(Path(scratch) / RANKS_FILE, Path(folder) / RANKS_FILE)


def _facts(folder: Path) -> dict:
    from tunesmith.runs import read_json_file

    return read_json_file(Path(folder) / RANKS_FILE)


def write_rank(saved: Path, out: Path, k: int) -> None:
    """The adapter in `saved` cut to rank k, written to `out` as a plain PEFT LoRA adapter (with the tokenizer
    and label files beside it, as saved). A rank outside [r_min, r_max] is an error that names the range."""
    from safetensors.torch import load_file, save_file

    from tunesmith.runs import check_weights, read_json_file

    saved, out = Path(saved), Path(out)
    check_weights(saved, PEFT_FILES)
    facts = _facts(saved)
    if not facts["r_min"] <= k <= facts["r_max"]:
        raise TunesmithError(f"--rank {k}: this DyLoRA adapter was trained for ranks {facts['r_min']} to "
                             f"{facts['r_max']} (method.r_min, method.r_max); pick one of those")
    out.mkdir(parents=True, exist_ok=True)
    for path in saved.iterdir():
        if path.is_file() and path.name not in (*PEFT_FILES, RANKS_FILE):
            shutil.copy(path, out / path.name)
    weights = {}
    for key, tensor in load_file(saved / "adapter_model.safetensors").items():
        if ".lora_A." in key:
            tensor = tensor[:k]
        elif ".lora_B." in key:
            tensor = tensor[:, :k]
        weights[key] = tensor.contiguous()
    save_file(weights, out / "adapter_model.safetensors", metadata={"format": "pt"})
    config = read_json_file(saved / "adapter_config.json")
    (out / "adapter_config.json").write_text(json.dumps({**config, "r": k}, indent=2) + "\n")


def load(base, folder: Path):
    """The adapter at the run's evaluation rank (r_max unless method.eval_rank said otherwise)."""
    from peft import PeftModel

    facts = _facts(folder)
    if facts["eval_rank"] == facts["r_max"]:
        return PeftModel.from_pretrained(base, str(folder))
    with tempfile.TemporaryDirectory() as tmp:  # from_pretrained reads the weights now; the folder can go after
        write_rank(folder, Path(tmp), facts["eval_rank"])
        return PeftModel.from_pretrained(base, tmp)


def run_at_rank(run, k: int):
    """`run` with its tuned model cut to rank k, to evaluate or predict with one DyLoRA run at several ranks:
    `run_at_rank(tunesmith.load_run("runs/sentiment-dylora"), 2).evaluate()`."""
    from peft import PeftModel

    from tunesmith.modeling import to_device
    from tunesmith.runs import Run

    if run.method.at_rank is None:
        raise TunesmithError(f"rank {k}: run {run.dir} is a {run.config.method.name!r} run, trained at one rank; "
                             "only dylora runs can be cut to another rank")
    with tempfile.TemporaryDirectory() as tmp:
        write_rank(run.weights_dir, Path(tmp), k)
        model = PeftModel.from_pretrained(run.load_base(), tmp)
    return Run(run.dir, trust_remote_code=run.trust_remote_code, model=to_device(model).eval(), tokenizer=run.tokenizer)


METHOD = Method(name="dylora", config_cls=DyLoraConfig, apply=apply, start=start, save=save, load=load,
                at_rank=write_rank, saves="adapter", peft=True, mergeable=True,
                summary="one LoRA adapter for every rank in [r_min, r_max] (ours, PEFT layout)")
