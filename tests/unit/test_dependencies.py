"""pyproject.toml declares what src/tunesmith imports, with floors that the installed (tested) versions meet."""

from __future__ import annotations

import ast
import sys
from importlib.metadata import PackageNotFoundError, packages_distributions, version
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")
requirements = pytest.importorskip("packaging.requirements")

ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _name(req: str) -> str:
    return requirements.Requirement(req).name.lower().replace("_", "-")


def _declared() -> dict[str, list[str]]:
    """distribution name -> the groups that declare it ('core' or the extra's name)."""
    out: dict[str, list[str]] = {}
    for req in PROJECT["dependencies"]:
        out.setdefault(_name(req), []).append("core")
    for extra, reqs in PROJECT["optional-dependencies"].items():
        for req in reqs:
            if not req.startswith("tunesmith["):
                out.setdefault(_name(req), []).append(extra)
    return out


def _imported_packages() -> set[str]:
    names = set()
    for path in (ROOT / "src" / "tunesmith").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n != "tunesmith"}


def test_every_imported_package_is_declared():
    dists = packages_distributions()
    declared = _declared()
    missing = []
    for module in sorted(_imported_packages()):
        names = {d.lower().replace("_", "-") for d in dists.get(module, [module])}
        if not names & declared.keys():
            missing.append(f"{module} ({', '.join(sorted(names))})")
    assert not missing, f"imported by src/tunesmith but not declared in pyproject.toml: {missing}"


def test_installed_versions_meet_the_declared_ranges():
    """Core dependencies must be installed and inside their range; an extra's, where installed."""
    wrong = []
    for group, reqs in [("core", PROJECT["dependencies"]), *PROJECT["optional-dependencies"].items()]:
        for text in reqs:
            req = requirements.Requirement(text)
            if req.name == "tunesmith":
                continue
            try:
                installed = version(req.name)
            except PackageNotFoundError:
                if group == "core":
                    wrong.append(f"{text}: not installed")
                continue
            if not req.specifier.contains(installed.split("+")[0], prereleases=True):
                wrong.append(f"{group}: {text}, installed {installed}")
    assert not wrong, wrong


def test_the_libraries_whose_apis_move_have_upper_bounds():
    for name in ("transformers", "peft", "trl"):
        (req,) = [requirements.Requirement(r) for r in PROJECT["dependencies"] if _name(r) == name]
        assert any(s.operator in ("<", "<=", "~=", "==") for s in req.specifier), f"{name} has no upper bound"


def test_optional_parts_are_extras_not_core():
    declared = _declared()
    assert sorted(declared["gguf"]) == ["assets", "gguf"]  # the catalog's GGUF chat model; export --gguf
    assert declared["httpx"] == ["dev"]  # only tests use it
    assert {"scipy", "huggingface-hub"} <= {n for n, groups in declared.items() if "core" in groups}
    extras = PROJECT["optional-dependencies"]
    assert {"qlora", "deepspeed", "trackers", "all"} <= extras.keys()
    # make setup installs these extras
    makefile = (ROOT / "Makefile").read_text()
    wanted = makefile.split('-e ".[')[1].split("]")[0].split(",")
    assert set(wanted) <= extras.keys()
