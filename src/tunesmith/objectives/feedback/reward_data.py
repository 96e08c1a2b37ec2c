"""The reward objective's data: which shape it has (pairs or ratings), what is wrong with it, the task facts
(the rating scale) and the token ids of a prompt and a response, the same in training, evaluation and `score`.

- pairs: prompt (optional), chosen, rejected, margin (optional): one row compares two responses.
- ratings: prompt (optional), response, rating: one row rates one response, by a number (1-5, a score) or by a
  thumbs up/down value (two distinct values: 0/1, true/false, up/down, or two words with objective.positive).

A prompt and a response are joined as the base model reads two texts: a tokenizer with a separator token (BERT and
its kin) reads them as a text pair, `tokenizer(prompt, response)`; with a chat data.format (every one but text) they
become a user and an assistant message through the chat template, or, in conversational data, the prompt's messages
and the response's assistant messages as they are; otherwise `prompt + "\\n" + response` plus the EOS token (a decoder
scores its last token, so the EOS marks where the response ends, as TRL does).
"""

from __future__ import annotations

from tunesmith.data.chat import is_chat, is_turns, messages_of, text_of
from tunesmith.data.tokenize import truncate
from tunesmith.errors import TunesmithError
from tunesmith.objectives.feedback import checks, ratings
from tunesmith.objectives.feedback.ratings import as_number, rating_scale, value_key

PAIR_METRICS = ("reward_accuracy", "reward_margin")
RATING_METRICS = ("pearson", "spearman", "accuracy")


def data_shape(cfg, columns: list[str]) -> str | None:
    """'pairs' or 'ratings', from objective.data_shape or else from the columns (chosen and rejected: pairs; response
    and rating: ratings; a role named in data.columns tells which was meant); None when neither fits."""
    if cfg.objective.data_shape != "auto":
        return cfg.objective.data_shape
    d = cfg.data
    if d.column("chosen") in columns and d.column("rejected") in columns:
        return "pairs"
    if d.column("response") in columns and d.column("rating") in columns:
        return "ratings"
    if {"chosen", "rejected", "margin"} & set(d.columns):
        return "pairs"
    if {"response", "rating"} & set(d.columns):
        return "ratings"
    return None


def roles_in_use(cfg, shape: str, columns: list[str]) -> dict[str, str]:
    """{role: column} that training reads: the shape's two roles, and prompt and margin when the data has them."""
    d = cfg.data
    needed = ["chosen", "rejected"] if shape == "pairs" else ["response", "rating"]
    optional = ["prompt", "margin"] if shape == "pairs" else ["prompt"]
    used = {role: d.column(role) for role in needed}
    used.update({role: d.column(role) for role in optional if role in d.columns or d.column(role) in columns})
    return used


# ---------------------------------------------------------------------------------------------
# Checks: every problem with the data, each naming the column and a row's text, before anything trains


def check(cfg, dd, tokenizer) -> list[str]:
    d = cfg.data
    columns = dd["train"].column_names
    shape = data_shape(cfg, columns)
    if shape is None:
        return [f"data: objective 'reward' reads pairs (columns chosen, rejected; prompt and margin optional) or ratings "
                f"(columns response, rating; prompt optional), and {d.source!r} has the columns {columns}; name yours "
                "in data.columns, e.g. {chosen: better_answer, rejected: worse_answer} or {response: text, rating: stars}"]
    problems = []
    used = roles_in_use(cfg, shape, columns)
    for split, ds in dd.items():
        for role, column in used.items():
            if column not in ds.column_names:
                problems.append(f"data.columns.{role}: column {column!r} is not in the {split} data of {d.source!r} "
                                f"({shape} data needs it); columns are {ds.column_names}. Name the right column in "
                                f"data.columns.{role}" + (" or set objective.data_shape" if cfg.objective.data_shape == "auto" else ""))
    if problems:
        return problems
    problems += checks.chat_template_problem(cfg, tokenizer)
    for split, ds in dd.items():
        where = f"{d.source} ({split} split)"
        problems += checks.conversation_problems(cfg, ds, split, {r: c for r, c in used.items()
                                                                  if r in ("prompt", "chosen", "rejected", "response")})
        for role in ("chosen", "rejected", "response"):
            if role in used:
                problems += _empty_texts(ds, used[role], role, where)
        if shape == "pairs":
            problems += _same_pairs(ds, used["chosen"], used["rejected"], where)
            if "margin" in used:
                problems += ratings.not_numbers(ds[used["margin"]][:], where, used["margin"], source_rows(ds),
                                                "margin", "fix or remove those rows")
    if shape == "ratings":
        problems += _check_ratings(cfg, dd, used["rating"], report=not problems)
    metric = (cfg.train.metric_for_best_model or "").removeprefix("eval_")
    other = RATING_METRICS if shape == "pairs" else PAIR_METRICS
    if metric in other:
        problems.append(f"train.metric_for_best_model: {metric!r} is measured on {'ratings' if shape == 'pairs' else 'pairs'}, "
                        f"and this data holds {shape}; use one of {list(PAIR_METRICS if shape == 'pairs' else RATING_METRICS)} "
                        "or eval_loss")
    return problems


