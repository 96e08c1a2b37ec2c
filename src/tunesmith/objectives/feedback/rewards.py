"""Rewards for the `rl` objective: a reward-model run, a Python function, or a weighted sum of both, plus a few
rule-based functions that ship with tunesmith.

A reward takes the prompts (the text the person wrote, before any chat template) and the completions, and returns
one float per completion. `objective.reward` names its sources:
- `run: runs/reward` — a finished run whose objective scores text (`tunesmith.runs.Run.score`, a reward model);
- `function: "module:function"` — `function(prompts: list[str], completions: list[str]) -> list[float]`, where
  module is an importable module name or a `.py` file path;
- both, summed with `weights: {run: 1.0, function: 1.0}`.

Trust: tunesmith never runs code because a file read off disk says so. The built-in functions of this module
(`tunesmith.objectives.feedback.rewards:length`, `:positive`, `:distinct`, `:sentence_end`) always run; any other module is
imported only when the person running the command passed `--trust-remote-code` (trust_remote_code=True in Python).
`validate` never imports it: it finds the module's file and reads its source for the function's name.

This module imports no torch: config checks use it.
"""

from __future__ import annotations

import ast
import functools
import importlib
import importlib.machinery
import importlib.util
import logging
import math
import sys
import traceback
from pathlib import Path
from typing import Callable

from tunesmith.errors import TunesmithError

log = logging.getLogger("tunesmith")
KEY = "objective.reward"
BUILTIN_MODULE = __name__  # tunesmith.objectives.feedback.rewards

# ---------------------------------------------------------------------------------------------
# Built-in rule-based rewards: (prompts, completions) -> one float per completion, each in [-1, 1]

POSITIVE = frozenset("""good great excellent wonderful fine best better love loved lovely enjoy enjoyed enjoyable
fun funny charming delightful beautiful brilliant superb moving touching powerful fresh smart clever witty warm
entertaining engaging gripping memorable masterpiece perfect pleasure amazing remarkable rich solid strong
terrific thoughtful compelling satisfying hilarious impressive""".split())
NEGATIVE = frozenset("""bad worse worst awful terrible boring bored dull poor weak mess messy stupid dumb silly hate
hated tedious tiresome lame flat bland predictable pointless waste wasted ugly annoying painful disappointing
disappointment mediocre forgettable clumsy unfunny lifeless shallow empty failure fails failed""".split())


def _words(text: str) -> list[str]:
    return [w.strip(".,;:!?\"'()[]").lower() for w in text.split() if w.strip(".,;:!?\"'()[]")]


def length(prompts: list[str], completions: list[str]) -> list[float]:
    """Longer completions, up to 32 words: min(words / 32, 1)."""
    return [min(len(_words(c)) / 32, 1.0) for c in completions]


def positive(prompts: list[str], completions: list[str]) -> list[float]:
    """Positive sentiment by word lists: (positive - negative words) / (positive + negative words), 0 with neither."""
    out = []
    for c in completions:
        words = _words(c)
        pos, neg = sum(w in POSITIVE for w in words), sum(w in NEGATIVE for w in words)
        out.append((pos - neg) / (pos + neg) if pos + neg else 0.0)
    return out


def distinct(prompts: list[str], completions: list[str]) -> list[float]:
    """Distinct words / words: 1 without repetition, near 0 for a loop of one word (0 for an empty completion)."""
    return [len(set(w)) / len(w) if (w := _words(c)) else 0.0 for c in completions]


def sentence_end(prompts: list[str], completions: list[str]) -> list[float]:
    """1 when the completion ends a sentence (., ! or ?, before closing quotes or brackets), else 0."""
    return [1.0 if c.strip().rstrip("\"')]").endswith((".", "!", "?")) else 0.0 for c in completions]


BUILTINS: dict[str, Callable] = {f.__name__: f for f in (length, positive, distinct, sentence_end)}

# ---------------------------------------------------------------------------------------------
# Config-time checks: the spelling, the module's file and the function's name, without running anything


OLD_BUILTIN_MODULE = "tunesmith.objectives.rewards"  # before the objectives were split into families


def split_spec(spec: str) -> tuple[str, str]:
    module, _, name = spec.rpartition(":")
    module = module.strip()
    if module == OLD_BUILTIN_MODULE:
        log.warning("%s: %r is the old name of the built-in rewards' module; write %s:%s", KEY, spec, BUILTIN_MODULE,
                    name.strip())
        module = BUILTIN_MODULE
    return module, name.strip()


def is_builtin(spec: str) -> bool:
    module, name = split_spec(spec)
    return module == BUILTIN_MODULE and name in BUILTINS


