"""Turning a row into what the model reads: plain text, a prompt and a response, or chat messages."""

from __future__ import annotations

import string
from dataclasses import dataclass, field

from tunesmith.errors import TunesmithError


def fields(template: str) -> list[str]:
    """Column names a format string uses: 'Q: {question}\\nA: {answer}' -> ['question', 'answer']."""
    return [name for _, name, _, _ in string.Formatter().parse(template) if name]


def render(template: str, row: dict) -> str:
    try:
        return template.format(**{k: "" if v is None else v for k, v in row.items()})
    except KeyError as err:
        raise TunesmithError(f"data.template: uses {{{err.args[0]}}} but the data has no column {err.args[0]!r}; columns are {sorted(row)}") from None


def text_of(row: dict, data_cfg) -> str:
    """The text of a classify or causal_lm example."""
    if data_cfg.template:
        return render(data_cfg.template, row)
    return str(row[data_cfg.column("text")])


def sft_template(data_cfg) -> str:
    """The sft template; without one: '{prompt}\\n{response}' over the configured columns."""
    return data_cfg.template or "{%s}\n{%s}" % (data_cfg.column("prompt"), data_cfg.column("response"))


def split_template(data_cfg) -> tuple[str, str]:
    """'Q: {question}\\nA: {answer}' -> ('Q: {question}\\nA: ', '{answer}')."""
    template = sft_template(data_cfg)
    cut = template.rindex("{" + data_cfg.column("response") + "}")
    return template[:cut], template[cut:]


def prompt_fields(data_cfg) -> list[str]:
    return fields(split_template(data_cfg)[0])


def prompt_and_response(row: dict, data_cfg) -> tuple[str, str]:
    head, tail = split_template(data_cfg)
    return render(head, row), render(tail, row)


def probe_row(text: str, data_cfg) -> dict:
    """A probe string as a row: it fills every prompt field of the template (usually there is one)."""
    names = prompt_fields(data_cfg) if data_cfg.template else [data_cfg.column("prompt")]
    return {**{n: text for n in names}, data_cfg.column("response"): ""}


@dataclass(frozen=True)
class Reads:
    """What an objective reads from each row: text columns (column -> the config key that names it), a label
    column, columns that may hold a list of strings (sft reference answers), and columns that may hold chat messages
    (conversational preference data; `chat`: whether the data.format reads them). A null in any of them drops the row."""

    text: dict[str, str]
    label: str | None = None
    lists: tuple[str, ...] = field(default=())
    turns: tuple[str, ...] = field(default=())
    chat: bool = False


def reads(cfg) -> Reads:
    """The columns the config's objective reads from each row, from the roles it declares (Objective.roles, which
    cfg.data.roles holds): a data.template's fields stand for its templated roles (text, or prompt and response)."""
    d = cfg.data
    text = {f: "data.template" for f in fields(d.template)} if d.template else {}
    label, lists, turns = None, [], []
    for role in d.roles:
        column = d.column(role.name)
        if column is None:
            continue
        if role.lists:
            lists.append(column)
        if role.turns:
            turns.append(column)
        if role.kind == "label":
            label = column
        elif role.kind == "text" and not (d.template and role.templated):
            text.setdefault(column, f"data.columns.{role.name}")
    return Reads(text, label, tuple(lists), tuple(turns), d.format != "text")
