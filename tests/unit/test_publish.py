"""`tunesmith push` against a stand-in Hub on 127.0.0.1 (HF_ENDPOINT): the requests huggingface_hub sends for
create_repo, create_branch and upload_folder, and exactly which files go up. The real Hub is not reachable here."""

from __future__ import annotations

import base64
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tunesmith.errors import TunesmithError


class FakeHub:
    """The endpoints of the Hub that huggingface_hub 2.x calls to create a repo, a branch and a commit (files sent
    inline: preupload answers "regular" for every file), recording each request."""

    def __init__(self):
        self.requests: list[dict] = []
        self.commits: list[dict] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                hub.requests.append({"method": "POST", "path": self.path, "auth": self.headers.get("Authorization"),
                                     "body": body})
                self._answer(*hub.answer(self.path, body))

            def do_GET(self):
                hub.requests.append({"method": "GET", "path": self.path, "auth": self.headers.get("Authorization")})
                self._answer(404, {"error": "not in the stand-in hub"})

            do_HEAD = do_GET

            def _answer(self, status, payload):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answer(self, path: str, body: bytes) -> tuple[int, dict]:
        path = path.split("?")[0]
        if path == "/api/repos/create":
            payload = json.loads(body)
            return 200, {"url": f"{self.url}/{payload['organization']}/{payload['name']}"}
        if path == "/api/validate-yaml":  # what can be checked offline: the card data classes accept the metadata
            from huggingface_hub import ModelCard

            try:
                ModelCard(json.loads(body)["content"])
            except Exception as err:  # noqa: BLE001
                return 400, {"errors": [{"message": str(err)}]}
            return 200, {"errors": [], "warnings": []}
        if "/preupload/" in path:
            files = json.loads(body)["files"]
            return 200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]}
        if "/branch/" in path:
            return 200, {}
        if "/commit/" in path:
            lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
            header = next(x["value"] for x in lines if x["key"] == "header")
            files = {x["value"]["path"]: base64.b64decode(x["value"]["content"]) for x in lines if x["key"] == "file"}
            self.commits.append({"path": path, "message": header["summary"], "files": files})
            repo = path.removeprefix("/api/models/").split("/commit/")[0]
            return 200, {"commitUrl": f"{self.url}/{repo}/commit/{'a' * 40}", "commitOid": "a" * 40, "pullRequestUrl": None}
        return 404, {"error": f"{path} is not in the stand-in hub"}

    def sent(self) -> list[dict]:
        """The requests of the push (not huggingface_hub's own lookup of agent harnesses for its user agent)."""
        return [r for r in self.requests if not r["path"].startswith("/api/agent-harnesses")]

    def paths(self) -> list[str]:
        return [r["path"].split("?")[0] for r in self.sent()]


@pytest.fixture
def hub(monkeypatch):
    fake = FakeHub()
    monkeypatch.setenv("HF_ENDPOINT", fake.url)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    yield fake
    fake.server.shutdown()


@pytest.fixture(scope="module")
def finished_run(tiny_bert, sentiment_file, tmp_path_factory):
    from conftest import tiny_config
    from tunesmith import api

    run = api.train(tiny_config(tiny_bert, sentiment_file, "classify"), out=tmp_path_factory.mktemp("push") / "sentiment")
    (run.dir / "notes.txt").write_text("a user's own file beside the run")  # never uploaded
    return run


def test_push_uploads_the_model_files_card_and_config_only(finished_run, hub):
    from tunesmith.cli import app

    run = finished_run
    result = CliRunner().invoke(app, ["push", str(run.dir), "--repo", "alice/sentiment-lora", "--private"])
    assert result.exit_code == 0, result.output
    assert "/api/repos/create" in hub.paths()
    create = next(r for r in hub.requests if r["path"] == "/api/repos/create")
    assert json.loads(create["body"]) == {"name": "sentiment-lora", "organization": "alice", "visibility": "private",
                                          "type": "model"}
    assert create["auth"] == "Bearer hf_test_token"
    (commit,) = hub.commits
    assert commit["path"] == "/api/models/alice/sentiment-lora/commit/main"
    assert commit["message"].startswith("tunesmith push: run sentiment") and "lora, classify" in commit["message"]
    files = commit["files"]
    assert set(files) == {"README.md", "adapter_config.json", "adapter_model.safetensors", "labels.json",
                          "tokenizer.json", "tokenizer_config.json", "tunesmith_config.yaml"}
    assert files["adapter_model.safetensors"] == (run.dir / "adapter" / "adapter_model.safetensors").read_bytes()
    assert files["tunesmith_config.yaml"] == (run.dir / "config.yaml").read_bytes()
    card = files["README.md"].decode()
    assert 'model_id = "alice/sentiment-lora"' in card  # the card loads from the repo it is pushed to
    assert "model_id = \"alice" not in (run.dir / "adapter" / "README.md").read_text()  # the run's own card unchanged
    # nothing else was sent: no data, no metrics, no eval.json, no checkpoints
    assert not any(b"a user's own file" in content for content in files.values())
    assert hub.paths() == ["/api/repos/create", "/api/validate-yaml", "/api/models/alice/sentiment-lora/preupload/main",
                           "/api/models/alice/sentiment-lora/commit/main"]