def spec_problems(spec: str) -> list[str]:
    """'module:function' spelling, and a built-in's name; no file is read."""
    module, name = split_spec(spec)
    example = f"e.g. '{BUILTIN_MODULE}:length' or 'my_rewards.py:score'"
    if not module or not name.isidentifier():
        return [f"{KEY}.function: {spec!r} is not 'module:function'; {example}"]
    if module == BUILTIN_MODULE and name not in BUILTINS:
        return [f"{KEY}.function: {BUILTIN_MODULE} has no reward {name!r}; its rewards are {sorted(BUILTINS)}"]
    return []


def _module_file(module: str) -> Path | None:
    """The source file of `module` (a dotted name searched on sys.path and the working folder, or a .py path),
    found without importing it or its parent packages; None if there is none."""
    if module.endswith(".py"):
        path = Path(module).expanduser()
        return path if path.is_file() else None
    search: list[str] | None = [*sys.path, str(Path.cwd())]
    spec = None
    for part in module.split("."):
        spec = importlib.machinery.PathFinder.find_spec(part, search)
        if spec is None:
            return None
        search = list(spec.submodule_search_locations or [])
    origin = getattr(spec, "origin", None)
    return Path(origin) if origin and origin.endswith(".py") else None


def _defines(source: str, name: str) -> bool:
    """Whether Python source defines `name` at its top level (a def, an assignment or an import)."""
    for node in ast.parse(source).body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == name:
            return True
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                return True
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            if any((a.asname or a.name.split(".")[0]) == name for a in node.names):
                return True
    return False


def locate_problems(spec: str) -> list[str]:
    """The module's file exists and defines the function (validate and train check this before anything runs)."""
    if spec_problems(spec) or is_builtin(spec):
        return spec_problems(spec)
    module, name = split_spec(spec)
    path = _module_file(module)
    if path is None:
        return [f"{KEY}.function: cannot find module {module!r} (searched a .py path, the working folder and "
                "sys.path); give an importable module name or the path of a .py file"]
    try:
        found = _defines(path.read_text(encoding="utf-8"), name)
    except (OSError, UnicodeDecodeError, SyntaxError) as err:
        return [f"{KEY}.function: cannot read {path} ({type(err).__name__}: {err}); fix the file"]
    if not found:
        return [f"{KEY}.function: {path} defines no {name!r} at its top level; define "
                f"def {name}(prompts, completions) -> list[float] there, or fix the name"]
    return []


def run_problems(run: str) -> list[str]:
    """A reward run that exists must be a run whose objective scores text (read from its config.yaml, no torch).
    A folder that does not exist yet passes here (a pipeline stage trains it first); loading it says so later."""
    from tunesmith.registries import objectives
    from tunesmith.runs.folder import objective_of_run

    try:
        name = objective_of_run(run)
    except TunesmithError as err:
        return [f"{KEY}.run: {err}"]
    if name is None and not (Path(run).expanduser() / "config.yaml").is_file():
        return []
    objective = objectives().get(name) if name else None
    if objective is None or objective.score is None:
        return [f"{KEY}.run: {run!r} is a {name!r} run, not a reward model; name a run trained with "
                "objective: reward (its score is the reward), or use reward.function"]
    return []


# ---------------------------------------------------------------------------------------------
# Loading: the sources of objective.reward as one callable


def load_problems(spec: str, trusted_code: bool) -> list[str]:
    """What stops `spec` from loading (untrusted, missing, failing to import), found before a run folder is written."""
    try:
        load_function(spec, trusted_code)
    except TunesmithError as err:
        return err.problems
    return []


def load_function(spec: str, trusted_code: bool) -> Callable:
    """The function `spec` names; a module other than this one only with trusted_code (--trust-remote-code)."""
    module, name = split_spec(spec)
    if is_builtin(spec):
        return BUILTINS[name]
    problems = locate_problems(spec)
    if problems:
        raise TunesmithError(problems)
    if not trusted_code:
        raise TunesmithError(
            f"{KEY}.function: {spec!r} is your own Python code, and tunesmith never runs code because a config "
            f"says so. If you trust {module!r}, pass --trust-remote-code on the command line (trust_remote_code=True "
            f"in Python); the built-in rewards ({', '.join(f'{BUILTIN_MODULE}:{n}' for n in BUILTINS)}) need no flag")
    fn = getattr(_import(module), name, None)
    if not callable(fn):
        raise TunesmithError(f"{KEY}.function: {module}.{name} is not a function; define "
                             f"def {name}(prompts, completions) -> list[float]")
    return fn


