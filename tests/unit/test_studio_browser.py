"""The rater page in a real browser (Playwright driving the system Chromium; skipped when either is missing): a rater
answers 5 single responses and 5 pairs, half with the mouse and half with the keyboard, types a comment (keys off
while typing), undoes an answer and gives another, and the export holds exactly those answers with the response
shown on the chosen side as `chosen`. A response holding <script> is shown as text and never runs.

With STUDIO_SCREENSHOTS=DIR set, the rater and owner pages are also saved there (docs/studio-rater.png and
docs/studio-owner.png in the README come from `STUDIO_SCREENSHOTS=docs pytest tests/unit/test_studio_browser.py`)."""

import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
sync_api = pytest.importorskip("playwright.sync_api")
CHROMIUM = next((p for p in ("/usr/bin/chromium", shutil.which("chromium"), shutil.which("chromium-browser")) if p and Path(p).exists()), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (make installs it with apt-get)")

from test_studio import make_study  # noqa: E402

from tunesmith.studio import db, export, queue  # noqa: E402
from tunesmith.studio.app import create_app  # noqa: E402
from tunesmith.studio.server import background  # noqa: E402

EVIL = "Put it in boiling water. <script>window.__pwned = 1</script><img src=x onerror=\"window.__pwned = 2\">"
PROMPTS = ["What is AI?", "Do you like pizza?", "Tell me a joke.", "What is the capital of France?", "How do I boil an egg?"]
ANSWERS = {
    "base": ["AI is a thing. It is a thing that is a thing.", "Pizza pizza pizza.", "Joke.", "France is a country.", EVIL],
    "tuned": ["Artificial intelligence: software that learns patterns from data to make predictions or decisions.",
              "I don't eat, but many people love pizza, especially margherita!",
              "Why did the scarecrow win an award? Because he was outstanding in his field.",
              "The capital of France is Paris.", "Lower the egg into boiling water for 9 minutes, then cool it in cold water."],
}


@pytest.fixture
def study(tmp_path):
    """5 prompts answered by base and tuned: 5 single tasks (base's answers) and 5 side-by-side tasks."""
    studio, owner = make_study(tmp_path, prompts=5, text=lambda i, m, s: ANSWERS[m][i])
    conn = db.open_studio(studio)
    with db.transaction(conn):
        for i, text in enumerate(PROMPTS):
            conn.execute("UPDATE prompts SET text = ? WHERE id = ?", (text, i + 1))
        conn.execute("DELETE FROM tasks WHERE kind = 'single' AND response_a IN "
                     "(SELECT r.id FROM responses r JOIN models m ON m.id = r.model_id WHERE m.name = 'tuned')")
    conn.close()
    return studio, owner, queue.add_rater(studio, "ann")


def test_a_rater_answers_with_mouse_and_keyboard_undoes_and_the_export_matches(study, tmp_path):
    studio, owner, token = study
    shots = Path(os.environ.get("STUDIO_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    given: dict[int, tuple] = {}  # task id -> the answer that stands: ("pair", verdict, left, right) or ("single", text, rating)
    errors, verdicts = [], ["left", "right", "tie", "both_bad", "right", "left"]
    keys = {"left": "a", "right": "ArrowRight", "tie": "t", "both_bad": "x", "1": "u", "0": "d"}
    with background(create_app(studio)) as url, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1100, "height": 760})
        page.on("pageerror", lambda err: errors.append(str(err)))
        page.goto(f"{url}/r/{token}")
        seen_script = shot_taken = False
        pair_answers = 0
        for n in range(11):  # 10 tasks, one of them answered twice (undone in between)
            assert page.evaluate("window.__pwned") is None
            kind = page.locator("form#answer").get_attribute("data-kind")
            task_id = int(page.locator("input[name=task_id]").input_value())
            assert page.inner_text("#progress") == f"{len(given)} of 10"
            if kind == "pair":
                left, right = page.inner_text("#left"), page.inner_text("#right")
                seen_script |= "<script>" in left + right
                if not shot_taken and "<script>" not in left + right:
                    page.screenshot(path=str(shots / "studio-rater.png"))
                    shot_taken = True
                value = verdicts[pair_answers % len(verdicts)]
                pair_answers += 1
                given[task_id] = ("pair", value, left, right)
                button = f"button[name=verdict][value={value}]"
            else:
                text = page.inner_text("#response")
                seen_script |= "<script>" in text
                value = str(n % 3 % 2)
                given[task_id] = ("single", text, int(value))
                button = f"button[name=rating][value='{value}']"
            if n == 3:  # typing in the comment box: the shortcut letters are typed, not answered
                page.click("#comment")
                page.keyboard.type("a tie? ax")
                page.keyboard.press("Escape")
            with page.expect_navigation():
                if n % 2 == 0:
                    page.click(button)  # the mouse
                else:
                    page.keyboard.press(keys[value])
            if n == 4:  # undo this answer with the keyboard: the same task comes back, answered anew next round
                with page.expect_navigation():
                    page.keyboard.press("z")
                assert int(page.locator("input[name=task_id]").input_value()) == task_id
                del given[task_id]
        assert page.inner_text("#finished") == "All 10 tasks answered. Thank you!"
        assert seen_script and page.evaluate("window.__pwned") is None and errors == []
        simulate_second_rater(studio)  # so that the owner page shows agreement too
        page.goto(f"{url}/o/{owner}")
        assert page.locator("img").count() == 2 and page.evaluate("window.__pwned") is None
        assert page.evaluate("[...document.images].every(i => i.complete && i.naturalWidth > 100)")
        page.screenshot(path=str(shots / "studio-owner.png"), full_page=True)
        browser.close()
    assert sorted(k for k, *_ in given.values()) == ["pair"] * 5 + ["single"] * 5
    pairs, skipped = export.export_rows(studio, "pairs")
    chosen = {"left": lambda left, right: (left, right), "right": lambda left, right: (right, left)}
    assert sorted((r["chosen"], r["rejected"]) for r in pairs if r["rater"] == "ann") == sorted(
        chosen[v](left, right) for kind, v, left, right in (g for g in given.values() if g[0] == "pair") if v in chosen)
    ann_verdicts = [g[1] for g in given.values() if g[0] == "pair"]
    assert skipped == {why: c for why, c in (("tie", ann_verdicts.count("tie")), ("both bad", ann_verdicts.count("both_bad"))) if c}
    ratings, _ = export.export_rows(studio, "ratings")
    assert sorted((r["response"], r["rating"]) for r in ratings if r["rater"] == "ann") == sorted(
        (text, rating) for kind, text, rating in (g for g in given.values() if g[0] == "single"))
    conn = db.open_studio(studio)
    answers = queue.own_answers(conn, queue.rater_for(conn, token))
    assert len(answers) == 10 and [a["comment"] for a in answers if a["comment"]] == ["a tie? ax"]


def simulate_second_rater(studio):
    """bob: thumbs up unless the answer says 'thing'; prefers the longer of two answers."""
    conn = db.open_studio(studio)
    bob = queue.rater_for(conn, queue.add_rater(studio, "bob"))
    while (task := queue.next_task(conn, bob)) is not None:
        if task["kind"] == "single":
            queue.record(conn, bob, task["id"], rating=int("thing" not in task["response"]["text"]))
        else:
            better = "left" if len(task["left"]["text"]) > len(task["right"]["text"]) else "right"
            queue.record(conn, bob, task["id"], verdict=better, left_response=task["left"]["id"])
