"""The work of one batch of `tunesmith serve` (batching.py gathers it): rows of several requests generated in one
left-padded `generate` call, each with its own sampling options, stop strings, max_tokens, seed and log-probabilities,
and each answered (its request's future resolved, its stream ended) at the step its own sequence ends.

Rows of different adapters of one LoRA base share a batch through PEFT's per-sample adapter selection
(`adapter_names`, "__base__" for the base), under the model's lock; other models run a batch of one served name
with its adapter switched on (Served.active). Sampling is `generation.complete`'s: per row, transformers' warpers
then Gumbel noise from the row's own generator, seeded as there, so a seeded request samples the same text alone or
in a batch. Log-probabilities are the model's raw next-token distribution (before temperature, top-k, top-p).

An entry of log-probabilities is (token id, logprob or None, [(token id, logprob), ...] the k most likely).
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

from tunesmith.generation import Completion, _held_back, _text, _warpers, model_lock

BASE = "__base__"  # PEFT's name for "no adapter" in adapter_names


@dataclass(frozen=True)
class Completed(Completion):
    """A Completion with its tokens' log-probabilities (None when not asked for)."""

    logprobs: list | None = None


def run_jobs(jobs, chunk: int) -> int:
    """Run one batch: a "score" job alone, else every row of `jobs` (which share a batch key) in batches of `chunk`;
    returns the decoding steps taken (the longest row's tokens)."""
    served = jobs[0].served
    if jobs[0].kind == "score":
        with served.active():
            for i, entries in enumerate(prompt_logprobs(served.model, served.tokenizer, [r.ids for r in jobs[0].rows],
                                                        jobs[0].rows[0].logprobs or 0)):
                jobs[0].done(i, entries)
        return 0
    rows = [r for job in jobs for r in job.rows]
    mixed, steps = getattr(served, "batch_key", None) == "lora", 0
    for start in range(0, len(rows), chunk):
        part = rows[start : start + chunk]
        if mixed:
            names = [r.job.served.adapter or BASE for r in part]
            with model_lock(served.model):
                steps += generate_rows(served.model, served.tokenizer, part, adapter_names=names)
        else:
            with served.active() if hasattr(served, "active") else nullcontext():
                steps += generate_rows(served.model, served.tokenizer, part)
    return steps


class _Steps:
    """The logits processor (sampling per row, log-probabilities kept) and the stopping criterion (each row's end,
    its streamed text, its answer) of one batch."""

    def __init__(self, rows, tokenizer, width: int, eos, device):
        import torch

        self.rows, self.tokenizer, self.width, self.eos = rows, tokenizer, width, eos
        self.generators = [torch.Generator(device=device).manual_seed(r.seed) if r.temperature > 0 else None
                           for r in rows]
        self.warpers = [_warpers(r.temperature, r.top_k, r.top_p) if r.temperature > 0 else [] for r in rows]
        self.want = any(r.logprobs is not None for r in rows)
        self.logp = None
        self.tokens: list[list[int]] = [[] for _ in rows]
        self.entries = [[] if r.logprobs is not None else None for r in rows]
        self.sent, self.shown, self.done = [0] * len(rows), [0] * len(rows), [False] * len(rows)

    def process(self, input_ids, scores):
        import torch

        if self.want:
            self.logp = scores.float().log_softmax(-1)
        for r, gen in enumerate(self.generators):
            if gen is None or self.done[r]:
                continue
            s = scores[r : r + 1]
            for warp in self.warpers[r]:
                s = warp(input_ids[r : r + 1], s)
            u = torch.rand(s.shape[-1], generator=gen, device=s.device)
            scores[r] = s[0] - torch.log(-torch.log(u.clamp_(min=1e-20)))
        return scores

    def stop(self, input_ids, scores, **kwargs):
        import torch

        last = input_ids[:, -1].tolist()
        for r, row in enumerate(self.rows):
            if not self.done[r]:
                self._step(r, row, last[r])
        return torch.tensor(self.done, dtype=torch.bool, device=input_ids.device)

    def _step(self, r: int, row, token: int) -> None:
        self.tokens[r].append(token)
        if self.entries[r] is not None:
            self.entries[r].append(_entry(self.logp[r], token, row.logprobs))
        ids, job = self.tokens[r], row.job
        eos_hit = token == self.eos
        finished = eos_hit or len(ids) >= row.max_new_tokens or job.cancelled.is_set()
        if not (finished or row.stop or job.on_text):
            return
        text, hit = _text(self.tokenizer, ids, row.stop)
        finished = finished or hit
        if job.on_text is not None and not job.cancelled.is_set():
            settled = len(text) if finished else len(text) - _held_back(text, row.stop)
            if settled > self.sent[r]:
                entries = self.entries[r]
                if entries is not None:
                    entries, self.shown[r] = entries[self.shown[r] :], len(entries)
                job.on_text(row.index, text[self.sent[r] : settled], entries)
                self.sent[r] = settled
        if finished:
            self.done[r] = True
            reason = "stop" if hit or eos_hit else "length"
            job.done(row.index, Completed(row.prompt, row.sample, text, list(ids), reason, self.entries[r]))