@functools.lru_cache(maxsize=16)
def _import(module: str):
    """The user's module, run once per process (a .py path as well as a module name)."""
    try:
        if module.endswith(".py"):
            path = Path(module).expanduser().resolve()
            loader_spec = importlib.util.spec_from_file_location(f"tunesmith_reward_{path.stem}", path)
            mod = importlib.util.module_from_spec(loader_spec)
            loader_spec.loader.exec_module(mod)
            return mod
        cwd = str(Path.cwd())
        added = cwd not in sys.path
        if added:  # `module` may live in the working folder, as `python -m` would find it
            sys.path.append(cwd)
        try:
            return importlib.import_module(module)
        finally:
            if added:
                sys.path.remove(cwd)
    except Exception as err:  # noqa: BLE001 - any failure of the user's module is reported as theirs
        raise TunesmithError(f"{KEY}.function: importing {module!r} failed: {_where(err)}; fix the module") from None


def _where(err: BaseException) -> str:
    """'ValueError: bad (my_rewards.py:12)': the error and the innermost line that raised it."""
    frames = traceback.extract_tb(err.__traceback__)
    place = f" ({Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    return f"{type(err).__name__}: {err}{place}"


class Source:
    """One named reward source: calls it and checks what it returns (one finite number per completion)."""

    def __init__(self, name: str, key: str, weight: float, score: Callable[[list[str], list[str]], list]):
        self.name, self.key, self.weight, self._score = name, key, weight, score

    def __call__(self, prompts: list[str], completions: list[str]) -> list[float]:
        try:
            values = self._score(list(prompts), list(completions))
        except TunesmithError:
            raise
        except Exception as err:  # noqa: BLE001 - the user's function failed: say where, no traceback
            raise TunesmithError(f"{self.key}: {self.name} raised {_where(err)}; fix it so that it returns one "
                                 "number per completion") from None
        try:
            values = [float(v) for v in values]
        except (TypeError, ValueError):
            raise TunesmithError(f"{self.key}: {self.name} returned {str(values)[:200]}, not a list of numbers; "
                                 "return one float per completion") from None
        if len(values) != len(completions):
            raise TunesmithError(f"{self.key}: {self.name} returned {len(values)} values for {len(completions)} "
                                 "completions; return exactly one number per completion, in order")
        bad = [i for i, v in enumerate(values) if not math.isfinite(v)]
        if bad:
            raise TunesmithError(f"{self.key}: {self.name} returned {values[bad[0]]} for completion {bad[0]} "
                                 f"({len(bad)} values not finite); return finite numbers")
        return values


class Reward:
    """objective.reward as one callable: (prompts, completions) -> the weighted sum of its sources' rewards.
    `sources` are the parts, for trainers that log each (TRL's reward_funcs with reward_weights)."""

    def __init__(self, sources: list[Source]):
        self.sources = sources

    def __call__(self, prompts: list[str], completions: list[str]) -> list[float]:
        total = [0.0] * len(completions)
        for source in self.sources:
            total = [t + source.weight * v for t, v in zip(total, source(prompts, completions))]
        return total


def build_reward(reward_cfg, trusted_code: bool) -> Reward:
    """The sources objective.reward names, loaded: the reward run's model on this device, the function imported."""
    sources = []
    if reward_cfg.run:
        problems = run_problems(reward_cfg.run)
        if problems:
            raise TunesmithError(problems)
        run = _reward_run(str(Path(reward_cfg.run).expanduser().resolve()), trusted_code, _stamp(reward_cfg.run))

        def score(prompts, completions):
            """The run's score; an empty completion (EOS at once) has no text to score: the batch's lowest."""
            kept = [i for i, c in enumerate(completions) if c.strip()]
            values = run.score([{"prompt": prompts[i], "response": completions[i]} for i in kept]) if kept else []
            lowest = min(values, default=0.0)
            out = [lowest] * len(completions)
            for i, v in zip(kept, values):
                out[i] = v
            return out

        sources.append(Source("reward_run", f"{KEY}.run ({reward_cfg.run})", reward_cfg.weights.run, score))
    if reward_cfg.function:
        fn = load_function(reward_cfg.function, trusted_code)
        sources.append(Source(split_spec(reward_cfg.function)[1], f"{KEY}.function ({reward_cfg.function})",
                              reward_cfg.weights.function, fn))
    return Reward(sources)


def _stamp(run: str) -> float:
    """Changes when the run is trained again (its manifest is written last)."""
    manifest = Path(run).expanduser() / "manifest.json"
    return manifest.stat().st_mtime if manifest.exists() else 0.0


@functools.lru_cache(maxsize=1)
def _reward_run(path: str, trusted_code: bool, stamp: float):
    """The reward run, its model loaded once for the base evaluation, training and the tuned evaluation."""
    from tunesmith.runs import Run

    return Run(path, trust_remote_code=trusted_code)  # an unfinished or damaged run raises its own message
