"""Decoding rows for `tunesmith serve`: `Track`, one row's state whichever loop steps it (its sampler, tokens,
log-probabilities, stream and answer), and the static batch: rows of several requests generated in one left-padded
`generate` call, for the models continuous.py cannot step (and score jobs: a prompt's own log-probabilities). Each
row has its own sampling options, stop strings, max_tokens, seed and log-probabilities, and is answered (its
request's future resolved, its stream ended) at the step its own sequence ends.

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


class Track:
    """One row's decoding state, whichever loop steps it (the static batch here, or continuous.py's): its sampler
    (transformers' warpers, then Gumbel noise from its own generator seeded as `generation.complete` seeds it), its
    tokens and log-probabilities, what its stream has been sent; its job hears of its end at once."""

    def __init__(self, row, device):
        import torch

        self.row = row
        self.generator = torch.Generator(device=device).manual_seed(row.seed) if row.temperature > 0 else None
        self.warpers = _warpers(row.temperature, row.top_k, row.top_p) if row.temperature > 0 else []
        self.tokens: list[int] = []
        self.entries = [] if row.logprobs is not None else None
        self.sent = self.shown = 0
        self.done = False

    def sample(self, scores):
        """This row's scores (1 x vocab) warped, plus Gumbel noise: their argmax is a sample."""
        import torch

        for warp in self.warpers:
            scores = warp(None, scores)
        u = torch.rand(scores.shape[-1], generator=self.generator, device=scores.device)
        return scores[0] - torch.log(-torch.log(u.clamp_(min=1e-20)))

    def take(self, tokenizer, eos, token: int, logp) -> bool:
        """The row's next token (logp: the raw log-probabilities it was chosen from, when asked for); streams its
        settled text; answers its job when the row ends (EOS, a stop string, max_tokens, or its client left)."""
        row, job = self.row, self.row.job
        self.tokens.append(token)
        if self.entries is not None:
            self.entries.append(_entry(logp, token, row.logprobs))
        eos_hit = token == eos
        finished = eos_hit or len(self.tokens) >= row.max_new_tokens or job.cancelled.is_set()
        if not (finished or row.stop or job.on_text):
            return False
        text, hit = _text(tokenizer, self.tokens, row.stop)
        finished = finished or hit
        if job.on_text is not None and not job.cancelled.is_set():
            settled = len(text) if finished else len(text) - _held_back(text, row.stop)
            if settled > self.sent:
                entries = self.entries
                if entries is not None:
                    entries, self.shown = entries[self.shown :], len(entries)
                job.on_text(row.index, text[self.sent : settled], entries)
                self.sent = settled
        if finished:
            self.end(tokenizer, "stop" if hit or eos_hit else "length", text)
        return finished

    def end(self, tokenizer, reason: str = "length", text: str | None = None) -> None:
        """Answer the row's job with what it has."""
        if text is None:
            text, _ = _text(tokenizer, self.tokens, self.row.stop)
        self.done = True
        row = self.row
        row.job.done(row.index, Completed(row.prompt, row.sample, text, list(self.tokens), reason, self.entries))


def choose(tracks, scores, tokenizer, eos) -> list[int]:
    """One decoding step of `tracks` (the rows of `scores`, batch x vocab, float32, changed in place): each row's
    next token, greedy or sampled, handed to its Track; returns the tokens."""
    want = any(t.entries is not None for t in tracks)
    logp = scores.log_softmax(-1) if want else None
    for r, track in enumerate(tracks):
        if track.generator is not None and not track.done:
            scores[r] = track.sample(scores[r : r + 1])
    tokens = scores.argmax(-1).tolist()
    for r, track in enumerate(tracks):
        if not track.done:
            track.take(tokenizer, eos, tokens[r], logp[r] if logp is not None else None)
    return tokens


class _Steps:
    """generate's logits processor (sampling per row, log-probabilities kept) and stopping criterion (each row's
    end, its streamed text, its answer) for one static batch."""

    def __init__(self, rows, tokenizer, eos, device):
        self.tokenizer, self.eos = tokenizer, eos
        self.tracks = [Track(r, device) for r in rows]
        self.want = any(t.entries is not None for t in self.tracks)
        self.logp = None

    def process(self, input_ids, scores):
        if self.want:
            self.logp = scores.float().log_softmax(-1)
        for r, track in enumerate(self.tracks):
            if track.generator is not None and not track.done:
                scores[r] = track.sample(scores[r : r + 1])
        return scores

    def stop(self, input_ids, scores, **kwargs):
        import torch

        last = input_ids[:, -1].tolist()
        for r, track in enumerate(self.tracks):
            if not track.done:
                track.take(self.tokenizer, self.eos, last[r], self.logp[r] if self.logp is not None else None)
        return torch.tensor([t.done for t in self.tracks], dtype=torch.bool, device=input_ids.device)


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
    steps = _Steps(rows, tokenizer, tokenizer.eos_token_id, device)
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
    for track in steps.tracks:  # generate ended (every row stopped): a row not answered yet ends here
        if not track.done:
            track.end(tokenizer)
    return max(len(t.tokens) for t in steps.tracks)


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
