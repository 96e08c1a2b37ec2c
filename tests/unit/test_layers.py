"""The house keeps its shape: every import in src/ (function-level ones too) points down the layers written in
ARCHITECTURE.md, and no modules import each other in a circle. Reads the source with ast; imports nothing."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "tunesmith"


def modules() -> dict[str, Path]:
    out = {}
    for path in SRC.rglob("*.py"):
        parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def imports(mods: dict[str, Path]) -> dict[str, dict[str, int]]:
    """module -> {imported tunesmith module: line}, function-level imports and `from pkg import submodule` included."""
    edges: dict[str, dict[str, int]] = {m: {} for m in mods}
    for m, path in mods.items():
        here = m.split(".") if path.name == "__init__.py" else m.split(".")[:-1]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(here[: len(here) - node.level + 1] + ([base] if base else []))
                targets = [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for t in targets:
                while t and t not in mods:
                    t = t.rpartition(".")[0]
                if t and t != m and t.startswith("tunesmith"):
                    edges[m].setdefault(t, node.lineno)  # `from pkg import submodule`: an edge to the submodule
    return edges


def read_architecture() -> tuple[list[list[str]], dict[tuple[str, str], str]]:
    """The ```layers block (one layer a line, top first) and the ```seams block ('a -> b: reason')."""
    text = (ROOT / "ARCHITECTURE.md").read_text()
    layers_text = re.search(r"```layers\n(.*?)```", text, re.S).group(1)
    layers = [line.split("#")[0].split() for line in layers_text.splitlines() if line.split("#")[0].strip()]
    seams = {}
    seams_text = re.search(r"```seams\n(.*?)```", text, re.S)
    for line in (seams_text.group(1).splitlines() if seams_text else []):
        if line.strip():
            edge, _, reason = line.partition(":")
            a, _, b = edge.partition("->")
            seams[(a.strip(), b.strip())] = reason.strip()
    return layers, seams


def layer_of(module: str, layers: list[list[str]]) -> tuple[int, str]:
    """(layer index, the unit it belongs to): the longest name in the layer table that is the module or its package."""
    rel = module.removeprefix("tunesmith").lstrip(".") or "tunesmith"
    best = None
    for i, names in enumerate(layers):
        for name in names:
            if (rel == name or rel.startswith(name + ".")) and (best is None or len(name) > len(best[1])):
                best = (i, name)
    assert best is not None, f"{module} is in no layer of ARCHITECTURE.md's layer table: add it where it belongs"
    return best


def test_every_module_has_a_layer():
    layers, _ = read_architecture()
    for m in modules():
        layer_of(m, layers)


def test_imports_point_down_the_layers():
    mods = modules()
    layers, seams = read_architecture()
    wrong = []
    for m, targets in imports(mods).items():
        i, unit = layer_of(m, layers)
        for t, line in targets.items():
            j, other = layer_of(t, layers)
            if other == unit or j > i:
                continue  # inside one package or module, or down
            short = (m.removeprefix("tunesmith."), t.removeprefix("tunesmith."))
            if short in seams:
                continue
            wrong.append(f"{mods[m].relative_to(ROOT)}:{line}: {short[0]} (layer {i}: {unit}) imports {short[1]} "
                         f"(layer {j}: {other})")
    assert not wrong, "imports against the layer order of ARCHITECTURE.md:\n" + "\n".join(wrong)


def test_every_seam_is_used_and_has_a_reason():
    mods = modules()
    _, seams = read_architecture()
    edges = imports(mods)
    for (a, b), reason in seams.items():
        assert reason, f"seam {a} -> {b} has no reason"
        assert f"tunesmith.{b}" in edges.get(f"tunesmith.{a}", {}), f"seam {a} -> {b} is listed but not used: drop it"
    assert len(seams) <= 5


def test_no_import_circle():
    edges = {m: set(t) for m, t in imports(modules()).items()}
    index, low, stack, on, circles = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            circle = []
            while True:
                w = stack.pop()
                on.discard(w)
                circle.append(w)
                if w == v:
                    break
            if len(circle) > 1:
                circles.append(sorted(circle))

    for v in edges:
        if v not in index:
            visit(v)
    assert not circles, "modules that import each other in a circle:\n" + "\n".join(", ".join(c) for c in circles)


def test_lookups_by_name_live_in_registries_only():
    """importlib.import_module('tunesmith....') is how a lower layer reaches up (registries.py, documented there and
    in ARCHITECTURE.md); anywhere else it would hide an import from the checks above."""
    found = []
    for m, path in modules().items():
        if m == "tunesmith.registries":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
                    and node.args and isinstance(node.args[0], ast.Constant) and str(node.args[0].value).startswith("tunesmith")):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not found, "import_module of a tunesmith module outside registries.py: " + ", ".join(found)


def test_files_and_functions_stay_small():
    too_long = []
    for path in modules().values():
        text = path.read_text()
        lines = text.count("\n") + 1
        if lines > 400:
            too_long.append(f"{path.relative_to(ROOT)}: {lines} lines (at most 400)")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > 80:
                    too_long.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.name} is {n} lines (at most 80)")
    assert not too_long, "split these:\n" + "\n".join(too_long)
