"""The checks dpo and kto share: of the config (data.columns, packing, methods that cannot train through TRL's
log-probabilities, data.template, train.extra keys the objective sets) and of the data (columns, the chat template,
empty responses, identical pairs), each problem naming the key, or the source, split, column and a row's text. The
chat template check serves reward and rl too."""

from __future__ import annotations

from tunesmith.data.chat import is_chat, is_turns, messages_of, text_of
from tunesmith.data.roles import check_columns, no_packing, role_names
from tunesmith.errors import TunesmithError

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
        read = {r: cfg.data.column(r) for r in roles if r in ("prompt", *responses)}
        problems += conversation_problems(cfg, ds, split, read)
        problems += empty_responses(cfg, ds, split, list(responses))
        problems += per_split(ds, split) if per_split else []
    return problems


def chat_template_problem(cfg, tokenizer) -> list[str]:
    if is_chat(cfg.data) and not getattr(tokenizer, "chat_template", None):
        return [f"data.format: {cfg.data.format!r} renders prompts and responses through a chat template, and "
                f"{cfg.model.name!r} has none; set data.chat_template (chatml, llama-3, or a Jinja file), or use "
                "data.format: text"]
    return []


def conversation_problems(cfg, ds, split: str, columns: dict[str, str]) -> list[str]:
    """Conversational values ({role: column}; the prompt a list of messages, a response a list of assistant messages):
    with data.format: text, any such value (text is expected); with a chat format, turns that are no chat format, and
    a response whose last message is not the assistant's."""
    problems = []
    for role, column in columns.items():
        if column is None or column not in ds.column_names:
            continue
        values = ds[column][:]
        rows = [i for i, v in enumerate(values) if is_turns(v)]
        if not rows:
            continue
        if not is_chat(cfg.data):
            problems.append(f"{_where(cfg, split)}: column {column!r} ({role}) holds chat messages on {len(rows)} rows "
                            f"(the first {text_of(values[rows[0]])[:60]!r}), and data.format is 'text'; set data.format: "
                            "chat to render them through the chat template")
            continue
        problems += _turn_problems(cfg, split, role, column, values, rows)
    return problems


def _turn_problems(cfg, split: str, role: str, column: str, values: list, rows: list[int]) -> list[str]:
    bad, not_assistant = [], []
    for i in rows:
        try:
            messages = messages_of(values[i], cfg.data, "user" if role == "prompt" else "assistant")
        except TunesmithError as err:
            bad.append((i, str(err)))
            continue
        if role != "prompt" and messages[-1]["role"] != "assistant":
            not_assistant.append((i, messages[-1]["role"]))
    problems = []
    if bad:
        problems.append(f"{_where(cfg, split)}: column {column!r} ({role}), row {bad[0][0] + 1} ({len(bad)} rows in "
                        f"all): {bad[0][1]}")
    if not_assistant:
        problems.append(f"{_where(cfg, split)}: column {column!r} ({role}) is a response, and on {len(not_assistant)} "
                        f"rows (the first row {not_assistant[0][0] + 1}) its last message is a {not_assistant[0][1]!r} "
                        "message; a response is the assistant's messages (the conversation before it goes in the prompt)")
    return problems


def _where(cfg, split: str) -> str:
    return f"{cfg.data.source} ({split} split)"


def _first(rows: list[int], prompts: list) -> str:
    from tunesmith.data.clean import short_value

    return f"{len(rows)} row{'s' if len(rows) > 1 else ''}, the first with prompt {short_value(text_of(prompts[rows[0]]))}"


def empty_responses(cfg, ds, split: str, roles: list[str]) -> list[str]:
    """A response role (chosen, rejected, completion, unrelated) with no text: there is nothing to score."""
    d = cfg.data
    prompts = ds[d.column("prompt")][:]
    problems = []
    for role in roles:
        column = d.column(role)
        if column is None:
            continue
        empty = [i for i, t in enumerate(ds[column][:]) if not text_of(t).strip()]
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
    same = [i for i, (a, b) in enumerate(zip(chosen, rejected)) if text_of(a).strip() == text_of(b).strip()]
    if not same:
        return []
    return [f"{_where(cfg, split)}: chosen ({d.column('chosen')!r}) and rejected ({d.column('rejected')!r}) are the same "
            f"text on {_first(same, prompts)}: {short_value(text_of(chosen[same[0]]))}; a pair must differ (there is nothing to "
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
