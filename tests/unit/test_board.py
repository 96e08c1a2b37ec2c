"""`tunesmith board`: the access token on every route, CSRF on every form, no path outside the run directories
(`..`, absolute paths, symlinks), the runs table (a running and a finished run), a run's metrics from an offset,
starting a run from a config with a typo (the problem shown, nothing started) then fixed (it starts and finishes),
stopping and resuming, comparing runs (refused on other eval data), and trying a tiny sft run (the answer
`tunesmith generate` gives)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from tunesmith.board.app import create_app  # noqa: E402
from tunesmith.runs.folder import run_marker  # noqa: E402

TOKEN = "test-token"
AUTH = {"Authorization": f"token {TOKEN}"}


def wait_for(check, timeout: float = 240, what: str = "the condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_bert, sentiment_file):
    """runs/a and runs/b: two finished classify runs on the same eval data; other/c: one on other eval data."""
    from conftest import tiny_config
    from tunesmith.api import train

    root = tmp_path_factory.mktemp("board")
    for name, method, eval_size in (("runs/a", {"name": "lora", "r": 4, "lora_alpha": 8}, 16),
                                    ("runs/sub/b", {"name": "head"}, 16), ("other/c", None, 8)):
        cfg = tiny_config(tiny_bert, sentiment_file, "classify", method, data={"eval_size": eval_size})
        train(cfg, out=root / name)
    return root


APPS = []


@pytest.fixture(autouse=True)
def no_run_left():
    """The runs a test's board started do not train on after it (they are started in their own session)."""
    yield
    while APPS:
        kill_runs(APPS.pop())


def kill_runs(app) -> None:
    for proc, _, _ in app.state.launcher.started.values():
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def client(*dirs, configs=None):
    app = create_app(list(dirs), token=TOKEN, configs_dir=configs)
    APPS.append(app)
    return app, TestClient(app)


