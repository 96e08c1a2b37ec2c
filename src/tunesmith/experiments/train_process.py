"""`tunesmith train` in a child process, for the experiments made of several runs: each run in its own process (so
peak memory is its own, and a crash stays its own), its output in a log file. The child gets SIGTERM when this
process dies, so a killed experiment does not leave a run training on (and writing into its folder) unseen; it is
stopped (SIGTERM, then SIGKILL) when this process is interrupted or when the watcher asks (a pruned sweep trial)."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from tunesmith.procs import error_line, parent_death_hook

GRACE_SECONDS = 10.0  # a stopped run's process gets this long to end after SIGTERM before SIGKILL


def train_command(config_path: Path, run_dir: Path, trust_remote_code: bool = False) -> list[str]:
    cmd = [sys.executable, "-m", "tunesmith.cli", "train", str(config_path), "--out", str(run_dir), "--overwrite"]
    return cmd + (["--trust-remote-code"] if trust_remote_code else [])


def run_train(config_path: Path, run_dir: Path, log_path: Path, trust_remote_code: bool = False, *,
              watch: Callable[[], bool] | None = None, poll_seconds: float = 1.0) -> int | None:
    """Train in a child process, its output in log_path; every poll_seconds while it runs, call `watch` (if given),
    and stop the process when it returns True. Returns the exit status, or None when `watch` stopped it."""
    with Path(log_path).open("w") as fh:
        proc = subprocess.Popen(train_command(config_path, run_dir, trust_remote_code), stdout=fh,
                                stderr=subprocess.STDOUT, preexec_fn=parent_death_hook(signal.SIGTERM))
        try:
            while True:
                try:
                    return proc.wait(timeout=poll_seconds)
                except subprocess.TimeoutExpired:
                    pass
                if watch is not None and watch():
                    stop(proc)
                    return None
        except BaseException:  # Ctrl-C or an error in `watch`: the run does not go on without us
            stop(proc)
            raise


def train_in_subprocess(config_path: Path, run_dir: Path, log_path: Path, trust_remote_code: bool = False) -> str | None:
    """Run `tunesmith train` to its end in its own process; None on success, else the error it printed."""
    code = run_train(config_path, run_dir, log_path, trust_remote_code)
    return None if code == 0 else error_line(log_path, code)


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL if the process has not ended after GRACE_SECONDS."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
