"""Pydantic's validation errors as one line each that names the key, what was found and what was expected, with a
spelling hint for an unknown key (a run config's, and any other config class's: the constitution's)."""

from __future__ import annotations

from typing import Any

from tunesmith.config_io import suggest
from tunesmith.data.roles import OLD_COLUMN_KEYS, old_key_conflict
from tunesmith.registries import methods, objectives


def describe_errors(err, raw: dict, root) -> list[str]:
    """Turn pydantic errors into one line each that names the key, what was found and what was expected. `root`:
    the model that was validated (RunConfig, or another config class), whose fields suggest a fix for a misspelt key."""
    problems = []
    for e in err.errors():
        loc = [str(p) for p in e["loc"]]
        # A tagged union adds the tag ('lora') after the section name: drop it from the key path.
        if len(loc) > 1 and loc[0] in ("method", "objective") and isinstance(raw.get(loc[0]), dict):
            if loc[1] == raw[loc[0]].get("name"):
                loc = [loc[0]] + loc[2:]
        key = ".".join(loc) or "(top level)"
        kind = e["type"]
        if kind == "extra_forbidden" and len(loc) == 2 and loc[0] == "data" and loc[1] in OLD_COLUMN_KEYS:
            problems.append(old_key_conflict(loc[1], raw["data"]))  # left by RunConfig._old_column_keys
        elif kind == "extra_forbidden":
            parent = _section_fields(loc[:-1], raw, root)
            hint = _other_section(loc, raw, root) or suggest(loc[-1], parent)
            problems.append(f"{key}: unknown key{hint}; remove it or fix its spelling")
        elif kind == "missing":
            problems.append(f"{key}: required but missing; add it to the config")
        elif kind == "union_tag_invalid":
            section = loc[0]
            names = sorted(methods() if section == "method" else objectives())
            found = (raw.get(section) or {}).get("name")
            problems.append(f"{section}.name: {found!r} is not a known {section}; expected one of {names}")
        elif kind == "union_tag_not_found":
            names = sorted(methods() if loc[0] == "method" else objectives())
            problems.append(f"{loc[0]}.name: required; expected one of {names}")
        else:
            found = e.get("input")
            problems.append(f"{key}: {e['msg'].lower()}, found {found!r}")
    return problems


def _other_section(loc: list[str], raw: dict, root) -> str:
    """'; it belongs in S: ...' for a key written at the top level or in one section that is an option of exactly one
    other section (data.rating_range is objective.rating_range), else ''."""
    if len(loc) > 2:
        return ""
    homes = [s for s in getattr(root, "model_fields", {}) if s != loc[0] and loc[-1] in _section_fields([s], raw, root)]
    return f"; it belongs in {homes[0]}: write it as {homes[0]}.{loc[-1]}" if len(homes) == 1 else ""


def _section_fields(loc: list[str], raw: dict, root: Any) -> set[str]:
    model: Any = root
    for part in loc:
        if part in ("method", "objective") and model is root and {"method", "objective"} <= set(root.model_fields):
            registry = methods() if part == "method" else objectives()
            name = (raw.get(part) or {}).get("name")
            model = registry[name].config_cls if name in registry else None
        else:
            field = getattr(model, "model_fields", {}).get(part)
            model = field.annotation if field else None
    return set(getattr(model, "model_fields", {}) or [])
