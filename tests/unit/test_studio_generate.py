"""Generation into a study with a tiny chat-sft run and its tiny base model: K samples per prompt and model, cached
(a second pass generates nothing; new prompts generate only their rows), stoppable, through `tunesmith studio
init`; and the exports of a simulated rater's answers are read by the reward, dpo and kto objectives as they are."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from tunesmith import api
from tunesmith.cli import app as cli_app
from tunesmith.errors import TunesmithError
from tunesmith.studio import db, export, queue
from tunesmith.studio.generate import GenerationJob, generate_missing, status
from tunesmith.studio.study import init_study, read_prompts, summary

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def chat_run(tiny_llama, qa_file, tmp_path_factory):
    from conftest import tiny_config

    cfg = tiny_config(tiny_llama, qa_file, "sft", data={"format": "chat"},
                      eval={"num_samples": 1, "max_new_tokens": 2, "max_examples": 4})
    return api.train(cfg, out=tmp_path_factory.mktemp("studio-runs") / "chat")


@pytest.fixture(scope="module")
def generated(chat_run, tiny_llama, qa_file, tmp_path_factory):
    studio = tmp_path_factory.mktemp("studio") / "s"
    prompts = read_prompts(qa_file, "question", limit=4)
    init_study(studio, prompts, qa_file, [("tuned", "run", str(chat_run.dir)), ("base", "model", tiny_llama)],
               samples=2, max_new_tokens=4, temperature=1.0, seed=3)
    seen = []
    result = generate_missing(studio, progress=lambda done, total, model: seen.append((done, total, model)), chunk=3)
    return studio, result, seen


def test_missing_rows_are_generated_with_progress_then_cached(generated, qa_file):
    studio, result, seen = generated
    assert result == {"generated": 16, "stopped": False}  # 4 prompts x 2 models x 2 samples
    assert seen[-1][:2] == (16, 16) and {m for _, _, m in seen} == {"tuned", "base"}
    conn = db.open_studio(studio)
    counts = summary(conn)
    assert (counts["responses"], counts["single_tasks"], counts["pair_tasks"]) == (16, 16, 8)
    assert status(conn)["status"] == "finished" and status(conn)["done"] == 16
    before = conn.execute("SELECT id, text FROM responses ORDER BY id").fetchall()
    assert generate_missing(studio) == {"generated": 0, "stopped": False}
    init_study(studio, read_prompts(qa_file, "question", limit=6), qa_file, [])
    assert generate_missing(studio)["generated"] == 8  # only the two new prompts
    after = conn.execute("SELECT id, text FROM responses ORDER BY id").fetchall()
    assert [tuple(r) for r in after[:16]] == [tuple(r) for r in before]  # cached rows untouched


def test_a_stopped_job_keeps_what_it_made(chat_run, qa_file, tmp_path):
    studio = tmp_path / "s"
    init_study(studio, read_prompts(qa_file, "question", limit=3), qa_file, [("tuned", "run", str(chat_run.dir))],
               max_new_tokens=2)
    job = GenerationJob(studio, chunk=1)
    job._stop.set()  # asked to stop before the first chunk
    job.start().join(timeout=120)
    assert job.result == {"generated": 0, "stopped": True} and status(db.open_studio(studio))["status"] == "stopped"
    assert GenerationJob(studio).start().join(timeout=120) is None
    assert summary(db.open_studio(studio))["responses"] == 3


def test_cli_init_prints_the_owner_link_and_generates(chat_run, qa_file, tmp_path):
    studio = tmp_path / "cli"
    out = CliRunner().invoke(cli_app, ["studio", "init", str(studio), "--prompts", qa_file, "--column", "question",
                                       "--limit", "2", "--run", f"mine={chat_run.dir}", "--max-new-tokens", "2",
                                       "--rate", "stars", "--samples", "2"])
    assert out.exit_code == 0, out.output
    assert "owner page" in out.output and "/o/" in out.output and "generated 4 responses" in out.output
    again = CliRunner().invoke(cli_app, ["studio", "init", str(studio), "--rate", "thumbs"])
    assert again.exit_code == 2 and "cannot change how the study asks" in again.output
    bad = CliRunner().invoke(cli_app, ["studio", "init", str(tmp_path / "x"), "--prompts", qa_file, "--run", str(chat_run.dir)])
    assert bad.exit_code == 2 and "--column 'prompt' is not a column" in bad.output
    with pytest.raises(TunesmithError, match="holds no text prompts|not a column"):
        read_prompts(qa_file, "category_missing")


def answer_everything(studio):
    """A simulated rater: prefers the longer response; thumbs up and down by turns (tiny models' texts are alike)."""
    token = queue.add_rater(studio, "sim")
    conn = db.open_studio(studio)
    rater = queue.rater_for(conn, token)
    while (task := queue.next_task(conn, rater)) is not None:
        if task["kind"] == "single":
            queue.record(conn, rater, task["id"], rating=task["id"] % 2)
        else:
            longer = "left" if len(task["left"]["text"]) >= len(task["right"]["text"]) else "right"
            queue.record(conn, rater, task["id"], verdict=longer, left_response=task["left"]["id"])


def test_exports_are_read_by_the_reward_dpo_and_kto_objectives(generated, tiny_llama, tiny_bert, tmp_path):
    from tunesmith.config import load_config

    studio = generated[0]
    answer_everything(studio)
    files = {fmt: tmp_path / f"{fmt}.jsonl" for fmt in export.FORMATS}
    for fmt, path in files.items():
        info = export.export(studio, fmt, path)
        assert info["rows"] > 0, (fmt, info)
    small = {"eval_size": 2, "max_length": 48}
    lora = {"name": "lora", "r": 4, "lora_alpha": 8}
    checks = [(tiny_bert, "pairs", "reward"), (tiny_bert, "ratings", "reward"), (tiny_llama, "pairs", "dpo"),
              (tiny_llama, "kto", "kto")]
    for model, fmt, objective in checks:
        cfg = {"model": {"name": model}, "data": {"source": str(files[fmt]), **small}, "method": lora,
               "objective": {"name": objective}, "train": {"max_steps": 1, "per_device_train_batch_size": 4}}
        info = api.validate(cfg)
        assert info["splits"]["train"] > 0, (fmt, objective)
    shipped = load_config(ROOT / "configs" / "reward-studio-pairs.yaml",
                          [f"model.name={tiny_bert}", f"data.source={files['pairs']}", "method.name=full",
                           "train.max_steps=2", "data.eval_size=2", "report.html=false"])
    assert shipped.objective.name == "reward"
    run = api.train(shipped, out=tmp_path / "reward")
    assert "reward_accuracy" in run.results["tuned"]
