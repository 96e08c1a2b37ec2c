"""What one request may ask of `tunesmith serve` (prompts, body bytes, new tokens; strict types; bad JSON), a port
already in use refused before any model loads, and one studio server per folder. A plain tiny Llama served with
--model: no run is trained here."""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import httpx
import pytest
from typer.testing import CliRunner

pytest.importorskip("fastapi")

from tunesmith.cli import app as cli_app  # noqa: E402
from tunesmith.errors import TunesmithError  # noqa: E402
from tunesmith.serve.app import create_app  # noqa: E402
from tunesmith.serve.limits import Limits  # noqa: E402
from tunesmith.web import background, bind, claim_folder  # noqa: E402


@pytest.fixture(scope="module")
def server(plain_registry):
    """Small limits, so that every one is reached cheaply."""
    with background(create_app(plain_registry, limits=Limits(max_prompts=4, max_body_bytes=2000, max_request_tokens=20))) as (url, _):
        yield url


@pytest.fixture(scope="module")
def model(plain_registry):
    return next(iter(plain_registry.models))


def completions(server, body, **kw):
    return httpx.post(server + "/v1/completions", json=body, timeout=60, **kw)


def error(answer) -> dict:
    assert answer.status_code == 400, answer.text
    return answer.json()["error"]


def test_malformed_json_names_the_character_not_a_parameter(server):
    got = error(httpx.post(server + "/v1/chat/completions", content=b'{"model": "x", "messages": [}',
                           headers={"content-type": "application/json"}))
    assert got["param"] is None and got["type"] == "invalid_request_error"
    assert got["message"].startswith("the request body is not valid JSON (at character 28")


def test_numbers_and_booleans_are_strict(server, model):
    got = error(completions(server, {"model": model, "prompt": "Hi", "max_tokens": "8"}))
    assert got["param"] == "max_tokens" and 'got the string "8"' in got["message"]
    got = error(httpx.post(server + "/v1/chat/completions", json={"model": model, "n": True,
                                                                  "messages": [{"role": "user", "content": "Hi"}]}))
    assert got["param"] == "n" and "valid integer" in got["message"]
    assert error(completions(server, {"model": model, "prompt": "Hi", "stream": "true"}))["param"] == "stream"
    assert error(completions(server, {"model": model, "prompt": "Hi", "temperature": "0"}))["param"] == "temperature"
    ok = completions(server, {"model": model, "prompt": "Hi", "max_tokens": 2, "temperature": 0})  # an int is a number
    assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] == 2


def test_prompts_per_request(server, model):
    got = error(completions(server, {"model": model, "prompt": ["Hi"] * 5, "max_tokens": 1}))
    assert got["param"] == "prompt" and "5 prompts" in got["message"] and "at most 4 (--max-prompts)" in got["message"]
    assert completions(server, {"model": model, "prompt": ["Hi"] * 4, "max_tokens": 1}).status_code == 200
    assert completions(server, {"model": model, "prompt": [[1, 2]] * 5, "max_tokens": 1}).status_code == 400  # token ids


def test_body_bytes_declared_or_streamed(server, model):
    body = {"model": model, "prompt": "word " * 500, "max_tokens": 1}
    got = error(completions(server, body))
    assert "at most 2000 (--max-body-bytes)" in got["message"] and got["code"] == "request_too_large"

    def chunks():  # no Content-Length: sent chunked
        data = json.dumps(body).encode()
        for i in range(0, len(data), 500):
            yield data[i:i + 500]

    got = error(httpx.post(server + "/v1/completions", content=chunks(), headers={"content-type": "application/json"}))
    assert "--max-body-bytes" in got["message"]


def test_a_client_still_sending_a_refused_body_reads_the_400(server):
    """As curl sends a large chunked upload: the whole body goes out before the answer is read. The server reads the
    rest of the refused body (and drops it) before answering, so the client gets the 400, not a reset connection."""
    host, port = server.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        chunk = b"x" * 4096
        for _ in range(4096):  # 16 MiB (more than the sockets buffer) against a limit of 2000 bytes
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        sock.sendall(b"0\r\n\r\n")
        answer = b""
        while b"request_too_large" not in answer and (data := sock.recv(65536)):
            answer += data
    assert answer.startswith(b"HTTP/1.1 400") and b"--max-body-bytes" in answer


def test_requested_tokens_are_prompts_times_n_times_max_tokens(server, model):
    got = error(completions(server, {"model": model, "prompt": ["a", "b"], "n": 2, "max_tokens": 6}))
    assert got["param"] == "max_tokens" and "24 new tokens (2 prompts x n=2 x max_tokens=6)" in got["message"]
    assert "allows 20 per request (--max-request-tokens)" in got["message"]
    got = error(httpx.post(server + "/v1/chat/completions", json={"model": model, "n": 3, "max_tokens": 7,
                                                                  "messages": [{"role": "user", "content": "Hi"}]}))
    assert "--max-request-tokens" in got["message"]
    # without max_tokens, the default (16) is cut to what the limit leaves: 20 // (2 x 1) = 10 each
    done = completions(server, {"model": model, "prompt": ["a", "b"], "temperature": 0}).json()
    assert done["usage"]["completion_tokens"] <= 20 and {c["finish_reason"] for c in done["choices"]} <= {"length", "stop"}


