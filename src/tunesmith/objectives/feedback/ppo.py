"""PPO for the `rl` objective: TRL 1.16 no longer ships a PPOTrainer, and PPO is the algorithm the RLHF literature
describes (Ziegler et al. 2019, "Fine-Tuning Language Models from Human Preferences"; Ouyang et al. 2022). This
follows the structure of TRL's last PPOTrainer (v0.11, `PPOTrainer.step`), one step at a time:

1. rollout: sample `num_generations` completions for each prompt of the batch (tunesmith.generation.complete);
2. score: the reward of each completion, given at its last token; every token also pays the KL penalty
   -kl_coef * (log p_policy - log p_reference) (the reference: the adapter disabled, or a frozen copy);
3. advantages: generalized advantage estimation (gamma, lam) against a value head, a linear layer on the
   policy's last hidden state; returns = advantages + values; advantages whitened;
4. optimize: `ppo.epochs` passes over the batch in minibatches of train.per_device_train_batch_size, each an
   optimizer step on the clipped surrogate loss + value_coef * the clipped value loss;
5. the adaptive KL controller moves kl_coef toward ppo.target_kl (Ziegler et al.: proportional, horizon).

Log-probabilities are those of the sampling distribution (logits / temperature) throughout. The model runs in eval
mode (no dropout), so that the log-probabilities of the rollout and of the update agree, as TRL recommends. The
value head is a training tool: the run saves the policy only.
"""

from __future__ import annotations

import copy
import logging
import math
import time

import torch
from torch import nn

from tunesmith.progress import bar

log = logging.getLogger("tunesmith")


class AdaptiveKLController:
    """Ziegler et al. 2019: kl_coef *= 1 + clip(KL / target - 1, -0.2, 0.2) * completions / horizon."""

    def __init__(self, init: float, target: float, horizon: int):
        self.value, self.target, self.horizon = init, target, horizon

    def update(self, current: float, n_steps: int) -> None:
        error = min(max(current / self.target - 1, -0.2), 0.2)
        self.value *= 1 + error * n_steps / self.horizon


class FixedKLController:
    def __init__(self, value: float):
        self.value = value

    def update(self, current: float, n_steps: int) -> None:
        pass


class ValueHead(nn.Module):
    """V(state): one linear layer on the policy's last hidden state at each position."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.summary = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.summary.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.summary(hidden.to(self.summary.weight.dtype)).squeeze(-1)


# ---------------------------------------------------------------------------------------------
# Tensors: prompt + completion rows, per-token log-probabilities, masked statistics, GAE


def pack(prompts: list[list[int]], completions: list[list[int]], pad: int, device):
    """Rows prompt + completion, right-padded (positions stay 0, 1, 2... as in generation). Returns input_ids,
    attention_mask and `mask` [rows, length - 1]: 1 where position t predicts a completion token (token t + 1)."""
    width = max(len(p) + len(c) for p, c in zip(prompts, completions))
    ids = torch.full((len(prompts), width), pad, dtype=torch.long)
    attention = torch.zeros((len(prompts), width), dtype=torch.long)
    mask = torch.zeros((len(prompts), width - 1))
    for i, (p, c) in enumerate(zip(prompts, completions)):
        ids[i, : len(p) + len(c)] = torch.tensor(p + c)
        attention[i, : len(p) + len(c)] = 1
        mask[i, len(p) - 1 : len(p) + len(c) - 1] = 1
    return ids.to(device), attention.to(device), mask.to(device)


def forward(model, input_ids, attention_mask, temperature: float, value_head: ValueHead | None = None):
    """log p(token t + 1 | tokens ..t) at temperature, [rows, length - 1], and the values V(..t) (or None)."""
    out = model(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=value_head is not None)
    logits = out.logits[:, :-1].float() / temperature
    logprobs = torch.gather(logits.log_softmax(-1), 2, input_ids[:, 1:, None]).squeeze(-1)
    values = value_head(out.hidden_states[-1][:, :-1]) if value_head is not None else None
    return logprobs, values


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp(min=1)


def masked_whiten(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    return (x - mean) * torch.rsqrt(var + 1e-8) * mask


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float):
    """Generalized advantage estimation over each row's completion positions (masked; terminal after the last)."""
    values, rewards = values * mask, rewards * mask
    advantages = torch.zeros_like(rewards)
    last = torch.zeros(rewards.shape[0], device=rewards.device)
    for t in reversed(range(rewards.shape[1])):
        following = values[:, t + 1] if t + 1 < rewards.shape[1] else torch.zeros_like(last)
        delta = rewards[:, t] + gamma * following - values[:, t]
        last = (delta + gamma * lam * last) * mask[:, t]
        advantages[:, t] = last
    return advantages, advantages + values


def _is_peft(model) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "peft_config")


def reference_logprobs(model, reference, input_ids, attention_mask, temperature: float):
    """The reference's log-probabilities: the PEFT policy with its adapter disabled, else `reference`."""
    with torch.no_grad():
        if reference is None:
            with model.disable_adapter():
                return forward(model, input_ids, attention_mask, temperature)[0]
        return forward(reference, input_ids, attention_mask, temperature)[0]


