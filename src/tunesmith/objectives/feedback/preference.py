"""What dpo and kto share: how a prompt and a response reach TRL and the model, TRL's trainer and the Objective,
scoring a response by its log-probability, the reference model, and the pieces of their metrics (their checks are
in checks.py).

Formatting. With a chat data.format (every one but text) the prompt is a user message (after data.system_prompt, if
set) and a response is the assistant's message, both through the tokenizer's chat template; conversational rows (the
format TRL documents: `prompt` a list of messages, `chosen`/`rejected`/`completion` lists of assistant messages,
OpenAI {role, content} or ShareGPT {from, value}) are read as they are; with data.format: text the prompt is
followed by a newline (sft's default layout, ``{prompt}\\n{response}``) and the response by the EOS token. TRL's
DPOTrainer and KTOTrainer receive exactly these values and tokenize them themselves; ``split_ids`` tokenizes them
the same way (the response starts where the tokenized prompt and prompt + response part), so that the metrics
score the tokens training saw.

The reference model is the base: the policy's log-probabilities are measured against it. For a PEFT adapter that
computes the identity when untrained (LoRA, DoRA, IA3 by default; a soft prompt or prefix is not the identity, and
its reference is still the base without it) the reference is the same model with the adapter disabled, with no
second copy in memory; for `full` and the other methods that change the model itself, a frozen copy taken before
training. TRL itself would keep a copy of an already-wrapped adapter as the reference ("ref"); ``use_base_as_reference``
drops it, except after PiSSA/OLoRA, which move part of the base weights into the adapter so that disabling it
would not give the base back.
"""

from __future__ import annotations

import logging
import math
from contextlib import contextmanager

import numpy as np

from tunesmith.data.chat import is_chat, is_turns, messages_of, text_of
from tunesmith.errors import TunesmithError
from tunesmith.objectives.spec import Objective

log = logging.getLogger("tunesmith")
REFERENCE_ADAPTER = "ref"  # the name TRL gives the frozen copy of an already-wrapped adapter


# ---------------------------------------------------------------------------------------------
# Formatting and token ids


def prompt_value(data_cfg, prompt):
    """The prompt as TRL reads it: chat messages (system prompt, then the user turn, or the row's own messages when it
    is conversational), or the text and a newline."""
    if is_chat(data_cfg):
        return messages_of(prompt, data_cfg, "user")
    return f"{_text_only(prompt, 'prompt')}\n"


def response_value(data_cfg, response):
    """A response as TRL reads it: the assistant's messages (a text becomes one), or the text (TRL appends the EOS
    token to text)."""
    return messages_of(response, data_cfg, "assistant") if is_chat(data_cfg) else _text_only(response, "response")


def _text_only(value, what: str) -> str:
    if is_turns(value):
        raise TunesmithError(f"data.format: 'text' reads a {what} as text, and this one is a list of chat messages "
                             f"({text_of(value)[:60]!r}); set data.format: chat for conversational data")
    return str(value)


def _ids(tokenizer, value, generation_prompt: bool = False) -> list[int]:
    if isinstance(value, list):  # messages, as trl.data_utils._tokenize renders them
        kwargs = {"add_generation_prompt": True} if generation_prompt else {}
        return list(tokenizer.apply_chat_template(value, tokenize=True, return_dict=True, **kwargs)["input_ids"])
    return list(tokenizer(text=value)["input_ids"])


def prompt_ids(tokenizer, data_cfg, prompt) -> list[int]:
    """Token ids of a prompt as the model sees it before a response (probes and samples generate from here)."""
    return _ids(tokenizer, prompt_value(data_cfg, prompt), generation_prompt=True)


def split_ids(tokenizer, data_cfg, prompt, responses: list) -> tuple[list[int], list[list[int]]]:
    """(prompt ids, ids of each response), tokenized as TRL's DPO and KTO trainers do: the prompt alone and the prompt
    with each response; the responses start where the shortest common prefix ends (a chat template or a token that
    merges across the boundary can render the prompt differently with a response after it)."""
    p = prompt_value(data_cfg, prompt)
    eos = tokenizer.eos_token or ""
    fulls = []
    for r in (response_value(data_cfg, r) for r in responses):
        if isinstance(r, str) and not r.endswith(eos):
            r += eos
        fulls.append(_ids(tokenizer, p + r))
    ids = _ids(tokenizer, p, generation_prompt=True)
    cut = min(_common_prefix(ids, full) for full in fulls)
    return fulls[0][:cut], [full[cut:] for full in fulls]


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def stats_features(prompt: list[int], response: list[int], longest: int) -> dict:
    """The columns validate and `data preview` read: prompt + (first) response, loss on the response, and the length of
    the longest prompt + response of the row before truncation."""
    return {"input_ids": prompt + response, "attention_mask": [1] * (len(prompt) + len(response)),
            "labels": [-100] * len(prompt) + response, "full_length": longest}