def short_value(value) -> str:
    from tunesmith.data.clean import short_value  # imports datasets: not when a config is read

    return short_value(value)


def _first(rows: list[int], values: list) -> str:
    return f"{len(rows)} row{'s' if len(rows) > 1 else ''}, the first {short_value(values[rows[0]])}"


def _empty_texts(ds, column: str, role: str, where: str) -> list[str]:
    texts = ds[column][:]
    empty = [i for i, t in enumerate(texts) if (isinstance(t, str) or is_turns(t)) and not text_of(t).strip()]
    if not empty:
        return []
    other = next((c for c in ds.column_names if c != column and isinstance(ds[empty[0]][c], str) and ds[empty[0]][c].strip()), None)
    beside = f" (beside {other} {short_value(ds[empty[0]][other])})" if other else ""
    return [f"{where}: column {column!r} ({role}) is empty on {len(empty)} row{'s' if len(empty) > 1 else ''}{beside}; "
            "a reward model scores a response, so give every row one, or remove those rows"]


def _same_pairs(ds, chosen: str, rejected: str, where: str) -> list[str]:
    a, b = ds[chosen][:], ds[rejected][:]
    same = [i for i, (x, y) in enumerate(zip(a, b)) if (isinstance(x, str) or is_turns(x))
            and text_of(x).strip() == text_of(y).strip()]
    if not same:
        return []
    return [f"{where}: chosen ({chosen!r}) and rejected ({rejected!r}) are the same text on {_first(same, [text_of(x) for x in a])}; such a "
            "pair teaches nothing (the loss cannot separate them): remove those rows or fix the data"]


def source_rows(ds):
    """positions in a split -> 'source rows 3, 8' (numbered from 1 as they stand in the data source)."""
    from tunesmith.data.clean import name_rows

    return lambda idx: f"source {name_rows(ds, idx)}"


def _check_ratings(cfg, dd, column: str, report: bool) -> list[str]:
    """The training ratings' scale, the held-out ratings against it; with report (no other problem found), what
    validate shows of them (ratings.report)."""
    where = {split: f"{cfg.data.source} ({split} split)" for split in dd}
    rows = {split: source_rows(ds) for split, ds in dd.items()}
    values = {split: ds[column][:] for split, ds in dd.items()}
    scale, problems = rating_scale(cfg, values["train"], where["train"], rows["train"])
    if scale:
        problems += ratings.check_values(cfg, values["eval"], scale, where["eval"], column, rows["eval"])
    else:  # every value that can never train, in both splits at once
        problems += ratings.faults(values["eval"], where["eval"], column, rows["eval"])
    if scale and report and not problems:
        ratings.report(cfg, values, scale, column, rows)
    return problems


def setup(cfg, dd) -> dict:
    """Task facts stored in manifest.json: the shape, whether a prompt and a margin are read, how prompt and response
    are joined, and for ratings the scale (the normalization of numeric ratings over the training split)."""
    columns = dd["train"].column_names
    shape = data_shape(cfg, columns)
    used = roles_in_use(cfg, shape, columns)
    task = {"shape": shape, "prompt": "prompt" in used}
    if shape == "pairs":
        return {**task, "margin": "margin" in used}
    scale, problems = rating_scale(cfg, dd["train"][used["rating"]][:], f"{cfg.data.source} (train split)")
    if problems:
        raise TunesmithError(problems)
    return {**task, **scale}