def kl_to_reference(model, tokenizer, prompts: list[list[int]], completions: list[list[int]], cfg,
                    batch_size: int = 8) -> list[float]:
    """Per completion: sum over its tokens of log p_model - log p_reference (at objective.temperature). The
    reference is the base: a PEFT model's adapter disabled, else the base model loaded afresh (for the base itself
    that gives 0)."""
    from tunesmith.methods.registry import METHODS
    from tunesmith.modeling import load_model, to_device
    from tunesmith.trust import trusted

    reference = None
    if not _is_peft(model):
        reference = to_device(load_model(cfg.model, "causal_lm", trust_remote_code=trusted(),
                                         **METHODS[cfg.method.name].load_kwargs(cfg.method))).eval()
    device, temperature = next(model.parameters()).device, cfg.objective.temperature
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    was_training, out = model.training, []
    model.eval()
    try:
        for start in range(0, len(prompts), batch_size):
            ids, attention, mask = pack(prompts[start : start + batch_size], completions[start : start + batch_size], pad, device)
            with torch.no_grad():
                policy = forward(model, ids, attention, temperature)[0]
            ref = reference_logprobs(model, reference, ids, attention, temperature)
            out += ((policy - ref) * mask).sum(-1).tolist()
    finally:
        model.train(was_training)
    return out


# ---------------------------------------------------------------------------------------------
# The trainer


