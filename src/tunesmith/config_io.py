"""Config files and command-line overrides as plain data: YAML in (safe_load, errors with line and column), dotted
`key=value` overrides applied to a nested dict. No schema here: tunesmith.config validates the result."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tunesmith.errors import TunesmithError


def parse_override(text: str) -> tuple[list[str], Any]:
    """'train.learning_rate=1e-4' -> (['train', 'learning_rate'], 0.0001). Values are parsed as YAML."""
    if "=" not in text:
        raise TunesmithError(f"override {text!r}: expected KEY=VALUE, e.g. train.learning_rate=1e-4")
    key, value = text.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise TunesmithError(f"override {text!r}: the key is empty; expected e.g. method.r=8")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        parsed = value
    if isinstance(parsed, str):
        try:  # YAML 1.1 reads '1e-4' as a string; take scientific notation as people write it.
            parsed = float(parsed)
        except ValueError:
            pass
    return parts, parsed


SWITCHED = ("method", "objective")  # sections chosen by their name: `method=full` is short for `method.name=full`


def override_items(overrides: dict[str, Any] | list[str] | None) -> list[tuple[list[str], Any]]:
    """[(key parts, value)] of overrides given as {'method.r': 8} or ['method.r=8']; `method=full` becomes
    (['method'], {'name': 'full'})."""
    if isinstance(overrides, dict):
        items = [(k.split("."), v) for k, v in overrides.items()]
    else:
        items = [parse_override(o) for o in overrides or []]
    return [(parts, {"name": value} if len(parts) == 1 and parts[0] in SWITCHED and isinstance(value, str) else value)
            for parts, value in items]


def switches(raw: dict, overrides) -> dict[str, tuple[str, str]]:
    """{section: (old name, new name)} for each of method/objective whose name the overrides change."""
    found = {}
    for parts, value in override_items(overrides):
        new = value.get("name") if len(parts) == 1 and isinstance(value, dict) else value if parts[1:] == ["name"] else None
        old = (raw.get(parts[0]) or {}).get("name") if isinstance(raw.get(parts[0]), dict) else None
        if parts[0] in SWITCHED and isinstance(new, str) and old and new != old:
            found[parts[0]] = (old, new)
    return found


def apply_overrides(raw: dict, overrides: dict[str, Any] | list[str] | None) -> dict:
    """Set dotted keys in a nested dict (a copy): {'method.r': 8} or ['method.r=8']."""
    import copy

    raw = copy.deepcopy(raw)
    for parts, value in override_items(overrides):
        node = raw
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                node[part] = {}
            node = node[part]
        node[parts[-1]] = value
    return raw


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    if path.is_dir():
        inside = path / "config.yaml"
        run = f" (a run folder: its config is {inside})" if inside.is_file() else ""
        raise TunesmithError(f"{path} is a folder{run}, not a config file; pass the path to a YAML file")
    if not path.is_file():
        raise TunesmithError(f"config file {path} does not exist; pass the path to a YAML file, e.g. configs/sentiment-lora.yaml")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise TunesmithError(f"{path}{where}: not valid YAML ({getattr(err, 'problem', err)}); fix the syntax") from None
    if not isinstance(raw, dict):
        raise TunesmithError(f"{path}: expected a mapping with sections model, data, method, objective; found {type(raw).__name__}")
    return raw


def suggest(word: str, options: set[str] | list[str]) -> str:
    """'; did you mean X?' for the closest option to a misspelt word, or ''."""
    import difflib

    close = difflib.get_close_matches(word, list(options), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def beside(value: str, config_path: Path) -> Path:
    """A path as written, or relative to the config file's folder when it is not found as written."""
    p = Path(value).expanduser()
    return p if p.is_absolute() or p.exists() else config_path.parent / p
