"""The data step of `tunesmith constitution`: prompts in, answer -> critique -> revision out, cached.

Each training prompt gets one principle, drawn by a generator seeded with (seed, prompt), so that adding prompts
does not change the principle of the others. The conversation is the paper's: the human's prompt, the policy's
answer, the principle's critique request, the critic's critique, the revision request, the critic's revision; each
turn through the tokenizer's chat template (policy and critic need one).

<out>/data/examples.jsonl holds every step, one row per prompt, with a key made of everything that decided it (the
prompt, the principle's text, the policy, the critic, the generation settings). A rerun reuses the rows whose key
still matches and generates only the missing ones; rows made with other settings are replaced only with
--overwrite. sft.jsonl and pairs.jsonl are rewritten from examples.jsonl each time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
from pathlib import Path

from tunesmith.errors import TunesmithError
from tunesmith.progress import bar

log = logging.getLogger("tunesmith")
ENDS = re.compile(r"[.!?](?=\s|$)")
PREAMBLE = re.compile(r"^(sure[,!.]?\s*)?(here is|here's) (the |a |my )?(rewritten|revised|new) (assistant )?"
                      r"(response|answer)[^:\n]*:\s*", re.IGNORECASE)


def load_prompts(cfg, config_path: Path) -> tuple[list[dict], list[dict]]:
    """(training prompts, held-out prompts), each {source, kind, prompt, reference}: per source a seeded shuffle,
    held_out rows first, then train rows; prompts repeated within a source are kept once."""
    from tunesmith.assets import is_catalog_dataset
    from tunesmith.config_io import beside
    from tunesmith.data.sources import load_source

    train, held_out = [], []
    for i, src in enumerate(cfg.prompts):
        where = f"{config_path}: prompts[{i}] ({src.source})"
        source = src.source if is_catalog_dataset(src.source) else str(beside(src.source, config_path))
        ds = load_source(source)["train"]
        for column in (src.column, src.reference):
            if column is not None and column not in ds.column_names:
                raise TunesmithError(f"{where}: column {column!r} is not in it; its columns are {ds.column_names}")
        rows, seen = [], set()
        for row in ds.shuffle(seed=cfg.generation.seed):
            text = str(row[src.column] or "").strip()
            if text and text not in seen:
                seen.add(text)
                rows.append({"source": src.source, "kind": src.kind, "prompt": text,
                             "reference": str(row[src.reference]).strip() if src.reference else None})
        if not rows:
            raise TunesmithError(f"{where}: has no prompts (column {src.column!r} is empty in every row)")
        if src.held_out + src.train > len(rows):
            raise TunesmithError(f"{where}: asks for {src.held_out} held-out + {src.train} training prompts but has "
                                 f"{len(rows)} distinct ones; lower train or held_out")
        held_out += rows[: src.held_out]
        train += rows[src.held_out : src.held_out + src.train]
    return train, held_out


def principle_for(prompt: str, principles: list, seed: int):
    """The principle a prompt is critiqued by: a draw seeded with (seed, prompt), stable as prompts come and go."""
    return random.Random(f"{seed}:{prompt}").choice(principles)


def example_key(row: dict, principle, cfg) -> str:
    g = cfg.generation
    parts = [row["prompt"], principle.name, principle.critique, principle.revision, cfg.policy, cfg.critic_name,
             g.max_new_tokens, g.temperature, g.top_p, g.seed]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    rows = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except ValueError:
                raise TunesmithError(f"{path}: line {n} is not JSON; fix or delete the file (it is regenerated)") from None
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> None:
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    tmp.replace(path)


def generate_data(cfg, principles: list, prompts: list[dict], folder: Path, *, overwrite: bool = False,
                  trust_remote_code: bool = False) -> dict:
    """Write folder/{examples,sft,pairs}.jsonl for `prompts`, generating only the examples not already there.
    Returns counts: examples, generated (this time), sft rows, pairs."""
    if not prompts:
        raise TunesmithError("constitution: the prompt set is empty; give at least one source with train: N > 0")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "examples.jsonl"
    old = {r.get("key"): r for r in read_jsonl(path)}
    wanted = []
    for row in prompts:
        principle = principle_for(row["prompt"], principles, cfg.generation.seed)
        wanted.append((row, principle, example_key(row, principle, cfg)))
    stale = [k for k in old if k not in {key for _, _, key in wanted}]
    if stale and not overwrite:
        raise TunesmithError(f"{path}: {len(stale)} of its {len(old)} examples were made with other prompts or settings "
                             "(policy, critic, constitution, generation); pass --overwrite to replace them, or choose "
                             "another --out")
    missing = [(row, p, key) for row, p, key in wanted if key not in old]
    if missing:
        log.info("constitution: generating %d of %d examples (%d reused)", len(missing), len(wanted), len(wanted) - len(missing))
        made = critique_and_revise(cfg, missing, trust_remote_code=trust_remote_code)
        old.update({r["key"]: r for r in made})
    examples = [old[key] for _, _, key in wanted]
    write_jsonl(path, examples)
    sft = [{"prompt": e["prompt"], "response": e["revision"]} for e in examples if e["revision"]]
    pairs = [{"prompt": e["prompt"], "chosen": e["revision"], "rejected": e["answer"]} for e in examples
             if e["revision"] and e["answer"] and e["revision"].strip() != e["answer"].strip()]
    if not sft or not pairs:
        raise TunesmithError(f"{path}: the critic's revisions are all empty or the same as the answers, so there is "
                             "nothing to train on; raise generation.max_new_tokens or use a stronger critic")
    write_jsonl(folder / "sft.jsonl", sft)
    write_jsonl(folder / "pairs.jsonl", pairs)
    return {"examples": len(examples), "generated": len(missing), "sft": len(sft), "pairs": len(pairs)}


def _reply(model, tokenizer, conversations: list[list[dict]], cfg, salt: int, what: str = "replies") -> list[str]:
    """The next assistant turn of each conversation, sampled as generation: says (cut at the last full sentence);
    a progress bar counts the finished batches (a batch is done when text of the next one streams)."""
    from tunesmith.generation import chat_prompt, generate

    g = cfg.generation
    with bar(total=len(conversations), desc=f"constitution: {what}", unit="reply", long=True) as progress:
        def on_text(index: int, _text: str) -> None:
            done = index // g.batch_size * g.batch_size  # the batches before this completion's
            if done > progress.n:
                progress.update(done - progress.n)

        texts = generate(model, tokenizer, [chat_prompt(tokenizer, c) for c in conversations], g.max_new_tokens,
                         batch_size=g.batch_size, temperature=g.temperature, top_p=g.top_p, seed=g.seed * 1000 + salt,
                         on_text=on_text)
        progress.update(len(conversations) - progress.n)
    return [whole_sentences(t) for t in texts]


def whole_sentences(text: str) -> str:
    """The text up to its last sentence end, when that keeps at least half of it (max_new_tokens cuts mid-sentence)."""
    text = text.strip()
    ends = [m.end() for m in ENDS.finditer(text)]
    return text[: ends[-1]] if ends and ends[-1] >= len(text) / 2 else text


def critique_and_revise(cfg, items: list[tuple[dict, object, str]], *, trust_remote_code: bool = False) -> list[dict]:
    """Answer (policy) -> critique -> revision (critic) for each (prompt row, principle, key)."""
    from tunesmith.modeling import load_causal_lm

    policy, policy_tok = load_causal_lm(cfg.policy, trust_remote_code)
    talks = [[{"role": "user", "content": row["prompt"]}] for row, _, _ in items]
    answers = _reply(policy, policy_tok, talks, cfg, salt=1, what="answers")
    log.info("constitution: %d answers written; critiquing them", len(answers))
    if cfg.critic is not None:
        del policy
        critic, critic_tok = load_causal_lm(cfg.critic_name, trust_remote_code)
    else:
        critic, critic_tok = policy, policy_tok
    for talk, answer, (_, principle, _) in zip(talks, answers, items):
        talk += [{"role": "assistant", "content": answer}, {"role": "user", "content": principle.critique}]
    critiques = _reply(critic, critic_tok, talks, cfg, salt=2, what="critiques")
    log.info("constitution: %d critiques written; revising the answers", len(critiques))
    for talk, critique, (_, principle, _) in zip(talks, critiques, items):
        talk += [{"role": "assistant", "content": critique}, {"role": "user", "content": principle.revision}]
    revisions = [PREAMBLE.sub("", r).strip() for r in _reply(critic, critic_tok, talks, cfg, salt=3, what="revisions")]
    return [{"key": key, "source": row["source"], "kind": row["kind"], "prompt": row["prompt"],
             "principle": principle.name, "answer": answer, "critique": critique, "revision": revision}
            for (row, principle, key), answer, critique, revision in zip(items, answers, critiques, revisions)]
