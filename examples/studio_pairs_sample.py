"""Make configs/data/studio-pairs.jsonl: a small, real `tunesmith studio export --format pairs` file, so that
configs/reward-studio-pairs.yaml validates and trains on a fresh clone.

What is real and what is not: the responses are real generations of SmolLM2-135M-Instruct (the offline catalog's
`smollm2-135m-instruct`, no tuning), two samples per question at temperature 0.7, for chatterbot-qa questions; the
study, the rating over the studio's HTTP API and the export are the studio's own code. The raters are SIMULATED, as
in examples/studio_demo.py (its rule `f1`: a response's word-overlap F1 with the dataset's reference answer plus
noise; a lapse rate of 0.1): the choices are not human judgements.

    .venv/bin/python examples/studio_pairs_sample.py [--prompts 40] [--out configs/data/studio-pairs.jsonl]
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from studio_demo import BASE, run_round  # noqa: E402

from tunesmith.assets import load_catalog_dataset  # noqa: E402
from tunesmith.studio import export  # noqa: E402


def references() -> dict[str, list[str]]:
    refs: dict[str, list[str]] = {}
    for row in load_catalog_dataset("chatterbot-qa"):
        q = str(row["question"] or "").strip()
        if q and row["answer"]:
            refs.setdefault(q, []).append(str(row["answer"]))
    return refs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=40)
    parser.add_argument("--samples", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--out", type=Path, default=Path("configs/data/studio-pairs.jsonl"))
    args = parser.parse_args()
    refs = references()
    questions = sorted(refs)
    random.Random(0).shuffle(questions)
    work = Path(tempfile.mkdtemp(prefix="studio-pairs-"))
    try:
        info = run_round(work, "study", questions[: args.prompts], [("base", "model", BASE)], refs, args.samples,
                         args.max_new_tokens)
        made = export.export(work / "study", "pairs", args.out, overwrite=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {made['rows']} pairs to {args.out} (skipped {made['skipped']}); answers {info['answers']}")


if __name__ == "__main__":
    main()
