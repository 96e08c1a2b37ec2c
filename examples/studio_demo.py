"""The feedback studio's closed loop, end to end on the real SmolLM2-135M-Instruct, with SIMULATED raters.

1. Round 1: a study on held-out chatterbot questions (never seen by the chat-sft-lora run), answered by the base
   model and the chat-sft-lora run, K samples each (generated once, cached in the studio's database).
2. Simulated raters answer every task through the studio's HTTP API (rater links, sessions, CSRF tokens: the same
   routes a browser uses). Their rule, stated so that nobody mistakes the figures for human judgement: a rater
   scores a response by a hidden utility plus Gaussian noise (sd 0.08, fresh per judgement and rater); "both bad"
   when both noisy scores are under the rule's floor, "tie" when they are within 0.02, otherwise the higher one
   wins; thumbs up when the noisy score reaches the rule's bar. With probability 0.1 a rater lapses and answers at
   random. Two utilities (`--rule`):
   - `f1` (default): the word-overlap F1 with the dataset's reference answer(s) for that question; floor 0.05,
     thumbs-up bar 0.15;
   - `concise`: a reader who wants short answers: 1 / (1 + words / 10), 0 for an empty answer; floor 0.2 (more
     than 40 words), thumbs-up bar 0.4 (15 words or fewer).
3. Export the pairs; train a `reward` model (configs/reward-studio-pairs.yaml) and a `dpo` run on the base.
4. Round 2: a new study on other held-out questions, base against the DPO run; the same simulated raters answer;
   the owner figures (win rate with a Wilson interval, Bradley-Terry) say whether DPO now wins, and the reward
   model is checked against the round-2 verdicts it never saw.

    .venv/bin/python examples/studio_demo.py [--prompts 32] [--round2-prompts 24] [--samples 2] [--max-new-tokens 48]
        [--dpo-epochs 3] [--dpo-lr 1e-4] [--rule f1|concise] [--out runs/studio-demo]

Writes runs/studio-demo/: round1/ and round2/ (studios), pairs.jsonl (what configs/reward-studio-pairs.yaml reads),
reward/ and dpo/ (runs), summary.json. Trains runs/chat-sft-lora first when it is missing.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import threading
import time
from pathlib import Path

import httpx

from tunesmith import api
from tunesmith.config import load_config
from tunesmith.data.sources import load_splits
from tunesmith.runs import Run
from tunesmith.studio import db, export, owner, queue
from tunesmith.studio.app import create_app
from tunesmith.studio.generate import generate_missing
from tunesmith.studio.server import background
from tunesmith.studio.study import init_study

OUT = Path("runs/studio-demo")
SFT = Path("runs/chat-sft-lora")
BASE = "smollm2-135m-instruct"
RATERS = {"ann": 1, "bob": 2, "cy": 3}  # name -> noise seed


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9']+", text.lower())


def f1(response: str, references: list[str]) -> float:
    """The best word-overlap F1 of the response against any reference answer."""
    best, got = 0.0, words(response)
    for ref in references:
        want = words(ref)
        common = sum(min(got.count(w), want.count(w)) for w in set(got))
        if common:
            p, r = common / len(got), common / len(want)
            best = max(best, 2 * p * r / (p + r))
    return best


def concise(response: str, references: list[str]) -> float:
    """The `concise` rule's utility: 1 / (1 + words / 10), and 0 for an answer without words."""
    n = len(words(response))
    return 1 / (1 + n / 10) if n else 0.0


RULES = {"f1": (f1, 0.05, 0.15), "concise": (concise, 0.2, 0.4)}  # name -> (utility, "both bad" floor, thumbs-up bar)


