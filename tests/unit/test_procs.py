"""Child processes (tunesmith.procs): whether a pid is alive (not this process, not a zombie), a child that dies
with its parent, and the line of a child's log that says why it failed."""

import os
import signal
import subprocess
import sys
import time

import pytest

from tunesmith.procs import alive, error_line, parent_death_hook


def test_alive_is_false_for_this_process_nonsense_and_an_exited_child():
    assert not alive(os.getpid()) and not alive(None) and not alive("12")
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert alive(child.pid)
    finally:
        child.kill()
    time.sleep(0.5)  # exited, not yet reaped: a zombie
    assert not alive(child.pid)
    child.wait()
    assert not alive(child.pid)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
def test_a_child_with_the_hook_gets_the_signal_when_its_parent_dies():
    parent = subprocess.Popen([sys.executable, "-c", (
        "import signal, subprocess, sys, time\n"
        "from tunesmith.procs import parent_death_hook\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'],"
        " preexec_fn=parent_death_hook(signal.SIGTERM))\n"
        "print(child.pid, flush=True)\n"
        "time.sleep(60)\n")], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    assert alive(child)
    parent.kill()
    parent.wait()
    deadline = time.time() + 10
    while alive(child) and time.time() < deadline:
        time.sleep(0.1)
    assert not alive(child)
    assert callable(parent_death_hook()) and parent_death_hook(signal.SIGTERM).args == (signal.SIGTERM,)


def test_error_line_names_the_error_else_the_last_line_else_the_exit_status(tmp_path):
    log = tmp_path / "run.log"
    log.write_text("loading\nerror: data.source: 'x.jsonl' is not a file\nbye\n\n")
    assert error_line(log, 2) == "error: data.source: 'x.jsonl' is not a file"
    log.write_text("loading\n  killed at step 3  \n")
    assert error_line(log, -9) == "killed at step 3"
    log.write_text("")
    assert error_line(log, 1) == "exit status 1" and error_line(tmp_path / "none.log", 1) == "exit status 1"


def ignore_sigint():  # what a shell does to a job started with `&`
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.skipif(os.name != "posix", reason="SIGINT dispositions are POSIX")
def test_a_process_started_with_sigint_ignored_answers_ctrl_c_again():
    code = ("import signal, time; from tunesmith.procs import answer_ctrl_c; ignored = signal.getsignal(signal.SIGINT)"
            " == signal.SIG_IGN; answer_ctrl_c(); print(ignored, flush=True)\n"
            "try:\n    time.sleep(30)\nexcept KeyboardInterrupt:\n    print('interrupted', flush=True)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, preexec_fn=ignore_sigint)
    assert proc.stdout.readline().strip() == "True"  # it really started with SIGINT ignored
    os.kill(proc.pid, signal.SIGINT)
    out, _ = proc.communicate(timeout=20)
    assert out.strip() == "interrupted"
