"""A study: its settings, prompts and models, and the tasks made from the responses.

`init_study` creates a studio folder or extends one: prompts are added by text (a prompt already there is kept),
models by name (a name already there must point at the same run or model), and K may grow. Nothing else changes on
a second `init`, so the responses, tasks and answers already there stay valid and generation only fills the gaps.

Tasks come from responses (`build_tasks`, run after each batch of responses): a 'single' task per response when the
study rates single responses, and 'pair' tasks when it compares: for each prompt, each two models' responses with
the same sample number; in a study of one model, each two of its samples.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tunesmith.errors import TunesmithError
from tunesmith.studio.db import DB_NAME, db_path, hash_token, new_token, now, open_studio, transaction

RATE_KINDS = ("thumbs", "stars", "none")


@dataclass(frozen=True)
class Settings:
    """How the study asks and generates. None in `init_study`'s argument means: as the study has it (or the
    default for a new study)."""

    rate: str = "thumbs"  # single-sided tasks: thumbs up/down, 1-5 stars, or none
    compare: bool = True  # side-by-side tasks
    samples: int = 1  # K responses per prompt and model
    max_new_tokens: int = 96
    temperature: float = 0.7  # 0: greedy (then K > 1 gives K copies of one answer)
    top_p: float = 0.95
    seed: int = 0


def parse_model_spec(item: str, kind: str) -> tuple[str, str]:
    """`SOURCE` or `NAME=SOURCE` -> (name, source); a run is named by its folder, a model by its catalog name,
    hub id or folder name."""
    name, sep, source = item.partition("=")
    if not sep or Path(item).exists():
        name, source = "", item
    if sep and not name.strip():
        raise TunesmithError(f"--{kind} {item!r}: give NAME={kind.upper()} with a name before '=', or just the {kind}")
    source = source.strip()
    path = Path(source).expanduser()
    return (name.strip() or (path.resolve().name if path.is_dir() else source)), source


def check_model(kind: str, source: str) -> None:
    """A run must be a finished run that generates text; a plain model is checked when it loads (it may be a hub id)."""
    if kind != "run":
        return
    from tunesmith.runs import Run

    run = Run(source)
    if run.objective.model_kind != "causal_lm":
        raise TunesmithError(f"--run {source}: a {run.config.objective.name} run generates no text; the studio rates "
                             "what causal language model runs (sft, causal_lm, dpo, kto...) answer")


def read_prompts(source: str, column: str = "prompt", split: str | None = None, limit: int | None = None) -> list[str]:
    """The distinct non-empty texts of one column of any data source tunesmith reads, in order."""
    from tunesmith.data.sources import load_source

    splits = load_source(source)
    name = split or ("train" if "train" in splits else next(iter(splits)))
    if name not in splits:
        raise TunesmithError(f"--split {name!r} is not a split of {source!r}; it has {list(splits)}")
    ds = splits[name]
    if column not in ds.column_names:
        raise TunesmithError(f"--column {column!r} is not a column of {source!r}; its columns are {ds.column_names}: "
                             "name the one that holds the prompts with --column")
    texts = [t.strip() for t in ds[column][:] if isinstance(t, str) and t.strip()]
    texts = list(dict.fromkeys(texts))
    if limit is not None:
        texts = texts[:limit]
    if not texts:
        raise TunesmithError(f"{source!r} column {column!r} holds no text prompts")
    return texts


def init_study(studio_dir: str | Path, prompts: list[str], prompt_source: str, models: list[tuple[str, str, str]],
               rate: str | None = None, compare: bool | None = None, samples: int | None = None,
               max_new_tokens: int | None = None, temperature: float | None = None, top_p: float | None = None,
               seed: int | None = None) -> dict:
    """Create the study or extend it. models: (name, 'run' or 'model', source). Returns what changed and, for a
    new study, the owner token (shown once: only its hash is stored)."""
    studio_dir = Path(studio_dir)
    fresh = not db_path(studio_dir).exists()
    if fresh and studio_dir.exists() and any(studio_dir.iterdir()):
        raise TunesmithError(f"{studio_dir} exists and holds other files (no {DB_NAME}); the studio does not write into "
                             "a folder it did not make: give a new or empty folder")
    given = {"rate": rate, "compare": compare, "samples": samples, "max_new_tokens": max_new_tokens,
             "temperature": temperature, "top_p": top_p, "seed": seed}
    _check_settings(given)
    if fresh and not models:
        raise TunesmithError("a new study needs models to answer: give --run RUN_DIR or --model NAME (repeatable)")
    for _, kind, source in models:
        check_model(kind, source)
    conn = open_studio(studio_dir, create=True)
    try:
        with transaction(conn):
            token = _settings_row(conn, given)
            added_models = _add_models(conn, models)
            before = conn.execute("SELECT count(*) FROM prompts").fetchone()[0]
            conn.executemany("INSERT OR IGNORE INTO prompts (text, source) VALUES (?, ?)",
                             [(p, prompt_source) for p in prompts])
            added_prompts = conn.execute("SELECT count(*) FROM prompts").fetchone()[0] - before
        build_tasks(conn)
        return {"owner_token": token, "new": fresh, "added_prompts": added_prompts, "added_models": added_models,
                **summary(conn)}
    finally:
        conn.close()


def _check_settings(given: dict) -> None:
    problems = []
    if given["rate"] is not None and given["rate"] not in RATE_KINDS:
        problems.append(f"--rate {given['rate']!r}: use one of {', '.join(RATE_KINDS)}")
    if given["samples"] is not None and given["samples"] < 1:
        problems.append(f"--samples {given['samples']}: at least 1")
    if given["max_new_tokens"] is not None and given["max_new_tokens"] < 1:
        problems.append(f"--max-new-tokens {given['max_new_tokens']}: at least 1")
    if given["temperature"] is not None and given["temperature"] < 0:
        problems.append(f"--temperature {given['temperature']}: 0 (greedy) or more")
    if given["top_p"] is not None and not 0 < given["top_p"] <= 1:
        problems.append(f"--top-p {given['top_p']}: in (0, 1]")
    if problems:
        raise TunesmithError(problems)


def _settings_row(conn, given: dict) -> str | None:
    """Insert the settings of a new study (returning its owner token) or check a second init against them."""
    row = conn.execute("SELECT * FROM study").fetchone()
    if row is None:
        values = {k: getattr(Settings(), k) if v is None else v for k, v in given.items()}
        token = new_token()
        conn.execute("INSERT INTO study (id, created_at, rate, compare, samples, max_new_tokens, temperature, top_p, seed, "
                     "owner_token_hash) VALUES (1, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                     (now(), values["rate"], int(values["compare"]), values["samples"], values["max_new_tokens"],
                      values["temperature"], values["top_p"], values["seed"], hash_token(token)))
        return token
    fixed = [f"--{k.replace('_', '-')} {v!r} (the study has {row[k]!r})" for k, v in given.items()
             if v is not None and k != "samples" and (int(v) if k == "compare" else v) != row[k]]
    if fixed:
        raise TunesmithError(["a second init adds prompts, models and samples; it cannot change how the study asks or "
                              "generates (its answers were given that way): leave these options out or start a new "
                              "studio folder: " + "; ".join(fixed)])
    if given["samples"] is not None and given["samples"] < row["samples"]:
        raise TunesmithError(f"--samples {given['samples']}: the study already has {row['samples']} per prompt and model; "
                             "K can only grow")
    if given["samples"] is not None:
        conn.execute("UPDATE study SET samples = ? WHERE id = 1", (given["samples"],))
    return None


def _add_models(conn, models) -> list[str]:
    added = []
    for name, kind, source in models:
        row = conn.execute("SELECT kind, source FROM models WHERE name = ?", (name,)).fetchone()
        if row is None:
            conn.execute("INSERT INTO models (name, kind, source, added_at) VALUES (?, ?, ?, ?)", (name, kind, source, now()))
            added.append(name)
        elif (row["kind"], row["source"]) != (kind, source):
            raise TunesmithError(f"model name {name!r} already names the {row['kind']} {row['source']!r} in this study; "
                                 f"name the new one with --{kind} OTHER_NAME={source}")
    return added


def settings(conn) -> Settings:
    row = conn.execute("SELECT * FROM study").fetchone()
    if row is None:
        raise TunesmithError("the studio has no study settings (it was not made by `tunesmith studio init`)")
    return Settings(rate=row["rate"], compare=bool(row["compare"]), samples=row["samples"],
                    max_new_tokens=row["max_new_tokens"], temperature=row["temperature"], top_p=row["top_p"],
                    seed=row["seed"])


def build_tasks(conn) -> int:
    """Add the tasks that the responses so far make and the study asks for; returns how many were added."""
    s = settings(conn)
    with transaction(conn):
        before = conn.execute("SELECT count(*) FROM tasks").fetchone()[0]
        if s.rate != "none":
            conn.execute("INSERT OR IGNORE INTO tasks (kind, prompt_id, response_a) SELECT 'single', prompt_id, id "
                         "FROM responses ORDER BY prompt_id, model_id, sample")
        if s.compare:
            one_model = conn.execute("SELECT count(*) FROM models").fetchone()[0] == 1
            pairing = ("a.model_id = b.model_id AND a.sample < b.sample" if one_model
                       else "a.model_id < b.model_id AND a.sample = b.sample")  # fixed text, no user input
            conn.execute("INSERT OR IGNORE INTO tasks (kind, prompt_id, response_a, response_b) "
                         "SELECT 'pair', a.prompt_id, a.id, b.id FROM responses a JOIN responses b "
                         f"ON a.prompt_id = b.prompt_id AND {pairing} ORDER BY a.prompt_id, a.model_id, b.model_id, a.sample")
        return conn.execute("SELECT count(*) FROM tasks").fetchone()[0] - before


def summary(conn) -> dict:
    """Counts for the CLI and the owner page."""
    s = settings(conn)
    one = lambda sql: conn.execute(sql).fetchone()[0]  # noqa: E731
    prompts, models = one("SELECT count(*) FROM prompts"), one("SELECT count(*) FROM models")
    return {"prompts": prompts, "models": models, "samples": s.samples, "responses": one("SELECT count(*) FROM responses"),
            "responses_wanted": prompts * models * s.samples,
            "single_tasks": one("SELECT count(*) FROM tasks WHERE kind = 'single'"),
            "pair_tasks": one("SELECT count(*) FROM tasks WHERE kind = 'pair'"),
            "raters": one("SELECT count(*) FROM raters"), "answers": one("SELECT count(*) FROM answers")}
