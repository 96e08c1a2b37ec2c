"""Column roles: what an objective reads from each row, by role (text, label, prompt, response, ...).

Each objective declares its roles (``Objective.roles``); a config maps them to the data's columns in
``data.columns: {role: column}``, e.g. ``{prompt: question, response: answer}``. A role's column defaults to the
role's own name; an optional role has none unless ``data.columns`` names one. Code asks ``cfg.data.column(role)``.
The checks here are shared by the objectives' ``check_config`` hooks.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass


@dataclass(frozen=True)
class Role:
    name: str
    kind: str = "text"  # "text": strings the model reads; "label": a class name or id per row
    optional: bool = False  # no column unless data.columns names one (default: the role's own name)
    templated: bool = False  # a data.template, when set, builds this role's text from the columns it names
    lists: bool = False  # the column may hold a list of strings per row (e.g. several reference answers)
    turns: bool = False  # with a chat data.format, the column may hold chat messages (conversational preference data)
    help: str = ""


def role_names(roles) -> list[str]:
    return [r.name for r in roles]


def suggest(word: str, options) -> str:
    close = difflib.get_close_matches(word, list(options), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def listing(roles) -> str:
    """'text, text_pair (optional), label': an objective's roles in messages."""
    return ", ".join(f"{r.name} (optional)" if r.optional else r.name for r in roles) or "(none)"


def describe_roles(objective: str, roles) -> str:
    return f"objective {objective!r} reads the roles {listing(roles)}"


def check_columns(cfg, roles) -> list[str]:
    """data.columns may name only roles of the config's objective."""
    known = role_names(roles)
    problems = []
    for role in cfg.data.columns:
        if role not in known:
            guess = suggest(role, known)
            problems.append(f"data.columns.{role}: {role!r} is not a role of objective {cfg.objective.name!r}, whose roles "
                            f"are {listing(roles)}{guess}{' ' if guess else '. '}Rename the key or remove it")
    return problems


def plain_text_only(cfg) -> list[str]:
    """For objectives that read plain text: data.format: chat (messages through a chat template) is not theirs."""
    if cfg.data.format == "text":
        return []
    return [f"data.format: {cfg.data.format!r} renders conversations through the tokenizer's chat template; objective "
            f"{cfg.objective.name!r} reads plain text. Set data.format: text"]


def no_packing(cfg) -> list[str]:
    """For objectives that keep each example whole: data.packing (concatenate texts into blocks) is not theirs."""
    if not cfg.data.packing:
        return []
    return [f"data.packing: objective {cfg.objective.name!r} keeps each example whole (causal_lm packs raw text into "
            "blocks); remove data.packing"]


def role_columns_option(items: list[str], objective: str, roles) -> dict[str, str]:
    """`--column ROLE=COLUMN` items -> {role: column}, the roles being the objective's; else one error for all."""
    from tunesmith.errors import TunesmithError

    known, columns, problems = role_names(roles), {}, []
    for item in items:
        role, _, column = (part.strip() for part in item.partition("="))
        if not role or not column:
            problems.append(f"--column {item!r}: expected ROLE=COLUMN, e.g. {(known or ['text'])[0]}=my_column; "
                            f"{describe_roles(objective, roles)}")
        elif role not in known:
            problems.append(f"--column {item!r}: {role!r} is not a role of the run's objective; "
                            f"{describe_roles(objective, roles)}{suggest(role, known)}")
        else:
            columns[role] = column
    if problems:
        raise TunesmithError(problems)
    return columns


# ---------------------------------------------------------------------------------------------
# The older spelling, one key per role (before data.columns): data.<key> -> (role, the key's default).
OLD_COLUMN_KEYS = {"text_column": ("text", "text"), "text_pair_column": ("text_pair", None), "label_column": ("label", "label"),
                   "prompt_column": ("prompt", "prompt"), "response_column": ("response", "response")}
_NOTED: set[str] = set()  # old keys already noted in this process (a config is validated more than once per command)


def move_old_column_keys(data: dict, objective: str | None, roles) -> dict:
    """A raw data section with data.text_column etc. -> the section with data.columns instead.

    A value other than the key's default moves into data.columns with a note, or, for a role the objective does not
    read (`roles`: its Role declarations, None if the objective is unknown), is dropped with a note (those keys were
    ignored then); a default value is dropped quietly: run folders written before data.columns hold all five. A key
    that contradicts data.columns stays, so that validation reports it (old_key_conflict) with any other problem."""
    import logging

    log = logging.getLogger("tunesmith")
    data = dict(data)
    reads = None if roles is None else set(role_names(roles))
    columns = data.get("columns", {})
    columns = dict(columns) if isinstance(columns, dict) else columns  # a malformed one gets its own error
    for key, (role, default) in OLD_COLUMN_KEYS.items():
        value = data.pop(key, default)
        if value == default or not isinstance(columns, dict):
            continue
        if role in columns and columns[role] != value:
            data[key] = value
        elif reads is not None and role not in reads:
            _note(log, key, "data.%s: %r is ignored: objective %r reads no %s column (and data.%s is deprecated); "
                  "remove it", key, value, objective, role, key)
        else:
            columns[role] = value
            _note(log, key, "data.%s is deprecated: read as data.columns.%s = %r. Write `columns: {%s: %s}` under data "
                  "instead", key, role, value, role, value)
    if columns or "columns" in data:
        data["columns"] = columns
    return data


def old_key_conflict(key: str, data: dict) -> str:
    """The problem with an older key left in a raw data section: it names another column than data.columns does."""
    role = OLD_COLUMN_KEYS[key][0]
    return (f"data.{key}: {data.get(key)!r} and data.columns.{role}: {(data.get('columns') or {}).get(role)!r} name "
            f"different columns for the {role} role; keep data.columns.{role} and remove data.{key} (the older spelling)")


def _note(log, key: str, message: str, *args) -> None:
    if key not in _NOTED:
        _NOTED.add(key)
        log.warning(message, *args)