class SimulatedRater:
    """Answers through the HTTP API by the rule in the module docstring."""

    def __init__(self, name: str, seed: int, references: dict[str, list[str]], rule: str = "f1"):
        self.name, self.rng, self.references = name, random.Random(seed), references
        self.truth, self.floor, self.bar = RULES[rule]

    def utility(self, prompt: str, text: str) -> float:
        return self.truth(text, self.references[prompt]) + self.rng.gauss(0, 0.08)

    def judge(self, task: dict) -> dict:
        lapse = self.rng.random() < 0.1
        if task["kind"] == "single":
            up = self.rng.random() < 0.5 if lapse else self.utility(task["prompt"], task["response"]["text"]) >= self.bar
            return {"task_id": task["id"], "rating": int(up)}
        left, right = (self.utility(task["prompt"], task[side]["text"]) for side in ("left", "right"))
        if lapse:
            verdict = self.rng.choice(["left", "right", "tie", "both_bad"])
        elif left < self.floor and right < self.floor:
            verdict = "both_bad"
        elif abs(left - right) < 0.02:
            verdict = "tie"
        else:
            verdict = "left" if left > right else "right"
        return {"task_id": task["id"], "verdict": verdict, "left_response": task["left"]["id"]}

    def answer_all(self, url: str, token: str) -> int:
        n = 0
        with httpx.Client(base_url=url, timeout=60) as client:
            step = client.get(f"/r/{token}/api/next").json()
            task, csrf = step["task"], step["csrf"]
            while task is not None:
                reply = client.post(f"/r/{token}/api/answer", json=self.judge(task), headers={"X-CSRF-Token": csrf})
                reply.raise_for_status()
                n += reply.json()["saved"]
                task = reply.json()["task"]
        return n


def held_out(sft: Run) -> dict[str, list[str]]:
    """{question: [reference answers]} of the run's held-out split (its group_column keeps questions apart)."""
    splits = load_splits(sft.config.data, sft.config.train.seed)
    refs: dict[str, list[str]] = {}
    for row in splits["eval"]:
        q = row["question"].strip()
        if q and row["answer"]:
            refs.setdefault(q, []).append(row["answer"])
    return refs


def run_round(out: Path, name: str, prompts: list[str], models: list[tuple[str, str, str]], references,
              samples: int, max_new_tokens: int, rule: str = "f1") -> dict:
    studio = out / name
    t0 = time.time()
    info = init_study(studio, prompts, "chatterbot-qa (held out)", models, samples=samples,
                      max_new_tokens=max_new_tokens, temperature=0.7, seed=0)
    generated = generate_missing(studio, progress=lambda d, t, m: print(f"\r  {name}: {m} {d}/{t}", end="", flush=True))
    print()
    gen_s = time.time() - t0
    tokens = {r: queue.add_rater(studio, r, new_link=True) for r in RATERS}  # a rerun carries on with new links
    t1 = time.time()
    counts: dict[str, int] = {}

    def rate(r: str, token: str, url: str) -> None:
        counts[r] = SimulatedRater(r, RATERS[r] * 100 + len(name), references, rule).answer_all(url, token)

    with background(create_app(studio)) as url:
        if info["owner_token"]:
            print(f"  owner page while it runs: {url}/o/{info['owner_token']}")
        threads = [threading.Thread(target=rate, args=(r, token, url)) for r, token in tokens.items()]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    conn = db.open_studio(studio)
    data = owner.json_ready(owner.owner_data(conn))
    responses = _responses(conn)
    conn.close()
    return {"studio": str(studio), "generated": generated["generated"], "generate_seconds": round(gen_s, 1),
            "answers": counts, "answer_seconds": round(time.time() - t1, 1), "win_rates": data["win_rates"],
            "bradley_terry": data["bradley_terry"], "agreement": data["agreement"], "ratings": data["ratings"],
            "mean_f1_with_reference": means(responses, references, f1),
            "mean_concise_utility": means(responses, references, concise),
            "mean_words": means(responses, references, lambda text, _: len(words(text)))}


def means(responses: dict[str, list[dict]], references, score) -> dict[str, float]:
    """Per model, the mean of score(response, the question's references) over its responses."""
    return {m: round(sum(score(r["text"], references[r["prompt"]]) for r in rows) / len(rows), 4)
            for m, rows in responses.items()}


