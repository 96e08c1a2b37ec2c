"""The studio's web app: tokens and CSRF (403 on every route), one rater never sees another's answers, text stays
text, SQL-looking input is stored verbatim, two raters answering at once lose and duplicate nothing, and a server
killed with SIGKILL comes back with every acknowledged answer and the queue where it was."""

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

pytest.importorskip("fastapi")
from fastapi.routing import APIRoute  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from test_studio import make_study  # noqa: E402

from tunesmith.studio import db, queue  # noqa: E402
from tunesmith.studio.app import create_app  # noqa: E402
from tunesmith.studio.server import background, host_warning  # noqa: E402

EVIL = "<script>window.__pwned = 1</script><img src=x onerror=\"window.__pwned = 2\"> & <b>bold</b>"
SQL = "x'); DROP TABLE answers; -- \" OR 1=1; /* ünïcode ✓ */"


@pytest.fixture
def studio(tmp_path):
    studio, owner = make_study(tmp_path, prompts=3, text=lambda i, m, s: f"{EVIL} ({m})" if i == 0 else f"{m} says {i}.")
    tokens = {name: queue.add_rater(studio, name) for name in ("ann", "bob")}
    return studio, owner, tokens


def csrf_of(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', html).group(1)


def form_task(html: str) -> dict:
    task = {"task_id": re.search(r'name="task_id" value="(\d+)"', html).group(1)}
    left = re.search(r'name="left_response" value="(\d+)"', html)
    return {**task, "verdict": "left", "left_response": left.group(1)} if left else {**task, "rating": "1"}


def test_every_route_wants_a_valid_token_and_posts_a_csrf_token(studio):
    path, owner, tokens = studio
    app = create_app(path)
    client = TestClient(app)
    routes = [(r.path, m) for r in app.routes if isinstance(r, APIRoute) for m in r.methods]
    assert len([p for p, _ in routes if "{token}" in p]) >= 9
    for route, method in routes:
        if route.startswith("/static/"):
            continue
        for token in ("wrong-token", "", tokens["ann"] + "x"):
            url = route.replace("{token}", token).replace("{fmt}", "pairs")
            assert client.request(method, url).status_code == 403, (method, url)
        if route.startswith("/o/"):  # a rater's token is not the owner's
            assert client.request(method, route.replace("{token}", tokens["ann"]).replace("{fmt}", "pairs")).status_code == 403
        if route.startswith("/r/"):
            assert client.request(method, route.replace("{token}", owner)).status_code == 403
    for url in ("/", "/r", "/r/", "/o/", "/admin", "/r/x/../../o", "/docs", "/openapi.json"):
        assert client.get(url).status_code == 403, url
    # POSTs with a valid token: no session cookie, or a wrong CSRF token -> 403; nothing is stored
    ann = tokens["ann"]
    page = client.get(f"/r/{ann}")
    assert page.status_code == 200 and "studio_session" in page.cookies
    answer = form_task(page.text)
    assert client.post(f"/r/{ann}/answer", data={**answer, "csrf": "forged"}).status_code == 403
    assert client.post(f"/r/{ann}/undo", data={"csrf": ""}).status_code == 403
    assert TestClient(app).post(f"/r/{ann}/answer", data={**answer, "csrf": csrf_of(page.text)}).status_code == 403
    bob = TestClient(app)
    bob_page = bob.get(f"/r/{tokens['bob']}")  # bob's session cookie and CSRF token do not work for ann's link
    cookie = {"studio_session": bob.cookies.get("studio_session")}
    assert TestClient(app, cookies=cookie).post(f"/r/{ann}/answer", data={**answer, "csrf": csrf_of(bob_page.text)}).status_code == 403
    assert db.open_studio(path).execute("SELECT count(*) FROM answers").fetchone()[0] == 0
    done = client.post(f"/r/{ann}/answer", data={**answer, "csrf": csrf_of(page.text)}, follow_redirects=False)
    assert done.status_code == 303 and "1 of 9" in client.get(f"/r/{ann}").text
    assert page.headers["referrer-policy"] == "no-referrer" and "script-src 'self'" in page.headers["content-security-policy"]


def test_bad_bodies_are_refused_after_the_token_and_csrf_checks(studio):
    path, _, tokens = studio
    client = TestClient(create_app(path))
    big = "x" * (70 * 1024)
    assert client.post("/r/wrong/api/answer", content=big).status_code == 403  # a stranger learns nothing more
    step = client.get(f"/r/{tokens['ann']}/api/next").json()
    csrf = {"X-CSRF-Token": step["csrf"]}
    task = step["task"]
    for body, why in [(big, "over 64 KB"), ("[1, 2]", "JSON object"), ("{not json", "not valid JSON"),
                      ('{"task_id": true, "rating": 1}', "whole number"), ('{"task_id": "7; DROP", "rating": 1}', "whole number"),
                      (f'{{"task_id": {task["id"]}, "rating": 1.5}}', "whole number"), ('{"rating": 1}', "task_id is missing")]:
        reply = client.post(f"/r/{tokens['ann']}/api/answer", content=body, headers={**csrf, "content-type": "application/json"})
        assert reply.status_code == 400 and why in reply.json()["error"], (body[:40], reply.text)
    form = client.post(f"/r/{tokens['ann']}/answer", data={"csrf": step["csrf"], "task_id": task["id"], "rating": "7"})
    assert form.status_code == 400 and f'href="/r/{tokens["ann"]}"' in form.text  # a way back to the queue
    assert db.open_studio(path).execute("SELECT count(*) FROM answers").fetchone()[0] == 0


def test_raters_see_only_their_own_answers_and_text_stays_text(studio):
    path, owner, tokens = studio
    ann, bob = TestClient(create_app(path)), TestClient(create_app(path))
    seen_evil = False
    for _ in range(9):
        page = ann.get(f"/r/{tokens['ann']}").text
        seen_evil |= "&lt;script&gt;window.__pwned" in page
        assert "<script>window" not in page and "onerror=\"window" not in page
        answer = form_task(page)
        ann.post(f"/r/{tokens['ann']}/answer", data={**answer, "csrf": csrf_of(page), "comment": SQL})
    assert seen_evil and "All 9 tasks answered" in ann.get(f"/r/{tokens['ann']}").text
    mine = ann.get(f"/r/{tokens['ann']}/api/answers").json()
    assert len(mine["answers"]) == 9 and {a["comment"] for a in mine["answers"]} == {SQL}
    theirs = bob.get(f"/r/{tokens['bob']}/api/answers").json()
    assert theirs == {"rater": "bob", "answers": []}
    assert "DROP TABLE" not in bob.get(f"/r/{tokens['bob']}").text + bob.get(f"/r/{tokens['bob']}/answers").text
    conn = db.open_studio(path)
    assert [r[0] for r in conn.execute("SELECT comment FROM answers")] == [SQL] * 9  # verbatim; the table is still there
    owner_page = TestClient(create_app(path)).get(f"/o/{owner}")
    assert owner_page.status_code == 200 and "DROP TABLE" in owner_page.text and "<script>window" not in owner_page.text


def test_owner_page_and_api(studio):
    path, owner, tokens = studio
    client = TestClient(create_app(path))
    for name in ("ann", "bob"):
        api = TestClient(create_app(path))
        for _ in range(9):
            step = api.get(f"/r/{tokens[name]}/api/next").json()
            task = step["task"]
            body = {"task_id": task["id"], "rating": 1} if task["kind"] == "single" else \
                {"task_id": task["id"], "verdict": "left" if name == "ann" else "tie", "left_response": task["left"]["id"]}
            assert api.post(f"/r/{tokens[name]}/api/answer", json=body, headers={"X-CSRF-Token": step["csrf"]}).json()["saved"]
    stats = client.get(f"/o/{owner}/api/stats").json()
    assert stats["summary"]["answers"] == 18 and [r["answered"] for r in stats["raters"]] == [9, 9]
    assert stats["agreement"]["pairs"]["items"] == 3 and stats["agreement"]["pairs"]["agreement"] == 0
    assert sum(w["n"] for w in stats["win_rates"].values()) == 12  # 6 answers, each counted for both models
    page = client.get(f"/o/{owner}").text
    assert page.count("data:image/png;base64,") == 2 and 'id="wins"' in page and 'id="agreement"' in page
    exported = client.get(f"/o/{owner}/export/pairs.jsonl")
    assert exported.status_code == 200 and len(exported.text.splitlines()) == 3  # ann's 3; bob's ties are skipped


def heading(html: str) -> str:
    return re.search(r"<h1>(.*?)</h1>", html).group(1)


def test_error_pages_say_what_happened(studio):
    """Issue 22 item 8: each error page is titled for what went wrong (an unknown export format is not "Not
    saved"), and the export's lists the formats that exist, as links; the JSON API keeps {"error": ...}."""
    path, owner, tokens = studio
    client = TestClient(create_app(path))
    ann = tokens["ann"]
    wrong = client.get(f"/o/{owner}/export/xml.jsonl")
    assert wrong.status_code == 400 and heading(wrong.text) == "Unknown export format", wrong.text
    assert "Not saved" not in wrong.text and "&#39;xml&#39;" in wrong.text and "pairs, ratings, kto" in wrong.text
    for fmt in ("pairs", "ratings", "kto"):
        assert f'href="/o/{owner}/export/{fmt}.jsonl"' in wrong.text, fmt
        assert client.get(f"/o/{owner}/export/{fmt}.jsonl").status_code == 200
    assert f'href="/o/{owner}"' in wrong.text  # a way back to the study
    evil = client.get(f"/o/{owner}/export/%3Cscript%3E.jsonl")
    assert evil.status_code == 400 and "<script>" not in evil.text and "&lt;script&gt;" in evil.text
    assert heading(client.get(f"/o/{ann}/export/xml.jsonl").text) == "Link not valid"  # the token comes first
    for url in (f"/r/{ann}x", f"/o/{owner}x", f"/r/{owner}/answers"):
        reply = client.get(url)
        assert reply.status_code == 403 and heading(reply.text) == "Link not valid", url
    for url in ("/", "/nowhere", f"/r/{ann}/nowhere"):
        reply = client.get(url)
        assert reply.status_code == 403 and heading(reply.text) == "Personal link needed", url
    page = client.get(f"/r/{ann}").text
    answer = form_task(page)
    forged = client.post(f"/r/{ann}/answer", data={**answer, "csrf": "forged"})
    assert forged.status_code == 403 and heading(forged.text) == "Not saved" and f'href="/r/{ann}"' in forged.text
    no_session = TestClient(create_app(path)).post(f"/r/{ann}/undo", data={"csrf": csrf_of(page)})
    assert no_session.status_code == 403 and heading(no_session.text) == "Nothing undone"
    off_scale = client.post(f"/r/{ann}/answer", data={**answer, "rating": "7", "verdict": "", "csrf": csrf_of(page)})
    assert off_scale.status_code == 400 and heading(off_scale.text) == "Not saved"
    api = client.post(f"/r/{ann}/api/answer", json={"task_id": answer["task_id"]}, headers={"X-CSRF-Token": "forged"})
    assert api.status_code == 403 and "CSRF" in api.json()["error"]
    assert db.open_studio(path).execute("SELECT count(*) FROM answers").fetchone()[0] == 0


def test_two_raters_answering_at_once_lose_and_duplicate_nothing(tmp_path):
    path, _ = make_study(tmp_path, prompts=50, samples=2)  # 200 single + 100 pair tasks
    tokens = {name: queue.add_rater(path, name) for name in ("ann", "bob")}
    saved = {"ann": [], "bob": []}
    lock = threading.Lock()

    def work(name):  # two threads per rater share the rater's session, as two tabs of one browser would
        with httpx.Client(base_url=url, timeout=60, cookies=jars[name]) as client:
            step = client.get(f"/r/{tokens[name]}/api/next").json()
            task, csrf = step["task"], step["csrf"]
            while True:
                with lock:
                    if len(saved[name]) >= 200 or task is None:
                        return
                body = {"task_id": task["id"], "rating": 0} if task["kind"] == "single" else \
                    {"task_id": task["id"], "verdict": "right", "left_response": task["left"]["id"]}
                result = client.post(f"/r/{tokens[name]}/api/answer", json=body, headers={"X-CSRF-Token": csrf})
                assert result.status_code == 200, result.text
                if result.json()["saved"]:
                    with lock:
                        saved[name].append(task["id"])
                task = result.json()["task"]  # the answer's reply carries the next task

    with background(create_app(path)) as url:
        jars = {}
        for name in tokens:
            first = httpx.get(f"{url}/r/{tokens[name]}/api/next")
            jars[name] = httpx.Cookies({"studio_session": first.cookies["studio_session"]})
        threads = [threading.Thread(target=work, args=(name,)) for name in tokens for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
    conn = db.open_studio(path)
    for name in tokens:
        rater = conn.execute("SELECT id FROM raters WHERE name = ?", (name,)).fetchone()[0]
        stored = [r[0] for r in conn.execute("SELECT task_id FROM answers WHERE rater_id = ? ORDER BY id", (rater,))]
        assert len(saved[name]) >= 200 and len(set(saved[name])) == len(saved[name])  # no task saved twice
        # every acknowledged answer is there, once, and nothing else; the order is not compared, because two threads
        # may commit in one order and record their acknowledgements in the other
        assert len(stored) == len(set(stored)) and sorted(stored) == sorted(saved[name])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(studio: Path, port: int) -> subprocess.Popen:
    tunesmith = Path(sys.executable).with_name("tunesmith")
    proc = subprocess.Popen([str(tunesmith), "studio", "serve", str(studio), "--port", str(port), "--no-generate"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/", timeout=2).status_code == 403:
                return proc
        except httpx.TransportError:
            time.sleep(0.2)
        assert proc.poll() is None, proc.stderr.read().decode()
    raise AssertionError("the studio server did not start")


def test_sigkill_mid_session_keeps_every_answer_and_the_queue_resumes(tmp_path):
    path, _ = make_study(tmp_path, prompts=20)  # 40 single + 20 pair tasks
    token = queue.add_rater(path, "ann")
    port = free_port()
    acknowledged, stop = [], threading.Event()
    server = start_server(path, port)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)
    csrf = client.get(f"/r/{token}/api/next").json()["csrf"]

    def answer_until_killed():
        while not stop.is_set():
            try:
                task = client.get(f"/r/{token}/api/next").json()["task"]
                body = {"task_id": task["id"], "rating": 1} if task["kind"] == "single" else \
                    {"task_id": task["id"], "verdict": "tie", "left_response": task["left"]["id"]}
                if client.post(f"/r/{token}/api/answer", json=body, headers={"X-CSRF-Token": csrf}).json()["saved"]:
                    acknowledged.append(task["id"])
            except (httpx.TransportError, ValueError):
                return  # the server died under us

    worker = threading.Thread(target=answer_until_killed)
    worker.start()
    while len(acknowledged) < 15:
        time.sleep(0.01)
    os.kill(server.pid, signal.SIGKILL)
    server.wait(timeout=30)
    stop.set()
    worker.join(timeout=30)
    assert server.returncode == -signal.SIGKILL
    server = start_server(path, port)
    try:
        stored = [a["task_id"] for a in client.get(f"/r/{token}/api/answers").json()["answers"]]
        assert set(acknowledged) <= set(stored) and len(stored) == len(set(stored))
        step = client.get(f"/r/{token}/api/next").json()
        assert step["csrf"] == csrf and step["done"] == len(stored)  # the same session; the queue resumes
        assert step["task"]["id"] not in stored
        conn = db.open_studio(path)
        rater = queue.rater_for(conn, token)
        assert step["task"]["id"] == queue.next_task(conn, rater)["id"]
        body = {"task_id": step["task"]["id"], "rating": 0} if step["task"]["kind"] == "single" else \
            {"task_id": step["task"]["id"], "verdict": "left", "left_response": step["task"]["left"]["id"]}
        assert client.post(f"/r/{token}/api/answer", json=body, headers={"X-CSRF-Token": csrf}).json()["done"] == len(stored) + 1
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_other_hosts_get_a_warning():
    assert host_warning("127.0.0.1") is None and host_warning("localhost") is None
    assert "HTTPS" in host_warning("0.0.0.0")