def _entry(logp, token: int, k: int | None) -> tuple:
    top = []
    if k:
        values, ids = logp.topk(k)
        top = list(zip(ids.tolist(), values.tolist()))
    return token, float(logp[token]), top


def generate_rows(model, tokenizer, rows, adapter_names: list[str] | None = None) -> int:
    """Generate `rows` together (left-padded, with an attention mask); each row's job hears of it as it ends.
    Returns the decoding steps taken."""
    import torch

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    width = max(len(r.ids) for r in rows)
    batch = torch.tensor([[pad] * (width - len(r.ids)) + r.ids for r in rows], device=device)
    mask = torch.tensor([[0] * (width - len(r.ids)) + [1] * len(r.ids) for r in rows], device=device)
    steps = _Steps(rows, tokenizer, width, tokenizer.eos_token_id, device)
    extra = {"adapter_names": adapter_names} if adapter_names is not None else {}
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model.generate(input_ids=batch, attention_mask=mask, max_new_tokens=max(r.max_new_tokens for r in rows),
                           do_sample=False, pad_token_id=pad, eos_token_id=tokenizer.eos_token_id,
                           logits_processor=[steps.process], stopping_criteria=[steps.stop], **extra)
    finally:
        model.train(was_training)
    for r, row in enumerate(rows):  # generate ended (every row stopped): a row not answered yet ends here
        if not steps.done[r]:
            text, _ = _text(tokenizer, steps.tokens[r], row.stop)
            row.job.done(row.index, Completed(row.prompt, row.sample, text, steps.tokens[r], "length", steps.entries[r]))
    return max(len(t) for t in steps.tokens)


def prompt_logprobs(model, tokenizer, prompts: list[list[int]], k: int, batch_size: int = 8) -> list[list[tuple]]:
    """For each prompt, an entry per token: the first has no logprob (nothing precedes it), each later one its
    log-probability given the tokens before it, with the k most likely tokens there. Right-padded forward passes."""
    import torch

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    device = next(model.parameters()).device
    out = []
    for start in range(0, len(prompts), batch_size):
        part = prompts[start : start + batch_size]
        width = max(len(p) for p in part)
        ids = torch.tensor([p + [pad] * (width - len(p)) for p in part], device=device)
        mask = torch.tensor([[1] * len(p) + [0] * (width - len(p)) for p in part], device=device)
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask).logits
        logits = logits[:, logits.size(1) - width :]  # a soft prompt's virtual tokens come first
        for row, p in enumerate(part):
            logp = logits[row, : len(p) - 1].float().log_softmax(-1)
            out.append([(p[0], None, [])] + [_entry(logp[i], p[i + 1], k) for i in range(len(p) - 1)])
    return out
