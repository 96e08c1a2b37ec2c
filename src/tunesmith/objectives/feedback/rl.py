"""rl: online reinforcement learning. The policy (the model being tuned, any of lora, dora, qlora, ia3, freeze,
full) samples completions for the training prompts, a reward scores them (objectives/rewards.py), and the policy is
updated to raise the reward while a KL penalty keeps it close to the reference model (the base: the adapter
disabled, or a frozen copy for full and freeze).

Algorithms: `grpo` (TRL's GRPOTrainer: advantages relative to the other completions of the same prompt), `rloo`
(TRL's RLOOTrainer: REINFORCE with a leave-one-out baseline, the KL inside the reward) and `ppo` (our own compact
module, objectives/ppo.py: value head, GAE, clipped surrogate, adaptive KL controller; TRL 1.16 no longer ships a
PPOTrainer). The KL coefficient defaults to 0.05 for all three: TRL's GRPO defaults to beta=0 (no KL term at all),
which lets the policy drift arbitrarily far from the model it started from; tunesmith keeps the penalty unless a
config sets kl_coef: 0.

Metrics on held-out prompts, for the base and the tuned model alike: the mean and spread of the reward of sampled
completions (objective.temperature, a fixed seed), the KL to the reference (per completion, the sum over its
tokens of log p_policy - log p_reference; 0 for the base) and the mean completion length in tokens.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Literal

from pydantic import Field

from tunesmith.data.chat import is_chat
from tunesmith.data.roles import Role, check_columns, no_packing
from tunesmith.data.templates import fields, render
from tunesmith.objectives.feedback import checks, rewards
from tunesmith.objectives.spec import Objective
from tunesmith.progress import shown as progress_shown
from tunesmith.schema import Section
from tunesmith.trust import trust_decided, trusted

log = logging.getLogger("tunesmith")
METHODS = ("full", "freeze", "lora", "dora", "qlora", "ia3")  # methods whose reference model rl knows how to get


class RewardWeights(Section):
    run: float = Field(1.0, description="Weight of the reward run's score in the sum.")
    function: float = Field(1.0, description="Weight of the reward function's value in the sum.")


class RewardSources(Section):
    """Where the reward comes from: a reward-model run, a Python function, or both (a weighted sum)."""

    run: str | None = Field(None, description="A finished reward-model run folder (objective: reward).")
    function: str | None = Field(
        None, description="'module:function' or 'file.py:function' taking (prompts, completions) -> list of floats. "
        "tunesmith.objectives.feedback.rewards:length / positive / distinct / sentence_end always run; any other module only "
        "with --trust-remote-code.")
    weights: RewardWeights = Field(default_factory=RewardWeights)


class PPOOptions(Section):
    """algorithm: ppo only (defaults of TRL's last PPOTrainer and Ziegler et al. 2019)."""

    epochs: int = Field(4, gt=0, description="Optimization passes over each batch of completions.")
    clip_range: float = Field(0.2, gt=0, description="Clip of the probability ratio in the surrogate objective.")
    value_clip_range: float = Field(0.2, gt=0, description="Clip of the value prediction's change.")
    value_coef: float = Field(0.1, ge=0, description="Weight of the value loss.")
    gamma: float = Field(1.0, gt=0, le=1, description="Discount factor.")
    lam: float = Field(0.95, ge=0, le=1, description="GAE lambda.")
    target_kl: float | None = Field(
        6.0, gt=0, description="Adaptive KL controller's target (nats per completion); null keeps kl_coef fixed.")
    kl_horizon: int = Field(10000, gt=0, description="Adaptive KL controller's horizon, in completions.")


class RLConfig(Section):
    """Online RL against a reward, with a KL penalty to the reference model."""

    name: Literal["rl"]
    algorithm: Literal["grpo", "rloo", "ppo"] = Field("grpo", description="grpo, rloo (TRL) or ppo (tunesmith's).")
    kl_coef: float = Field(0.05, ge=0, description="KL penalty coefficient (beta); 0 turns the penalty off.")
    num_generations: int = Field(4, gt=0, description="Completions sampled per prompt (grpo and rloo need >= 2).")
    max_new_tokens: int = Field(32, gt=0, description="Completion length in tokens, in training and evaluation.")
    temperature: float = Field(1.0, gt=0, description="Sampling temperature, in training and evaluation.")
    prompt_words: int | None = Field(
        None, gt=0, description="Keep only the first N words of each prompt (continue the openings of texts).")
    reward: RewardSources
    ppo: PPOOptions = Field(default_factory=PPOOptions)


ROLES = (Role("prompt", templated=True, help="what the policy continues or answers (or data.template over columns)"),)


def check_config(cfg) -> list[str]:
    """Roles, the reward's spelling, the batch shape and the options of another algorithm."""
    o, t = cfg.objective, cfg.train
    problems = check_columns(cfg, ROLES) + no_packing(cfg)
    if cfg.method.name not in METHODS:
        problems.append(f"method.name: rl needs a reference model and supports {', '.join(METHODS)}; "
                        f"{cfg.method.name!r} is not one of them")
    if not o.reward.run and not o.reward.function:
        problems.append(f"{rewards.KEY}: name a reward: run (a reward-model run folder), function ('module:function', "
                        f"e.g. {rewards.BUILTIN_MODULE}:positive) or both")
    problems += rewards.spec_problems(o.reward.function) if o.reward.function else []
    batch = t.per_device_train_batch_size * t.gradient_accumulation_steps
    if o.algorithm != "ppo" and o.num_generations < 2:
        problems.append(f"objective.num_generations: {o.algorithm} compares completions of the same prompt and needs "
                        f"at least 2; found {o.num_generations}")
    if batch % o.num_generations:
        problems.append(f"train.per_device_train_batch_size: counts completions; {t.per_device_train_batch_size} x "
                        f"gradient_accumulation_steps {t.gradient_accumulation_steps} must be a multiple of "
                        f"objective.num_generations ({o.num_generations}), so that every prompt's group is whole")
    if o.ppo != PPOOptions() and o.algorithm != "ppo":  # defaults pass: a saved config.yaml lists them all
        problems.append("objective.ppo: options of algorithm ppo; remove them or set objective.algorithm: ppo")
    if t.load_best_model_at_end:
        problems.append("train.load_best_model_at_end: rl measures held-out prompts before and after training only; "
                        "remove it")
    if t.save_steps and o.algorithm == "ppo":
        problems.append("train.save_steps: algorithm ppo (tunesmith's own loop) writes no checkpoints to resume from; "
                        "remove it, or use grpo or rloo")
    if t.extra and o.algorithm == "ppo":
        problems.append(f"train.extra: algorithm ppo is tunesmith's own loop, not a TrainingArguments trainer; its "
                        f"options are objective.ppo.*; remove {sorted(t.extra)}")
    elif t.extra and o.algorithm == "rloo":
        import inspect

        from trl import RLOOConfig

        problems += [f"train.extra.{k}: not a trl.RLOOConfig field" for k in t.extra
                     if k not in inspect.signature(RLOOConfig).parameters]
    return problems


# ---------------------------------------------------------------------------------------------
# Prompts: the text a person wrote (rewards read it) and what the policy reads (chat: through the chat template)


def prompt_text(row: dict, cfg) -> str:
    d, o = cfg.data, cfg.objective
    text = render(d.template, row) if d.template else str(row[d.column("prompt")])
    return " ".join(text.split()[: o.prompt_words]) if o.prompt_words else text


def prompt_texts(ds, tokenizer, cfg) -> list[str]:
    """Every row's prompt text, its beginning cut where it is longer than data.max_length tokens (the end, where
    the completion starts, is kept)."""
    texts = [prompt_text(row, cfg) for row in ds]
    longest = cfg.data.max_length
    ids = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
    cut = [i for i, row in enumerate(ids) if len(row) > longest]
    for i in cut:
        texts[i] = tokenizer.decode(ids[i][-longest:])
    if cut:
        log.info("rl: %d of %d prompts are longer than data.max_length (%d tokens); their beginning is cut",
                 len(cut), len(texts), longest)
    return texts


def messages(text: str, cfg) -> list[dict]:
    system = [{"role": "system", "content": cfg.data.system_prompt}] if cfg.data.system_prompt else []
    return system + [{"role": "user", "content": text}]


def prompt_ids(tokenizer, text: str, cfg) -> list[int]:
    """Token ids the policy reads, as TRL's trainers tokenize them (chat: the template with the generation prompt)."""
    from tunesmith.generation import chat_prompt

    if is_chat(cfg.data):
        return chat_prompt(tokenizer, messages(text, cfg))
    return tokenizer(text)["input_ids"]


# ---------------------------------------------------------------------------------------------
# Hooks


def check(cfg, dd, tokenizer) -> list[str]:
    """The prompt column, empty prompts, the chat template, and the reward's function file and run folder."""
    from pathlib import Path

    d, o = cfg.data, cfg.objective
    problems = checks.chat_template_problem(cfg, tokenizer)
    for split, ds in dd.items():
        needed = fields(d.template) if d.template else [d.column("prompt")]
        missing = [c for c in needed if c not in ds.column_names]
        key = "data.template" if d.template else "data.columns.prompt"
        problems += [f"{key}: column {c!r} is not in the {split} data of {d.source!r}; columns are {ds.column_names}"
                     for c in missing]
        if not missing:
            empty = [row for row in ds if not prompt_text(row, cfg).strip()]
            if empty:
                problems.append(f"{key}: {len(empty)} rows of the {split} data have an empty prompt (the first: "
                                f"{str(empty[0])[:120]}); remove them or fix the data")
    if o.reward.function:  # validate: found without running; train and eval: imported now, before anything is written
        decided = trust_decided()
        problems += rewards.locate_problems(o.reward.function) if decided is None else \
            rewards.load_problems(o.reward.function, decided)
    if o.reward.run:
        if not (Path(o.reward.run).expanduser() / "config.yaml").is_file():
            problems.append(f"{rewards.KEY}.run: {o.reward.run!r} is not a run folder; train the reward model first "
                            "(objective: reward) or fix the path")
        problems += rewards.run_problems(o.reward.run)
    return problems


def tokenize(ds, tokenizer, cfg, task):
    """Prompt ids as the policy reads them (for previews and length statistics); no token carries a loss."""
    import datasets

    from tunesmith.data.tokenize import IGNORE

    ids = [prompt_ids(tokenizer, text, cfg) for text in prompt_texts(ds, tokenizer, cfg)]
    return datasets.Dataset.from_dict({"input_ids": ids, "attention_mask": [[1] * len(i) for i in ids],
                                       "labels": [[IGNORE] * len(i) for i in ids], "full_length": [len(i) for i in ids]})


def evaluate(model, tokenizer, raw, features, cfg, task) -> dict:
    """Sampled completions of the held-out prompts (the first eval.max_generate, default 100): reward (mean, std),
    KL to the reference, length; the first eval.num_samples as samples."""
    import statistics

    from tunesmith.generation import complete
    from tunesmith.objectives.feedback.ppo import kl_to_reference

    o, cap = cfg.objective, cfg.eval.max_generate
    texts = prompt_texts(raw.select(range(min(cap, len(raw)))) if cap else raw, tokenizer, cfg)
    ids = [prompt_ids(tokenizer, text, cfg) for text in texts]
    done = complete(model, tokenizer, ids, max_new_tokens=o.max_new_tokens, temperature=o.temperature,
                    seed=cfg.train.seed, batch_size=cfg.train.per_device_eval_batch_size,
                    precision="auto" if BF16_ROLLOUTS else "fp32")  # bf16 where native, as the rollouts
    reward = rewards.build_reward(o.reward, trusted())
    scores = reward(texts, [c.text for c in done])
    kl = kl_to_reference(model, tokenizer, ids, [c.token_ids for c in done], cfg)
    samples = [{"prompt": texts[i], "reference": "", "generation": c.text.strip(), "reward": round(scores[i], 4)}
               for i, c in enumerate(done[: cfg.eval.num_samples])]
    return {"reward": statistics.fmean(scores), "reward_std": statistics.pstdev(scores),
            "kl": statistics.fmean(kl), "length": statistics.fmean(len(c.token_ids) for c in done),
            "samples": samples}


def probe(model, tokenizer, texts, cfg, task, **options) -> list[str]:
    from tunesmith.generation import generate

    return generate(model, tokenizer, [prompt_ids(tokenizer, t, cfg) for t in texts], cfg.eval.max_new_tokens, **options)


def build_trainer(model, tokenizer, prep, cfg, run_dir, callbacks):
    """ppo: tunesmith's PPOTrainer; grpo / rloo: TRL's trainer, with the reward's sources as reward_funcs."""
    o = cfg.objective
    reward = rewards.build_reward(o.reward, trusted())
    texts = prompt_texts(prep.data["train"], tokenizer, cfg)
    if cfg.train.eval_strategy != "no":
        log.info("rl: train.eval_strategy is not used; the held-out prompts are measured before and after training")
    from tunesmith.objectives.trainer import training_arguments

    t = cfg.train
    no_eval = cfg.model_copy(update={"train": t.model_copy(update={"eval_strategy": "no"})})
    if o.algorithm == "ppo":
        from transformers import TrainingArguments

        from tunesmith.objectives.feedback.ppo import PPOTrainer

        args = training_arguments(no_eval, run_dir, dataclasses.replace(prep.objective, args_class=lambda: TrainingArguments))
        ids = [prompt_ids(tokenizer, text, cfg) for text in texts]
        return PPOTrainer(model, tokenizer, ids, texts, reward, cfg, callbacks, args=args)
    import datasets
    import trl

    base = trl.GRPOTrainer if o.algorithm == "grpo" else trl.RLOOTrainer
    config_class = trl.GRPOConfig if o.algorithm == "grpo" else trl.RLOOConfig
    args = training_arguments(
        no_eval, run_dir, dataclasses.replace(prep.objective, args_class=lambda: config_class),
        beta=o.kl_coef, num_generations=o.num_generations, max_completion_length=o.max_new_tokens,
        temperature=o.temperature, disable_dropout=True, log_completions=False,
        reward_weights=[s.weight for s in reward.sources],
        **({} if t.gradient_checkpointing else {"gradient_checkpointing": False}),  # TRL's default is on
        # the Trainer's step bar (rollouts + updates): the CLI's quiet transformers logging would turn it off
        **({} if "disable_tqdm" in t.extra else {"disable_tqdm": not progress_shown()}),
    )
    args.include_num_input_tokens_seen = "no"  # TRL counts prompt and completion tokens itself
    train = datasets.Dataset.from_dict({"prompt": [messages(x, cfg) if is_chat(cfg.data) else x for x in texts],
                                        "prompt_text": texts})
    return _without_reference_adapter(base)(
        model=model, reward_funcs=[_trl_reward(s) for s in reward.sources], args=args, train_dataset=train,
        processing_class=tokenizer, callbacks=list(callbacks))


def _trl_reward(source):
    """A reward source as TRL calls reward functions: keyword arguments, the dataset's columns among them. The
    source gets the prompt text as written (the prompt_text column) and each completion's text."""

    def reward(prompts, completions, prompt_text, **kwargs):
        return source(prompt_text, [c[-1]["content"] if isinstance(c, list) else c for c in completions])

    reward.__name__ = source.name  # TRL logs rewards/<name>/mean
    return reward


def _without_reference_adapter(trainer_class):
    """TRL's trainer class, which gives a PEFT policy a second adapter "ref" (a copy of the untrained one) as its
    reference; after training it is deleted, so that the run saves only the trained adapter."""

    class RLTrainer(trainer_class):
        def train(self, *args, **kwargs):
            try:
                result = super().train(*args, **kwargs)
            finally:
                self.__dict__.pop("_rollout", None)
            if "ref" in (getattr(self.model, "peft_config", None) or {}):
                self.model.delete_adapter("ref")
            return result

        def _generate_single_turn(self, *args, **kwargs):
            fast = _rollout_model(self)
            if fast is None:
                return super()._generate_single_turn(*args, **kwargs)
            policy, self.model_wrapped = self.model_wrapped, fast
            try:
                return super()._generate_single_turn(*args, **kwargs)
            finally:
                self.model_wrapped = policy

    RLTrainer.__name__ = RLTrainer.__qualname__ = trainer_class.__name__
    return RLTrainer


# Rollouts (and rl evaluation) sampled by a bf16 copy of the policy. Off: on the quiet benchmark of 2026-12-03
# (benchmarks/bench_generation.py --grpo 12, docs/performance.md#generation-speed) it bought nothing (3.02 against
# 3.14 s/step, the same reward curve), so sampling stays as TRL does it until a measurement shows a gain.
BF16_ROLLOUTS = False


def _rollout_model(trainer):
    """Where the run trains with bf16 autocast (train.bf16, on only where bf16 is native) and the policy's weights are
    fp32: a bf16 copy of the policy that samples the rollouts (made once; its trainable parameters refreshed from the
    policy before each generation), else None (the policy samples). On CPU transformers' generate runs a PEFT policy
    without autocast, in fp32; bf16 weights halve the bytes every decoding step reads. Log-probabilities for the
    loss are still computed by the policy itself, so the update stays exact for the completions drawn."""
    import torch

    from tunesmith.generation import bf16_copy

    if not BF16_ROLLOUTS or not trainer.args.bf16 or getattr(trainer, "use_vllm", False) or \
            getattr(trainer.args, "use_transformers_continuous_batching", False):
        return None
    if "_rollout" not in trainer.__dict__:
        policy = trainer.accelerator.unwrap_model(trainer.model_wrapped)
        if any(p.dtype != torch.float32 for p in policy.parameters()):
            trainer._rollout = None
        else:
            log.info("rl: rollouts sampled by a bf16 copy of the policy (train.bf16 on), refreshed before each batch")
            fast = bf16_copy(policy)
            trainer._rollout = fast, [(f, p) for f, p in zip(fast.parameters(), policy.parameters()) if p.requires_grad]
            return fast
    if trainer._rollout is None:
        return None
    fast, pairs = trainer._rollout
    with torch.no_grad():
        for mine, theirs in pairs:
            mine.copy_(theirs)
    return fast


def _args_class():
    from trl import GRPOConfig

    return GRPOConfig  # train.extra is checked against it (rloo's against RLOOConfig in check_config)


OBJECTIVE = Objective(
    name="rl", config_cls=RLConfig, model_kind="causal_lm", roles=ROLES, check_config=check_config,
    metric_names=frozenset({"reward", "reward_std", "kl", "length"}), best_metric="reward",
    check=check, setup=lambda cfg, dd: {}, tokenize=tokenize, collator=lambda tokenizer: None,
    evaluate=evaluate, probe=probe, build_trainer=build_trainer, args_class=_args_class,
    summary="prompts -> sampled completions scored by a reward, KL to the reference (reward, KL, length, samples)",
    metric_directions={"reward": "max", "reward_std": "neither", "kl": "min", "length": "neither"},
    distributed=False,  # ppo is our own loop; grpo/rloo (TRL) have not been tested on several processes yet
)