def test_push_to_a_branch_of_an_export(finished_run, hub, tmp_path):
    from tunesmith.report.card import write_card
    from tunesmith.runs.adapters import export
    from tunesmith.runs.publish import push

    out = export(finished_run.dir, tmp_path / "export", card=write_card)
    result = push(out, "alice/sentiment-export", revision="v1", card=write_card)
    assert "/api/models/alice/sentiment-export/branch/v1" in hub.paths()
    (commit,) = hub.commits
    assert commit["path"] == "/api/models/alice/sentiment-export/commit/v1"
    assert "tunesmith-export.json" not in commit["files"] and "adapter_model.safetensors" in commit["files"]
    assert result["revision"] == "v1" and result["commit_url"].endswith("/alice/sentiment-export/commit/" + "a" * 40)


def test_dry_run_lists_the_files_and_sends_nothing(finished_run, hub, monkeypatch):
    from tunesmith.cli import app

    monkeypatch.delenv("HF_TOKEN")  # a dry run needs no token
    result = CliRunner().invoke(app, ["push", str(finished_run.dir), "--repo", "alice/x", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert "would upload" in result.output and "adapter_model.safetensors" in result.output
    assert "tunesmith_config.yaml" in result.output
    assert "not uploaded:" in result.output and "eval.json" in result.output and "notes.txt" in result.output
    assert hub.sent() == []


@pytest.mark.parametrize("repo, why", [("sentiment-lora", "OWNER/NAME"), ("alice/bad name", "not a valid Hub repo id"),
                                       ("a/b/c", "OWNER/NAME")])
def test_an_invalid_repo_id_is_refused_before_anything_is_sent(finished_run, hub, repo, why):
    from tunesmith.cli import app

    result = CliRunner().invoke(app, ["push", str(finished_run.dir), "--repo", repo])
    assert result.exit_code == 2 and why in result.output and "Traceback" not in result.output
    assert hub.sent() == []


def test_no_token_is_a_clear_error(finished_run, hub, monkeypatch, tmp_path):
    import huggingface_hub.constants as constants

    from tunesmith.runs.publish import push

    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    with pytest.raises(TunesmithError, match=r"no Hugging Face token; set HF_TOKEN .* `hf auth login`"):
        push(finished_run.dir, "alice/x")
    assert hub.sent() == []


def test_an_unfinished_run_is_refused(finished_run, hub, tmp_path):
    import shutil

    from tunesmith.runs.publish import push

    stopped = tmp_path / "stopped"
    shutil.copytree(finished_run.dir, stopped)
    manifest = json.loads((stopped / "manifest.json").read_text())
    (stopped / "manifest.json").write_text(json.dumps({**manifest, "status": "running"}))
    with pytest.raises(TunesmithError, match="did not finish"):
        push(stopped, "alice/x")
    with pytest.raises(TunesmithError, match="not a tunesmith run folder"):
        push(tmp_path, "alice/x")
    assert hub.sent() == []


def test_a_refused_token_names_the_fix(finished_run, hub, monkeypatch):
    from tunesmith.runs.publish import push

    monkeypatch.setattr(hub, "answer", lambda path, body: (401, {"error": "Invalid credentials"}))
    with pytest.raises(TunesmithError, match=r"HTTP 401.*token was refused"):
        push(finished_run.dir, "alice/x")


def test_an_unreachable_hub_is_named(finished_run, monkeypatch):
    from tunesmith.runs.publish import push

    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # nothing listens on the discard port
    with pytest.raises(TunesmithError, match="cannot reach http://127.0.0.1:9"):
        push(Path(finished_run.dir), "alice/x")


def test_push_help():
    from tunesmith.cli import app

    result = CliRunner().invoke(app, ["push", "--help"])
    assert result.exit_code == 0 and "--dry-run" in result.output and "--merge" in result.output


def test_push_merge_uploads_a_standalone_model(finished_run, hub):
    from tunesmith.report.card import write_card
    from tunesmith.runs.publish import push

    push(finished_run.dir, "alice/sentiment-merged", merge=True, card=write_card)
    (commit,) = hub.commits
    files = commit["files"]
    assert {"config.json", "model.safetensors", "README.md", "tunesmith_config.yaml"} <= set(files)
    assert not any(name.startswith("adapter_") for name in files) and "tunesmith-export.json" not in files
    card = files["README.md"].decode()
    assert "library_name: transformers" in card and 'model_id = "alice/sentiment-merged"' in card
