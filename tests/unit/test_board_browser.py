"""The board in a real browser (Playwright driving the system Chromium; skipped when either is missing): opened with
its token link; a run started from the form with a typo (the problem shown, nothing started), then fixed (it
starts); its loss curve gains points while it trains; the runs table shows it running beside a finished run; it is
stopped from its page (resumable); a finished classifier labels a text in the try box. A run's text holding
<script> never runs.

With BOARD_SCREENSHOTS=DIR set, the runs table and a live run are saved there as board-runs.png and board-run.png
(docs/images/ in the docs come from `BOARD_SCREENSHOTS=docs/images pytest tests/unit/test_board_browser.py`)."""

import os
import shutil
from pathlib import Path

import pytest
import yaml

pytest.importorskip("fastapi")
sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = next((p for p in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")) if p and Path(p).exists()), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (make installs it with apt-get)")

from test_board import kill_runs, wait_for  # noqa: E402

from conftest import tiny_config  # noqa: E402
from tunesmith.board.app import create_app  # noqa: E402
from tunesmith.board.server import background  # noqa: E402
from tunesmith.runs.folder import run_marker  # noqa: E402


def test_start_watch_stop_and_try_in_the_browser(tiny_bert, sentiment_file, tmp_path):
    from tunesmith.api import train

    root = tmp_path / "runs"
    train(tiny_config(tiny_bert, sentiment_file, "classify", report={"html": True}), out=root / "sentiment-lora")
    shots = Path(os.environ.get("BOARD_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    cfg = tiny_config(tiny_bert, sentiment_file, "classify", {"name": "lora", "r": 8, "lora_alpha": 16},
                      train={"max_steps": 300, "per_device_train_batch_size": 2, "save_steps": 5,
                             "eval_strategy": "steps", "eval_steps": 3})
    good = yaml.safe_dump(cfg, sort_keys=False)
    errors = []
    app = create_app([root], token="tok")
    try:
        browse(app, root, good, shots, errors)
    finally:
        kill_runs(app)
    assert not errors


def points(page) -> int:
    return int(page.get_attribute("#loss-chart", "data-points") or 0)


def browse(app, root, good, shots, errors):
    expect = sync_api.expect
    with background(app) as url, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.on("pageerror", lambda err: errors.append(str(err)))
        asked = []
        page.on("request", lambda req: asked.append(req.url))
        page.goto(f"{url}/new")
        assert "Token needed" in page.content()  # no token, nothing shown
        page.goto(f"{url}/?token=tok")
        assert "sentiment-lora" in page.inner_text("#runs")
        page.click("text=Start a run")
        page.fill("input[name=name]", "sentiment-lora-r8")
        page.fill("textarea[name=yaml]", good.replace("lora_alpha", "lora_alhpa"))
        page.click("#start")
        assert "lora_alhpa" in page.inner_text("#problems")
        assert not (root / "sentiment-lora-r8").exists() and not app.state.launcher.started
        page.fill("textarea[name=yaml]", good)
        page.click("#start")
        page.wait_for_url("**/run/0/sentiment-lora-r8")
        expect(page.locator("#status")).to_have_text("running", timeout=240_000)
        first = wait_for(lambda: points(page), what="a first point")
        wait_for(lambda: points(page) > first + 5, what="the curve to grow without a reload")
        wait_for(lambda: int(page.get_attribute("#eval-chart", "data-points") or 0) > 1, what="eval points")
        assert any("/api/events/0/sentiment-lora-r8" in u for u in asked)  # pushed as server-sent events
        page.screenshot(path=str(shots / "board-run.png"), full_page=True)
        page.click("nav >> text=Runs")
        page.wait_for_selector("#runs tr[data-status=running]")
        assert page.locator("#runs tr[data-status=finished]").count() == 1
        page.screenshot(path=str(shots / "board-runs.png"), full_page=True)
        page.fill("#filter", "r8")
        assert page.locator("#runs tbody tr").count() == 1
        page.click("#runs >> text=sentiment-lora-r8")
        wait_for(lambda: any((root / "sentiment-lora-r8" / "checkpoints").glob("*/tunesmith-checkpoint.json")),
                 what="a checkpoint")
        page.click("#stop")
        wait_for(lambda: (run_marker(root / "sentiment-lora-r8") or {}).get("status") == "interrupted", what="the stop")
        page.wait_for_selector("#resume", timeout=30_000)
        assert page.inner_text("#status") == "stopped"
        page.goto(f"{url}/run/0/sentiment-lora")
        page.fill("#try-text", "A warm, funny and moving film.")
        page.click("#try button")
        page.wait_for_selector("#tuned[data-done]", timeout=120_000)
        assert '"label"' in page.inner_text("#tuned")
        assert page.locator("#report").count() == 1
        page.goto(f"{url}/compare?run=0/sentiment-lora")
        assert page.get_attribute("#vs-params", "data-points") == "1"  # the trade-off plots are drawn
        browser.close()