def running_run(folder: Path) -> subprocess.Popen:
    """A folder whose manifest says running, held by a live process (a sleeping python)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({"format": "tunesmith-run", "status": "running", "pid": proc.pid,
                                                      "method": "lora", "objective": "sft", "model": "tiny"}))
    (folder / "metrics.jsonl").write_text('{"step": 1, "time": 0.5, "loss": 2.0}\n{"step": 2, "time": 1.0, "lo')
    return proc


def test_every_route_needs_the_token(finished):
    app, c = client(finished / "runs")
    assert len(app.routes) >= 12
    for route in app.routes:
        path = route.path.replace("{root}", "0").replace("{rel:path}", "a").replace("{name}", "board.js")
        for method in route.methods:
            for headers in ({}, {"Authorization": "token wrong"}):
                r = c.request(method, path, headers=headers, cookies={"board_token_80": "wrong"} if headers else {})
                assert r.status_code == 403, (method, path)
                assert "lora" not in r.text and "accuracy" not in r.text
    assert c.get("/x", params={"token": "nope"}).status_code == 403
    r = c.get("/", params={"token": TOKEN}, follow_redirects=False)  # as Jupyter: the link sets a cookie
    assert r.status_code == 303 and r.headers["location"] == "/" and "HttpOnly" in r.headers["set-cookie"]
    assert c.get("/").status_code == 200 and c.get("/static/board.js").status_code == 200


def test_paths_outside_the_run_directories_are_refused(finished, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (root / "escape").symlink_to(finished / "runs" / "a")  # a run outside, reached through a symlink
    (root / "up").symlink_to(finished)
    app, c = client(root)
    assert c.get("/api/runs", headers=AUTH).json()["runs"] == []  # the symlinked runs are not listed
    attempts = ["escape", "up/runs/a", "..%2Fother%2Fc", "a/..%2F..%2Fother", "%2Fetc%2Fpasswd", ".board", "a\\b",
                "%2e%2e/etc"]
    for rel in attempts:
        for prefix in ("/run/0/", "/api/metrics/0/", "/api/events/0/", "/report/0/"):
            r = c.get(prefix + rel, headers=AUTH)
            assert r.status_code in (403, 404), (prefix, rel, r.status_code)
            assert "tunesmith-run" not in r.text and "root:" not in r.text
        for prefix in ("/stop/0/", "/resume/0/", "/api/try/0/"):
            r = c.post(prefix + rel, headers={**AUTH, "X-CSRF-Token": app.state.csrf}, json={"text": "hi"})
            assert r.status_code in (403, 404), (prefix, rel, r.status_code)
    assert c.get("/run/7/a", headers=AUTH).status_code == 403  # no such run directory
    r = c.get("/compare", params={"run": "0/../../etc"}, headers=AUTH)
    assert r.status_code == 403
    r = c.post("/new", headers=AUTH, data={"csrf": app.state.csrf, "name": "../evil", "yaml": "model: {}"})
    assert r.status_code == 400 and "not a path inside a run directory" in r.text
    assert not (tmp_path / "evil").exists()


def test_forms_need_the_csrf_token(finished):
    app, c = client(finished / "runs")
    for path in ("/new", "/stop/0/a", "/resume/0/a", "/api/try/0/a"):
        assert c.post(path, headers=AUTH, data={"csrf": "forged"}).status_code == 403
        assert c.post(path, headers=AUTH).status_code == 403


def test_the_runs_table_shows_a_running_and_a_finished_run(finished, tmp_path):
    proc = running_run(tmp_path / "live")
    try:
        app, c = client(finished / "runs", tmp_path)
        runs = {r["id"]: r for r in c.get("/api/runs", headers=AUTH).json()["runs"]}
        assert set(runs) == {"0/a", "0/sub/b", "1/live"}
        a, live = runs["0/a"], runs["1/live"]
        assert a["status"] == "finished" and a["method"] == "lora" and a["objective"] == "classify"
        assert a["metric"] == "accuracy" and isinstance(a["metric_tuned"], float) and a["trainable_params"] > 0
        assert a["machine"] and a["peak_memory_mb"] and a["tokens_per_second"]
        assert live["status"] == "running" and live["step"] == 1
        page = c.get("/", headers=AUTH).text
        assert "sub/b" in page and ">running · step 1<" in page
        m = c.get("/api/metrics/1/live", params={"offset": 0}, headers=AUTH).json()
        assert [r["step"] for r in m["rows"]] == [1] and m["status"] == "running"  # the half-written line waits
        with (tmp_path / "live" / "metrics.jsonl").open("a") as fh:
            fh.write('ss": 1.5}\n')
        m2 = c.get("/api/metrics/1/live", params={"offset": m["offset"]}, headers=AUTH).json()
        assert [r["step"] for r in m2["rows"]] == [2] and m2["pace"]["steps_per_second"] == 2.0
        r = c.get("/api/events/0/a", headers=AUTH)  # server-sent events: a finished run's lines, then the end
        assert r.headers["content-type"].startswith("text/event-stream")
        events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: ")]
        assert events[0]["status"] == "finished" and events[0]["rows"][0]["step"] == 1
    finally:
        proc.kill()
        proc.wait()
    assert c.get("/api/runs", headers=AUTH).json()["runs"][-1]["status"] == "unfinished"  # its process is gone


def test_html_is_escaped(tmp_path):
    folder = tmp_path / "x <i>#1?"
    folder.mkdir()
    evil = "<script>alert(1)</script>"
    (folder / "manifest.json").write_text(json.dumps({"format": "tunesmith-run", "status": "failed", "method": evil,
                                                      "error": evil, "model": evil}))
    app, c = client(tmp_path)
    for path in ("/", "/run/0/x%20%3Ci%3E%231%3F"):
        r = c.get(path, headers=AUTH)
        assert r.status_code == 200 and evil not in r.text and "&lt;script&gt;" in r.text and "<i>" not in r.text
    assert 'href="/run/0/x%20%3Ci%3E%231%3F"' in c.get("/", headers=AUTH).text


def test_compare_two_runs_and_refuse_other_eval_data(finished):
    app, c = client(finished / "runs", finished / "other")
    r = c.get("/compare", params=[("run", "0/a"), ("run", "0/sub/b"), ("run", "1/c")], headers=AUTH)
    assert r.status_code == 200
    assert 'id="comparison"' in r.text and "sub/b" in r.text and "accuracy" in r.text
    refused = r.text.split('id="refused"', 1)[1].split("</div>", 1)[0]
    assert "<li>1/c: measured on other eval data" in refused and "<li>0/a" not in refused and "sub/b" not in refused


def test_start_with_a_typo_shows_the_problem_then_the_fixed_config_runs(tiny_bert, sentiment_file, tmp_path):
    from conftest import tiny_config

    app, c = client(tmp_path)
    good = yaml.safe_dump(tiny_config(tiny_bert, sentiment_file, "classify"))
    typo = good.replace("learning_rate", "learnin_rate")
    r = c.post("/new", headers=AUTH, data={"csrf": app.state.csrf, "root": "0", "name": "first", "yaml": typo})
    assert r.status_code == 400 and "learnin_rate" in r.text and "learning_rate" in r.text
    assert not (tmp_path / "first").exists() and not app.state.launcher.started  # nothing started
    r = c.post("/new", headers=AUTH, follow_redirects=False,
               data={"csrf": app.state.csrf, "root": "0", "name": "first", "yaml": good, "train.max_steps": "3"})
    assert r.status_code == 303 and r.headers["location"] == "/run/0/first"
    assert c.get("/api/runs", headers=AUTH).json()["runs"][0]["status"] in ("starting", "running", "finished")
    wait_for(lambda: (run_marker(tmp_path / "first") or {}).get("status") == "finished", what="the run to finish")
    assert json.loads((tmp_path / "first" / "manifest.json").read_text())["train_steps"] == 3  # the override
    r = c.post("/new", headers=AUTH, data={"csrf": app.state.csrf, "root": "0", "name": "first", "yaml": good})
    assert r.status_code == 400 and "already exists" in r.text  # never overwritten without the choice


def test_a_shipped_config_is_checked_with_its_overrides(tiny_bert, sentiment_file, tmp_path):
    from conftest import tiny_config

    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "tiny.yaml").write_text(yaml.safe_dump(tiny_config(tiny_bert, sentiment_file, "classify")))
    (tmp_path / "runs").mkdir()
    app, c = client(tmp_path / "runs", configs=configs)
    assert "tiny.yaml" in c.get("/new", headers=AUTH).text
    launcher = app.state.launcher
    problems, cmd, watch = launcher.prepare("0", "t", "tiny.yaml", "", ["train.max_steps=2", "method.r=2"], False)
    assert problems == [] and watch == "t"
    assert cmd[-6:] == ["train", str(configs / "tiny.yaml"), "train.max_steps=2", "method.r=2", "--out",
                        str(tmp_path / "runs" / "t")]  # `tunesmith train` as the CLI would be called
    problems, cmd, _ = launcher.prepare("0", "t", "tiny.yaml", "", ["method.rank=2"], False)
    assert cmd is None and "method.rank" in problems[0]
    problems, cmd, _ = launcher.prepare("0", "t", "../../etc/x.yaml", "", [], False)
    assert cmd is None and "no shipped config" in problems[0]
    r = c.post("/new", headers=AUTH, data={"csrf": app.state.csrf, "name": "t", "shipped": "tiny.yaml",
                                           "overrides": "not an override"})
    assert r.status_code == 400 and "is not key=value" in r.text and not launcher.started


def test_stop_then_resume(tiny_bert, sentiment_file, tmp_path):
    from conftest import tiny_config

    app, c = client(tmp_path)
    cfg = tiny_config(tiny_bert, sentiment_file, "classify", train={"max_steps": 400, "save_steps": 2,
                                                                     "per_device_train_batch_size": 2})
    form = {"csrf": app.state.csrf, "root": "0", "name": "long", "yaml": yaml.safe_dump(cfg)}
    assert c.post("/new", headers=AUTH, data=form, follow_redirects=False).status_code == 303
    folder = tmp_path / "long"
    wait_for(lambda: (folder / "checkpoints").is_dir() and any((folder / "checkpoints").glob("checkpoint-*/tunesmith-checkpoint.json")),
             what="a checkpoint")
    r = c.post("/stop/0/long", headers=AUTH, data={"csrf": app.state.csrf}, follow_redirects=False)
    assert r.status_code == 303
    wait_for(lambda: (run_marker(folder) or {}).get("status") == "interrupted", what="the run to stop")
    row = c.get("/api/runs", headers=AUTH).json()["runs"][0]
    assert row["status"] == "stopped" and row["resumable"]
    assert "Resume" in c.get("/run/0/long", headers=AUTH).text
    steps_before = row["step"]
    assert c.post("/resume/0/long", headers=AUTH, data={"csrf": app.state.csrf}, follow_redirects=False).status_code == 303
    assert c.get("/api/metrics/0/long", headers=AUTH).json()["status"] in ("starting", "running")  # never "stopped"
    wait_for(lambda: (run_marker(folder) or {}).get("status") in ("running", "finished"), what="the run to resume")
    wait_for(lambda: c.get("/api/runs", headers=AUTH).json()["runs"][0]["step"] > steps_before, what="more steps")
    _, again = client(tmp_path)  # a board started again sees the run it did not start going on
    assert again.get("/api/runs", headers=AUTH).json()["runs"][0]["status"] == "running"
    c.post("/stop/0/long", headers=AUTH, data={"csrf": app.state.csrf})
    wait_for(lambda: (run_marker(folder) or {}).get("status") == "interrupted", what="the resumed run to stop")


def test_trying_an_sft_run_answers_as_tunesmith_generate(tiny_llama, qa_file, tmp_path):
    from conftest import tiny_config
    from tunesmith.api import train
    from tunesmith.cli import app as cli

    train(tiny_config(tiny_llama, qa_file, "sft"), out=tmp_path / "chat")
    app, c = client(tmp_path)
    prompt = "What is a computer?"
    r = c.post("/api/try/0/chat", headers={**AUTH, "X-CSRF-Token": app.state.csrf},
               json={"text": prompt, "max_new_tokens": 8})
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["kind"] == "generate" and isinstance(answer["base"], str)
    out = CliRunner().invoke(cli, ["generate", str(tmp_path / "chat"), prompt, "--max-new-tokens", "8"])
    assert out.exit_code == 0, out.output
    assert out.output.splitlines()[1].strip() == answer["tuned"].strip()


def test_two_adapter_runs_on_one_base_share_it_and_each_answers_as_alone(tiny_llama, qa_file, tmp_path):
    from conftest import tiny_config
    from tunesmith.api import load_run, train

    for name, lr in (("one", 5e-3), ("two", 2e-2)):
        train(tiny_config(tiny_llama, qa_file, "sft", train={"learning_rate": lr, "max_steps": 4,
                                                             "per_device_train_batch_size": 8}), out=tmp_path / name)
    app, c = client(tmp_path)
    prompt, headers = "What is a computer?", {**AUTH, "X-CSRF-Token": app.state.csrf}
    answers = {}
    for name in ("one", "two", "one"):
        r = c.post(f"/api/try/0/{name}", headers=headers, json={"text": prompt, "max_new_tokens": 8})
        assert r.status_code == 200, r.text
        answers.setdefault(name, []).append(r.json())
    chat = app.state.chat
    (entry,) = chat.loaded.values()  # one base in memory, both runs' adapters on it
    assert len(entry["adapters"].runs) == 2
    from tunesmith.config import with_max_new_tokens

    for name in ("one", "two"):
        alone = load_run(tmp_path / name)
        assert all(a["tuned"] == alone.generate([prompt], max_new_tokens=8)[0] for a in answers[name])
        base = alone.objective.probe(alone.load_base(), alone.tokenizer, [prompt], with_max_new_tokens(alone.config, 8),
                                     alone.task)[0]
        assert answers[name][0]["base"] == base  # the shared model with its adapters off is the base
    assert answers["one"][0] == answers["one"][1]  # switching to two and back changes nothing
    assert answers["one"][0]["tuned"] != answers["two"][0]["tuned"]  # two different adapters, really switched


def test_a_run_page_shows_the_data_the_run_trained_on(finished, tmp_path):
    _, c = client(finished)
    page = c.get("/run/0/runs/a", headers=AUTH).text
    assert 'id="data-preview"' in page and "example 0:" in page and "label:" in page
    preview = json.loads((finished / "runs" / "a" / "data_preview.json").read_text())
    assert len(preview["examples"]) == 3 and "text" in preview["examples"][0]
    outside = tmp_path / "secret.json"  # a data_preview.json that links out of the run folder is not read
    outside.write_text(json.dumps({"examples": [{"text": "SECRET-TEXT", "length": 1}]}))
    link_run = finished / "runs" / "linked"
    import shutil

    shutil.copytree(finished / "runs" / "a", link_run)
    (link_run / "data_preview.json").unlink()
    (link_run / "data_preview.json").symlink_to(outside)
    try:
        page = c.get("/run/0/runs/linked", headers=AUTH).text
        assert "SECRET-TEXT" not in page and "has no data_preview.json" in page
    finally:
        shutil.rmtree(link_run)


def test_the_cli_prints_the_tokenized_address(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-m", "tunesmith.cli", "board", str(tmp_path), "--port", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert "http://127.0.0.1:" in line and "/?token=" in line
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    out = subprocess.run([sys.executable, "-m", "tunesmith.cli", "board", str(tmp_path / "missing")],
                         capture_output=True, text=True, env=env)
    assert out.returncode == 2 and "not a directory" in out.stderr and "Traceback" not in out.stderr