# ---------------------------------------------------------------------------------------------
# Training: TRL's arguments, and the reference model


def training_args(cfg, run_dir, objective, **options):
    """The objective's TRL config from cfg.train, with the objective's options, data.max_length, and no gradient
    checkpointing unless train.gradient_checkpointing asks for it (TRL's configs turn it on by default)."""
    from tunesmith.objectives.trainer import training_arguments

    more = {"max_length": cfg.data.max_length, **options}
    if not cfg.train.gradient_checkpointing:
        more["gradient_checkpointing"] = False
    return training_arguments(cfg, run_dir, objective, **more)


def trl_trainer(trainer: str, model, tokenizer, prep, cfg, run_dir, callbacks, dataset, options: dict):
    """TRL's `trainer` (DPOTrainer, KTOTrainer) on the method-applied model, with the objective's `options` (fields of
    TRL's config) and dataset(split) -> the split as TRL reads it. The reference: with a PEFT adapter the base with
    the adapter disabled, otherwise a frozen copy of the model as it is before training (module docstring)."""
    import trl

    use_eval = cfg.train.eval_strategy != "no"
    built = getattr(trl, trainer)(
        model=model,
        ref_model=None if is_peft(model) else frozen_copy(model),
        args=training_args(cfg, run_dir, prep.objective, **options),
        train_dataset=dataset("train"),
        eval_dataset=dataset("eval") if use_eval else None,
        processing_class=tokenizer,
        callbacks=list(callbacks),
    )
    use_base_as_reference(built, cfg)
    return built


def objective(trl_config: str, **hooks) -> Objective:
    """The Objective of a TRL preference objective on a causal LM (dpo, kto): no task facts, TRL's collator, eval_loss
    watched for the best model, generations as probes, and `trl_config` (e.g. "DPOConfig") as its arguments class."""

    def args_class() -> type:
        import trl

        return getattr(trl, trl_config)

    return Objective(model_kind="causal_lm", best_metric="eval_loss", setup=lambda cfg, dd: {},
                     collator=lambda tokenizer: None, probe=probe, args_class=args_class, **hooks)


def is_peft(model) -> bool:
    import sys

    peft = sys.modules.get("peft")
    return peft is not None and isinstance(model, peft.PeftModel)


def moves_base(cfg) -> bool:
    """Did the method's initialization rewrite base weights (PiSSA, OLoRA), so that disabling the adapter no longer
    gives the base model?"""
    from tunesmith.methods.lora import MOVES_BASE

    return str(getattr(cfg.method, "init_lora_weights", "")).startswith(MOVES_BASE)


def frozen_copy(model):
    """The reference for a method that trains the model itself (full, freeze, bottleneck adapters): the model as it
    is before training, frozen."""
    import copy

    ref = copy.deepcopy(model).eval()
    ref.requires_grad_(False)
    return ref


def use_base_as_reference(trainer, cfg) -> None:
    """Drop the copy TRL made of an already-wrapped adapter (see the module docstring): TRL then computes the reference
    with the adapter disabled. After PiSSA/OLoRA the copy serves as the reference during training and is dropped when
    training ends, so that the run saves only the trained adapter."""
    from transformers import TrainerCallback

    model = trainer.model
    if not is_peft(model) or REFERENCE_ADAPTER not in model.peft_config:
        return
    if not moves_base(cfg):
        model.delete_adapter(REFERENCE_ADAPTER)
        return

    class DropReference(TrainerCallback):
        def on_train_end(self, args, state, control, model=None, **kwargs):
            if model is not None and REFERENCE_ADAPTER in getattr(model, "peft_config", {}):
                model.delete_adapter(REFERENCE_ADAPTER)

    log.info("%s: the initialization moved base weights into the adapter; TRL's frozen copy of the initial adapter is "
             "the reference during training", cfg.method.name)
    trainer.add_callback(DropReference())


@contextmanager
def reference_model(model, cfg):
    """The base model that `model` is measured against, or None when `model` is the base itself (every margin to the
    reference is then 0). A PEFT model: itself with the adapter disabled (after PiSSA/OLoRA, which moved base weights,
    the base loaded again); a plain model in a run of a PEFT method: the base, measured before the adapter was added;
    otherwise (full, freeze, bottleneck adapters): the base loaded again from model.name, or None if the weights
    are the same."""
    from tunesmith.methods.registry import METHODS

    if is_peft(model) and not moves_base(cfg):
        with model.disable_adapter():
            yield model
        return
    if not is_peft(model) and METHODS[cfg.method.name].peft:
        yield None
        return
    from tunesmith.modeling import load_model, to_device

    # The training process (or Run) has already loaded this model, with --trust-remote-code where it needs it.
    base = to_device(load_model(cfg.model, "causal_lm", trust_remote_code=cfg.model.trust_remote_code,
                                **METHODS[cfg.method.name].load_kwargs(cfg.method))).eval()
    try:
        yield None if not is_peft(model) and _same_weights(model, base) else base
    finally:
        del base


