"""The checks dpo and kto share: of the config (data.columns, packing, methods that cannot train through TRL's
log-probabilities, data.template, train.extra keys the objective sets) and of the data (columns, the chat template,
empty responses, identical pairs), each problem naming the key, or the source, split, column and a row's text. The
chat template check serves reward and rl too."""

from __future__ import annotations

from tunesmith.data.roles import check_columns, no_packing, role_names

LM_HEAD = "lm_head"


def missing_columns(cfg, dd, roles: list[str]) -> list[str]:
    d = cfg.data
    problems = []
    for split, ds in dd.items():
        for role in roles:
            column = d.column(role)
            if column is not None and column not in ds.column_names:
                problems.append(f"data.columns.{role}: column {column!r} is not in the {split} data of {d.source!r}; "
                                f"columns are {ds.column_names}. Name the column that holds the {role} in "
                                f"data.columns, e.g. columns: {{{role}: {ds.column_names[0]}}}")
    return problems


def data_problems(cfg, dd, tokenizer, roles: list[str], responses, per_split=None) -> list[str]:
    """What dpo and kto check alike: the columns of `roles` (nothing else when one is missing), the chat template, and
    in each split the empty `responses` and per_split(ds, split)'s problems."""
    problems = missing_columns(cfg, dd, roles)
    if problems:
        return problems
    problems = chat_template_problem(cfg, tokenizer)
    for split, ds in dd.items():
        problems += empty_responses(cfg, ds, split, list(responses))
        problems += per_split(ds, split) if per_split else []
    return problems


def chat_template_problem(cfg, tokenizer) -> list[str]:
    if cfg.data.format == "chat" and not getattr(tokenizer, "chat_template", None):
        return [f"data.format: 'chat' needs a tokenizer with a chat template, and {cfg.model.name!r} has none; "
                "use data.format: text"]
    return []


def _where(cfg, split: str) -> str:
    return f"{cfg.data.source} ({split} split)"


def _first(rows: list[int], prompts: list) -> str:
    from tunesmith.data.clean import short_value

    return f"{len(rows)} row{'s' if len(rows) > 1 else ''}, the first with prompt {short_value(prompts[rows[0]])}"


def empty_responses(cfg, ds, split: str, roles: list[str]) -> list[str]:
    """A response role (chosen, rejected, completion, unrelated) with no text: there is nothing to score."""
    d = cfg.data
    prompts = ds[d.column("prompt")][:]
    problems = []
    for role in roles:
        column = d.column(role)
        if column is None:
            continue
        empty = [i for i, t in enumerate(ds[column][:]) if not str(t if t is not None else "").strip()]
        if empty:
            problems.append(f"{_where(cfg, split)}: column {column!r} ({role}) is empty on {_first(empty, prompts)}; "
                            "every response needs text to be scored: fill in or remove those rows")
    return problems


def identical_pairs(cfg, ds, split: str) -> list[str]:
    """chosen and rejected the same text: the pair prefers nothing (its DPO loss gradient is zero)."""
    from tunesmith.data.clean import short_value

    d = cfg.data
    prompts = ds[d.column("prompt")][:]
    chosen, rejected = ds[d.column("chosen")][:], ds[d.column("rejected")][:]
    same = [i for i, (a, b) in enumerate(zip(chosen, rejected)) if str(a).strip() == str(b).strip()]
    if not same:
        return []
    return [f"{_where(cfg, split)}: chosen ({d.column('chosen')!r}) and rejected ({d.column('rejected')!r}) are the same "
            f"text on {_first(same, prompts)}: {short_value(chosen[same[0]])}; a pair must differ (there is nothing to "
            "prefer): fix or remove those rows"]


def train_extra_overlap(cfg, options: tuple[str, ...]) -> list[str]:
    """train.extra keys that the objective section (its `options`, TRL's names) or data.max_length already sets
    (TRL would get them twice)."""
    owned = {**{key: f"objective.{key}" for key in options}, "max_length": "data.max_length"}
    return [f"train.extra.{key}: set it as {where} instead" for key, where in owned.items() if key in cfg.train.extra]


def config_problems(cfg, roles) -> list[str]:
    """What dpo and kto refuse alike: unknown roles in data.columns, packing, the methods that cannot train through
    TRL's log-probabilities, and a data.template (they read their columns as they are)."""
    problems = check_columns(cfg, roles) + no_packing(cfg) + method_problems(cfg)
    if cfg.data.template:
        problems.append(f"data.template: {cfg.objective.name} reads the {', '.join(role_names(roles))} columns as they "
                        "are (data.columns names them); remove data.template, and use data.format: chat for the chat "
                        "template")
    return problems


def method_problems(cfg) -> list[str]:
    """What a method says it cannot do for a causal LM's sft (features, head) holds for dpo and kto too; and TRL
    computes log-probabilities from lm_head.weight directly, so an adapter on lm_head would never train."""
    from tunesmith.methods.registry import METHODS

    reason = METHODS[cfg.method.name].unsupported.get("sft")
    if reason:
        return [f"method.name: {cfg.method.name!r} does not apply to objective {cfg.objective.name!r}: {reason}"]
    targets = getattr(cfg.method, "target_modules", None)
    targets = [targets] if isinstance(targets, str) else list(targets or [])
    if LM_HEAD in targets:
        return [f"method.target_modules: TRL computes log-probabilities from {LM_HEAD}.weight directly, so an adapter on "
                f"{LM_HEAD} would never train; remove {LM_HEAD!r}"]
    return []