def target(value, task: dict) -> float:
    """What a ratings row trains toward: the normalized rating, or 1.0 / 0.0 for thumbs up / down."""
    if task["rating"] == "thumbs":
        return 1.0 if value_key(value) == task["positive"] else 0.0
    return (as_number(value) - task["mean"]) / (task["std"] or 1.0)


# ---------------------------------------------------------------------------------------------
# Token ids: one function joins a prompt and a response for training, evaluation and score()


def uses_text_pair(tokenizer, data_cfg) -> bool:
    """BERT-style tokenizers (with a separator token) read prompt and response as a text pair."""
    return not is_chat(data_cfg) and tokenizer.sep_token is not None


def encode(tokenizer, data_cfg, prompt, response) -> dict:
    """input_ids (and token_type_ids where the tokenizer makes them) of a prompt and a response, cut to
    data.max_length on data.truncation_side; full_length: the tokens before the cut. With a chat data.format the
    prompt and the response may be lists of messages (conversational data); with text they are texts."""
    prompt = prompt or None
    if not is_chat(data_cfg) and (is_turns(prompt) or is_turns(response)):
        raise TunesmithError(f"data.format: 'text' reads prompts and responses as text, and this row holds chat "
                             f"messages ({text_of(response)[:60]!r}); set data.format: chat for conversational data")
    max_length = data_cfg.max_length
    tokenizer.truncation_side = data_cfg.truncation_side
    if uses_text_pair(tokenizer, data_cfg):
        args = (prompt, response) if prompt is not None else (response,)
        full = len(tokenizer(*args)["input_ids"])
        enc = tokenizer(*args, truncation=True, max_length=max_length)
        out = {"input_ids": list(enc["input_ids"]), "full_length": full}
        if "token_type_ids" in enc:
            out["token_type_ids"] = list(enc["token_type_ids"])
        return out
    if is_chat(data_cfg):
        system = [{"role": "system", "content": data_cfg.system_prompt}] if data_cfg.system_prompt else []
        user = messages_of(prompt, data_cfg, "user") if prompt is not None else system
        ids = list(tokenizer.apply_chat_template(user + messages_of(response, data_cfg, "assistant"),
                                                 return_dict=False))
    else:
        ids = tokenizer(response if prompt is None else f"{prompt}\n{response}")["input_ids"]
        if tokenizer.eos_token_id is not None and ids[-1:] != [tokenizer.eos_token_id]:
            ids = ids + [tokenizer.eos_token_id]
    return {"input_ids": truncate(ids, max_length, data_cfg.truncation_side), "full_length": len(ids)}


def tokenize(ds, tokenizer, cfg, task):
    """pairs: chosen_ids and rejected_ids (TRL's RewardTrainer takes them as they are), their token type ids where
    the tokenizer makes them, and margin; ratings: input_ids and the float label (target())."""
    columns = ds.column_names
    used = roles_in_use(cfg, task["shape"], columns)
    prompt_col = used.get("prompt")

    def pair(row):
        prompt = row[prompt_col] if prompt_col else None
        chosen = encode(tokenizer, cfg.data, prompt, row[used["chosen"]])
        rejected = encode(tokenizer, cfg.data, prompt, row[used["rejected"]])
        out = {"chosen_ids": chosen["input_ids"], "rejected_ids": rejected["input_ids"],
               "full_length": max(chosen["full_length"], rejected["full_length"])}
        if "token_type_ids" in chosen:
            out.update(chosen_type_ids=chosen["token_type_ids"], rejected_type_ids=rejected["token_type_ids"])
        if "margin" in used:
            out["margin"] = as_number(row[used["margin"]])
        return out

    def rating(row):
        enc = encode(tokenizer, cfg.data, row[prompt_col] if prompt_col else None, row[used["response"]])
        return {**enc, "labels": target(row[used["rating"]], task)}

    if task["shape"] == "ratings":
        problems = ratings.check_values(cfg, ds[used["rating"]][:], task, cfg.data.source, used["rating"], source_rows(ds))
        if problems:  # e.g. `tunesmith eval RUN --data OTHER` with other thumbs values than the run was trained on
            raise TunesmithError(problems)
    return ds.map(pair if task["shape"] == "pairs" else rating, remove_columns=columns,
                  desc=f"tokenize {len(ds):,} {task['shape']}")