def _same_weights(a, b) -> bool:
    import torch

    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    return pa.keys() == pb.keys() and all(torch.equal(pa[k].to(pb[k].device), pb[k]) for k in pa)


# ---------------------------------------------------------------------------------------------
# Scoring: log-probabilities of responses


def scorable(features, cfg):
    """The held-out rows whose prompt leaves room for a response within data.max_length (those TRL trains on)."""
    return features.select([i for i, p in enumerate(features["prompt_ids"][:]) if len(p) < cfg.data.max_length])


def response_logps(model, tokenizer, pieces: list[tuple[list[int], list[int]]], max_length: int,
                   batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """For each (prompt ids, response ids): the summed log-probability of the response tokens given everything before
    them, and how many response tokens were scored, after cutting prompt + response to max_length tokens from the
    end (as TRL's collators do)."""
    import torch

    model.eval()
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    order = sorted(range(len(pieces)), key=lambda i: len(pieces[i][0]) + len(pieces[i][1]))  # batches of like length
    sums, counts = [], []
    for start in range(0, len(pieces), batch_size):
        chunk = [pieces[i] for i in order[start : start + batch_size]]
        seqs = [(p + r)[:max_length] for p, r in chunk]
        scored = [([0] * len(p) + [1] * len(r))[:max_length] for p, r in chunk]
        width = max(len(s) for s in seqs)
        ids = torch.tensor([s + [pad] * (width - len(s)) for s in seqs], device=device)
        mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs], device=device)
        keep = torch.tensor([m + [0] * (width - len(m)) for m in scored], device=device)[:, 1:]
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask).logits[:, -width:-1].float()  # a soft prompt comes first
            token_logps = torch.log_softmax(logits, dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
        sums += (token_logps * keep).sum(dim=1).tolist()
        counts += keep.sum(dim=1).tolist()
    back = np.argsort(order)  # the rows in the order they came
    return np.array(sums, dtype=float)[back], np.array(counts, dtype=float)[back]


def beats(a, b) -> float:
    """Share of rows where a > b; a tie counts half (so a model equal to its reference scores 0.5, chance)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.mean((a > b) + 0.5 * (a == b))) if len(a) else float("nan")


def ranking(good, bad) -> float:
    """Share of (good, bad) pairs, across rows, where the good one scores higher; ties count half (the ROC AUC)."""
    good, bad = np.asarray(good, dtype=float), np.asarray(bad, dtype=float)
    if not len(good) or not len(bad):
        return float("nan")
    return float(np.mean((good[:, None] > bad[None, :]) + 0.5 * (good[:, None] == bad[None, :])))


def nll_metrics(logps: np.ndarray, counts: np.ndarray) -> dict:
    """eval_loss: mean negative log-likelihood per response token (token-weighted), and its perplexity; NaN (left
    out of eval.json) when no token was scored (e.g. no desirable row held out)."""
    if not counts.sum():
        return {"eval_loss": float("nan"), "perplexity": float("nan"), "eval_tokens": 0}
    loss = float(-logps.sum() / counts.sum())
    return {"eval_loss": loss, "perplexity": math.exp(min(loss, 50)), "eval_tokens": int(counts.sum())}


def finite(metrics: dict) -> dict:
    """Drop metrics that could not be measured (NaN: e.g. no undesirable row held out), rather than writing NaN."""
    return {k: v for k, v in metrics.items() if not (isinstance(v, float) and math.isnan(v))}


# ---------------------------------------------------------------------------------------------
# Probes and samples


def probe(model, tokenizer, texts, cfg, task, **options) -> list[str]:
    """Generations for eval.probes (or `tunesmith generate`), each text formatted as a prompt."""
    from tunesmith.generation import generate

    prompts = [prompt_ids(tokenizer, cfg.data, t) for t in texts]
    return generate(model, tokenizer, prompts, cfg.eval.max_new_tokens, **options)


def samples(model, tokenizer, prompts: list[str], references: list[str], cfg) -> list[dict]:
    """Greedy generations for a few held-out prompts, shown beside a reference (a preferred response) in the report."""
    if not prompts:
        return []
    outputs = probe(model, tokenizer, prompts, cfg, {})
    return [{"prompt": text_of(p), "reference": text_of(r), "generation": g} for p, r, g in zip(prompts, references, outputs)]