def test_the_defaults_refuse_fifty_prompts(plain_registry, model):
    with background(create_app(plain_registry)) as (url, _):
        got = error(completions(url, {"model": model, "prompt": ["Hi"] * 50}))
    assert "at most 32 (--max-prompts)" in got["message"]


def test_the_api_key_is_checked_before_the_body(plain_registry):
    with background(create_app(plain_registry, api_key="k", limits=Limits(max_body_bytes=10))) as (url, _):
        assert httpx.post(url + "/v1/completions", json={"prompt": "x" * 100}).status_code == 401
        ok = httpx.post(url + "/v1/completions", json={"prompt": "x" * 100}, headers={"Authorization": "Bearer k"})
        assert ok.status_code == 400 and "--max-body-bytes" in ok.json()["error"]["message"]


def test_limits_are_whole_numbers():
    with pytest.raises(ValueError, match="--max-prompts"):
        Limits(max_prompts=0)


# --- the CLI -------------------------------------------------------------------------------------------------------


@pytest.fixture
def busy_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def test_a_port_in_use_is_refused_before_any_model_loads(busy_port, monkeypatch):
    calls = []
    monkeypatch.setattr("tunesmith.serve.server.serve", lambda *a, **kw: calls.append(kw))
    result = CliRunner().invoke(cli_app, ["serve", "--model", "no-such-model", "--port", str(busy_port)])
    assert result.exit_code == 2 and not calls and "Traceback" not in result.output
    assert f"--port {busy_port}" in result.output and "already in use" in result.output
    with pytest.raises(TunesmithError, match="--port"):
        bind("127.0.0.1", busy_port)


def test_cli_limit_flags(monkeypatch):
    calls = []
    monkeypatch.setattr("tunesmith.serve.server.serve", lambda specs, models, **kw: calls.append(kw))
    argv = ["serve", "--model", "m", "--port", "0", "--max-prompts", "3", "--max-body-bytes", "100",
            "--max-request-tokens", "50"]
    assert CliRunner().invoke(cli_app, argv).exit_code == 0
    assert calls[0]["limits"] == Limits(3, 100, 50) and calls[0]["sock"].fileno() == -1  # closed when serve returned
    assert CliRunner().invoke(cli_app, ["serve", "--model", "m", "--max-prompts", "0"]).exit_code == 2


# --- one studio server per folder ----------------------------------------------------------------------------------


def test_a_folder_has_one_server(tmp_path):
    with claim_folder(tmp_path, "tunesmith studio serve", host="127.0.0.1", port=8765):
        assert json.loads((tmp_path / "server.lock").read_text())["pid"] == os.getpid()
        with pytest.raises(TunesmithError, match=f"pid {os.getpid()}, port 8765"):
            with claim_folder(tmp_path, "tunesmith studio serve", host="127.0.0.1", port=9000):
                pass
    with claim_folder(tmp_path, "tunesmith studio serve", host="127.0.0.1", port=9000):  # released: free again
        pass


def test_another_process_holds_the_folder_until_it_dies(tmp_path):
    hold = textwrap.dedent(f"""
        import sys, time
        from tunesmith.web import claim_folder
        with claim_folder({str(tmp_path)!r}, "tunesmith studio serve", host="127.0.0.1", port=8123):
            print("held", flush=True)
            time.sleep(120)
    """)
    other = subprocess.Popen([sys.executable, "-c", hold], stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline().strip() == "held"
        with pytest.raises(TunesmithError, match=f"pid {other.pid}, port 8123"):
            with claim_folder(tmp_path, "tunesmith studio serve", host="127.0.0.1", port=8765):
                pass
    finally:
        other.send_signal(signal.SIGKILL)
        other.wait(30)
    assert json.loads((tmp_path / "server.lock").read_text())["pid"] == other.pid  # a stale lock, left behind
    with claim_folder(tmp_path, "tunesmith studio serve", host="127.0.0.1", port=8765):  # taken over
        assert json.loads((tmp_path / "server.lock").read_text())["port"] == 8765


def test_studio_serve_refuses_a_second_server(tmp_path):
    from test_studio import make_study

    studio, _ = make_study(tmp_path, prompts=1)
    with claim_folder(studio, "tunesmith studio serve", host="127.0.0.1", port=8765):
        started = time.time()
        result = CliRunner().invoke(cli_app, ["studio", "serve", str(studio), "--no-generate", "--port", "0"])
    assert result.exit_code == 2 and "Traceback" not in result.output and time.time() - started < 30
    assert "another `tunesmith studio serve` is already serving this folder" in result.output
    assert f"pid {os.getpid()}, port 8765" in result.output


def test_without_os_locks_the_pid_in_the_file_decides(tmp_path, monkeypatch):
    monkeypatch.setattr("tunesmith.web._lock", lambda fd: None)  # a file system without flock
    with claim_folder(tmp_path, "tunesmith studio serve", host="127.0.0.1", port=8765):
        with pytest.raises(TunesmithError, match=f"pid {os.getpid()}, port 8765"):
            with claim_folder(tmp_path, "tunesmith studio serve", host="127.0.0.1", port=9000):
                pass
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (tmp_path / "server.lock").write_text(json.dumps({"pid": int(dead.stdout), "port": 1, "hostname": socket.gethostname()}))
    with claim_folder(tmp_path, "tunesmith studio serve", host="127.0.0.1", port=9000):  # a dead pid: taken over
        assert json.loads((tmp_path / "server.lock").read_text())["pid"] == os.getpid()