def _responses(conn) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for row in conn.execute("SELECT m.name, p.text AS prompt, r.text FROM responses r JOIN models m ON m.id = r.model_id "
                            "JOIN prompts p ON p.id = r.prompt_id"):
        out.setdefault(row["name"], []).append({"prompt": row["prompt"], "text": row["text"]})
    return out


def train_if_missing(config, out: Path, overrides: list[str]) -> Run:
    if (out / "manifest.json").exists():
        return Run(out)
    t = time.time()
    run = api.train(load_config(config, overrides), out=out)
    print(f"  trained {out} in {time.time() - t:.0f} s")
    return run


def reward_check(reward: Run, studio: str) -> dict:
    """The reward model on round 2, which it never saw: the share of the raters' decisive verdicts whose chosen
    response it scores higher, and the share of base-vs-dpo pairs (same prompt and sample) where it prefers dpo."""
    rows, _ = export.export_rows(studio, "pairs")
    score = lambda texts: reward.score([{"prompt": p, "response": t} for p, t in texts])  # noqa: E731
    chosen, rejected = score([(r["prompt"], r["chosen"]) for r in rows]), score([(r["prompt"], r["rejected"]) for r in rows])
    conn = db.open_studio(studio)
    pairs = conn.execute("SELECT p.text AS prompt, a.text AS base, b.text AS dpo FROM tasks t JOIN prompts p ON p.id = t.prompt_id "
                         "JOIN responses a ON a.id = t.response_a JOIN responses b ON b.id = t.response_b "
                         "WHERE t.kind = 'pair'").fetchall()
    conn.close()
    base, dpo = score([(p["prompt"], p["base"]) for p in pairs]), score([(p["prompt"], p["dpo"]) for p in pairs])
    return {"decisive_verdicts": len(rows), "agrees_with_raters": round(sum(c > r for c, r in zip(chosen, rejected)) / len(rows), 3),
            "pairs": len(pairs), "prefers_dpo": round(sum(d > b for b, d in zip(base, dpo)) / len(pairs), 3)}


def check_rule(out: Path, rule: str) -> None:
    """The answers cached in `out` were given by raters of one rule: refuse another (it would reuse them), else
    record it (out/rule.txt; a folder from before --rule existed was rated by `f1`)."""
    marker = out / "rule.txt"
    used = marker.read_text().strip() if marker.exists() else "f1" if (out / "round1").exists() else None
    if used is not None and used != rule:
        raise SystemExit(f"{out} holds answers of raters with --rule {used}; give another --out for --rule {rule}")
    out.mkdir(parents=True, exist_ok=True)
    marker.write_text(rule + "\n")