class PPOTrainer:
    """PPO on a causal LM policy; like a transformers Trainer it has .train(), .state (log_history, global_step,
    num_input_tokens_seen) and .model, and calls its callbacks (TrainerCallback: metrics.jsonl, trackers) at the
    beginning, at each log entry and at the end. `args`: the TrainingArguments the callbacks read (output_dir...)."""

    def __init__(self, model, tokenizer, prompts: list[list[int]], texts: list[str], reward, cfg, callbacks=(),
                 args=None):
        from transformers import TrainerControl, TrainerState, get_scheduler

        o, t = cfg.objective, cfg.train
        self.model, self.tokenizer, self.prompts, self.texts, self.reward = model, tokenizer, prompts, texts, reward
        self.o, self.t, self.callbacks, self.args = o, t, list(callbacks), args
        self.bf16, self.control = bool(getattr(args, "bf16", False)), TrainerControl()
        self.device = next(model.parameters()).device
        self.reference = None if _is_peft(model) else copy.deepcopy(model).eval().requires_grad_(False)
        self.value_head = ValueHead(model.config.get_text_config().hidden_size).to(self.device)
        self.params = [p for p in model.parameters() if p.requires_grad] + list(self.value_head.parameters())
        self.optimizer = torch.optim.AdamW(self.params, lr=t.learning_rate, weight_decay=t.weight_decay)
        self.batch = t.per_device_train_batch_size * t.gradient_accumulation_steps  # completions per rollout
        self.per_batch = self.batch // o.num_generations  # prompts per rollout
        self.max_steps = t.max_steps if t.max_steps > 0 else max(1, math.ceil(t.num_train_epochs * len(prompts) / self.per_batch))
        warmup = int(t.warmup_steps * self.max_steps) if t.warmup_steps < 1 else int(t.warmup_steps)
        self.scheduler = get_scheduler(t.lr_scheduler_type, self.optimizer, num_warmup_steps=warmup,
                                       num_training_steps=self.max_steps)
        p = o.ppo
        self.kl_ctl = AdaptiveKLController(o.kl_coef, p.target_kl, p.kl_horizon) if p.target_kl and o.kl_coef > 0 \
            else FixedKLController(o.kl_coef)
        self.state = TrainerState(max_steps=self.max_steps, logging_steps=t.logging_steps)
        self.generator = torch.Generator().manual_seed(t.seed)
        self.order: list[int] = []

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def _next_prompts(self) -> list[int]:
        """Prompt indices of the next batch: a seeded shuffle of the prompts, a new one each pass."""
        while len(self.order) < self.per_batch:
            self.order += torch.randperm(len(self.prompts), generator=self.generator).tolist()
        chosen, self.order = self.order[: self.per_batch], self.order[self.per_batch :]
        return chosen

    def train(self, resume_from_checkpoint=None):
        from transformers.trainer_utils import TrainOutput

        from tunesmith.errors import TunesmithError

        if resume_from_checkpoint:
            raise TunesmithError("objective.algorithm: ppo keeps no checkpoints to resume from; train the run again")
        self._event("on_train_begin")
        self.model.eval()
        start, window, losses = time.time(), [], []
        progress = bar(total=self.max_steps, desc="ppo rollouts", unit="step", long=True)
        for step in range(self.max_steps):
            stats = self.step(self._next_prompts(), step)
            progress.set_postfix(reward=f"{stats['reward']:.3f}", refresh=False)
            progress.update()
            window.append(stats)
            losses.append(stats["loss"])
            self.state.global_step = step + 1
            self.state.epoch = (step + 1) * self.per_batch / len(self.prompts)
            if (step + 1) % self.t.logging_steps == 0 or step + 1 == self.max_steps:
                self.log({k: sum(s[k] for s in window) / len(window) for k in window[0]})
                window = []
        progress.close()
        loss = sum(losses) / len(losses)
        self.log({"train_runtime": round(time.time() - start, 2), "train_loss": loss})
        self._event("on_train_end")
        return TrainOutput(self.state.global_step, loss, {"train_runtime": time.time() - start})

    def log(self, logs: dict) -> None:
        entry = {**logs, "epoch": round(self.state.epoch or 0, 4),
                 "step": self.state.global_step}
        self.state.log_history.append(entry)
        self._event("on_log", logs=dict(logs))

    def _event(self, name: str, **kwargs) -> None:
        for callback in self.callbacks:
            getattr(callback, name)(self.args, self.state, self.control, model=self.model, **kwargs)

    def step(self, indices: list[int], step: int) -> dict:
        """One PPO step (TRL v0.11's PPOTrainer.step): rollout, score, advantages, optimize, KL controller."""
        from tunesmith.generation import complete

        o, n = self.o, self.o.num_generations
        done = complete(self.model, self.tokenizer, [self.prompts[i] for i in indices], max_new_tokens=o.max_new_tokens,
                        temperature=o.temperature, n=n, seed=self.t.seed * 100_003 + step,
                        batch_size=self.t.per_device_eval_batch_size)
        prompts = [self.prompts[indices[c.prompt]] for c in done]
        scores = self.reward([self.texts[indices[c.prompt]] for c in done], [c.text for c in done])
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        ids, attention, mask = pack(prompts, [c.token_ids for c in done], pad, self.device)
        with torch.no_grad(), self._autocast():
            old_logprobs, old_values = forward(self.model, ids, attention, o.temperature, self.value_head)
            ref_logprobs = reference_logprobs(self.model, self.reference, ids, attention, o.temperature)
        old_values = old_values.float()
        kl = (old_logprobs - ref_logprobs) * mask  # per token; its sum per completion is the sequence KL
        rewards = -self.kl_ctl.value * kl
        last = (mask.cumsum(-1) == mask.sum(-1, keepdim=True)) & (mask > 0)  # each completion's last token
        rewards = rewards + last * torch.tensor(scores, device=self.device)[:, None]
        advantages, returns = gae(rewards, old_values, mask, o.ppo.gamma, o.ppo.lam)
        advantages = masked_whiten(advantages, mask)

        stats = self._optimize(ids, attention, mask, old_logprobs, old_values, advantages, returns)
        sequence_kl = kl.sum(-1).mean().item()
        kl_coef, learning_rate = self.kl_ctl.value, self.scheduler.get_last_lr()[0]
        self.kl_ctl.update(sequence_kl, len(done))
        self.scheduler.step()
        self.state.num_input_tokens_seen += int(attention.sum())
        scores_t = torch.tensor(scores)
        return {**stats, "reward": scores_t.mean().item(), "reward_std": scores_t.std(unbiased=False).item(),
                "kl": sequence_kl, "kl_coef": kl_coef, "length": float(mask.sum(-1).mean()),
                "learning_rate": learning_rate}

    def _optimize(self, ids, attention, mask, old_logprobs, old_values, advantages, returns) -> dict:
        """ppo.epochs passes over the rollout in minibatches, each an optimizer step on the clipped losses."""
        p, size = self.o.ppo, self.t.per_device_train_batch_size
        totals = {"loss": 0.0, "policy_loss": 0.0, "value_loss": 0.0, "clipfrac": 0.0, "approx_kl": 0.0}
        updates = 0
        for _ in range(p.epochs):
            order = torch.randperm(ids.shape[0], generator=self.generator)
            for start in range(0, ids.shape[0], size):
                b = order[start : start + size].to(self.device)
                m = mask[b]
                with self._autocast():
                    logprobs, values = forward(self.model, ids[b], attention[b], self.o.temperature, self.value_head)
                values = values.float()
                clipped_values = old_values[b] + (values - old_values[b]).clamp(-p.value_clip_range, p.value_clip_range)
                value_loss = 0.5 * masked_mean(torch.max((values - returns[b]) ** 2, (clipped_values - returns[b]) ** 2), m)
                ratio = torch.exp(logprobs - old_logprobs[b])
                surrogate = torch.max(-advantages[b] * ratio,
                                      -advantages[b] * ratio.clamp(1 - p.clip_range, 1 + p.clip_range))
                policy_loss = masked_mean(surrogate, m)
                loss = policy_loss + p.value_coef * value_loss
                self.optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.params, self.t.max_grad_norm)
                self.optimizer.step()
                with torch.no_grad():
                    totals["loss"] += loss.item()
                    totals["policy_loss"] += policy_loss.item()
                    totals["value_loss"] += value_loss.item()
                    totals["clipfrac"] += masked_mean((ratio - 1).abs().gt(p.clip_range).float(), m).item()
                    totals["approx_kl"] += 0.5 * masked_mean((logprobs - old_logprobs[b]) ** 2, m).item()
                updates += 1
        return {k: v / updates for k, v in totals.items()}