def dpo_config(base: str, pairs: Path, epochs: int, lr: float = 1.0e-4) -> dict:
    """DPO with a LoRA adapter on the base, prompts in its chat format, as chat-sft-lora trains."""
    return {
        "model": {"name": base},
        "data": {"source": str(pairs), "format": "chat", "group_column": "prompt", "eval_size": 0.15, "max_length": 192},
        "method": {"name": "lora", "r": 16, "lora_alpha": 32, "lora_dropout": 0.05,
                   "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]},
        "objective": {"name": "dpo", "beta": 0.1},
        "train": {"num_train_epochs": epochs, "learning_rate": lr, "per_device_train_batch_size": 8,
                  "per_device_eval_batch_size": 8, "warmup_steps": 0.1, "eval_strategy": "no", "logging_steps": 5},
        "eval": {"max_examples": 32, "num_samples": 2, "max_new_tokens": 32, "probes": []},
    }


def run_demo(out: Path, sft_dir: Path, *, base: str = BASE, prompts: int = 32, round2_prompts: int = 24,
             samples: int = 2, max_new_tokens: int = 48, dpo_epochs: int = 3, dpo_lr: float = 1.0e-4, rule: str = "f1",
             reward_config: str | dict = "configs/reward-studio-pairs.yaml", reward_overrides: list[str] = (),
             dpo_overrides: list[str] = ()) -> dict:
    """The whole loop (module docstring) on a finished chat-sft run; returns what summary.json holds. Finished
    runs, generated responses and given answers are reused when it is run again."""
    check_rule(out, rule)
    started = time.time()
    sft = Run(sft_dir)
    references = held_out(sft)
    questions = sorted(references)
    random.Random(0).shuffle(questions)
    if prompts + round2_prompts > len(questions):
        raise SystemExit(f"--prompts {prompts} + --round2-prompts {round2_prompts} > the {len(questions)} held-out "
                         "questions; round 2 must ask questions that round 1 did not")
    first, second = questions[:prompts], questions[prompts : prompts + round2_prompts]
    print(f"{len(questions)} held-out questions: {len(first)} in round 1, {len(second)} in round 2")
    round1 = run_round(out, "round1", first, [("base", "model", base), ("sft", "run", str(sft_dir))], references,
                       samples, max_new_tokens, rule)
    pairs = export.export(out / "round1", "pairs", out / "pairs.jsonl", overwrite=True)
    print(f"exported {pairs['rows']} pairs (skipped {pairs['skipped']})")
    reward = train_if_missing(reward_config, out / "reward", [f"data.source={out / 'pairs.jsonl'}", *reward_overrides])
    dpo = train_if_missing(dpo_config(base, out / "pairs.jsonl", dpo_epochs, dpo_lr), out / "dpo", list(dpo_overrides))
    round2 = run_round(out, "round2", second, [("base", "model", base), ("dpo", "run", str(dpo.dir))], references,
                       samples, max_new_tokens, rule)
    summary = {"raters": f"SIMULATED (rule {rule!r}, stated in examples/studio_demo.py)", "rule": rule, "round1": round1, "pairs": pairs,
               "reward_run": {"dir": str(reward.dir), **reward.results["tuned"]},
               "dpo_run": {"dir": str(dpo.dir), "base": dpo.results["base"], "tuned": dpo.results["tuned"]},
               "round2": round2, "reward_on_round2": reward_check(reward, round2["studio"]),
               "total_seconds": round(time.time() - started)}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    for name, r in (("round 1", round1), ("round 2", round2)):
        for model, w in r["win_rates"].items():
            print(f"{name}: {model} wins {w['rate']:.3f} [{w['low']:.3f}, {w['high']:.3f}] of {w['n']} comparisons; "
                  f"Bradley-Terry {r['bradley_terry'][model]:+.2f}; mean F1 with reference {r['mean_f1_with_reference'][model]:.3f}; "
                  f"mean words {r['mean_words'][model]:.1f}")
    print(f"reward model on round 2: {summary['reward_on_round2']}")
    print(f"total {summary['total_seconds']} s; summary in {out / 'summary.json'}")
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=32, help="round-1 prompts")
    parser.add_argument("--round2-prompts", type=int, default=24)
    parser.add_argument("--samples", type=int, default=2, help="K responses per prompt and model")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--dpo-epochs", type=int, default=3)
    parser.add_argument("--dpo-lr", type=float, default=1.0e-4)
    parser.add_argument("--rule", choices=sorted(RULES), default="f1", help="the simulated raters' hidden utility")
    parser.add_argument("--out", type=Path, default=OUT, help="folder for the studios, runs and summary.json")
    args = parser.parse_args()
    train_if_missing("configs/chat-sft-lora.yaml", SFT, [])
    run_demo(args.out, SFT, prompts=args.prompts, round2_prompts=args.round2_prompts, samples=args.samples,
             max_new_tokens=args.max_new_tokens, dpo_epochs=args.dpo_epochs, dpo_lr=args.dpo_lr, rule=args.rule)


if __name__ == "__main__":
    main()
