"""Starting, stopping and resuming runs from the board. A run is an ordinary `tunesmith train` process in its own
session (it outlives the board, and `tunesmith` commands see it as any run): its config and log are kept in
ROOT/.board/ (configs/NAME.yaml for a pasted config, logs/NAME.log). Before anything starts, the config goes through
the checks `tunesmith validate` makes (the config with its overrides, then its data with the objective's checks);
the run folder follows the CLI's rules (an existing folder is replaced only when asked, and only if tunesmith made it).
Stop sends SIGINT, as Ctrl-C: the run ends as "interrupted" (stopped), resumable from its last checkpoint."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tunesmith.board.paths import Roots, check_name
from tunesmith.errors import TunesmithError
from tunesmith.procs import alive, error_line
from tunesmith.runs.folder import last_checkpoint, plan_output, run_marker

MAX_YAML = 64 * 1024


def shipped_configs(folder: Path | None) -> dict[str, Path]:
    """name -> path of the YAML files in the configs folder the board was started with (none: an empty list)."""
    if folder is None or not Path(folder).is_dir():
        return {}
    return {p.name: p for p in sorted(Path(folder).glob("*.yaml")) if p.is_file()}


def parse_overrides(text: str, fields: dict) -> list[str]:
    """key=value lines of the overrides box plus the override fields that were filled in (train.max_steps...)."""
    items = [line.strip() for line in (text or "").splitlines() if line.strip() and not line.strip().startswith("#")]
    for line in items:
        if "=" not in line:
            raise TunesmithError(f"overrides: {line[:80]!r} is not key=value (e.g. train.learning_rate=1e-4)")
    items += [f"{key}={value.strip()}" for key, value in fields.items() if isinstance(value, str) and value.strip()]
    return items


def check_config(config_path: Path, overrides: list[str]) -> list[str]:
    """The problems `tunesmith validate` would print (empty: the run may start)."""
    from tunesmith.config import load_config

    try:
        cfg = load_config(config_path, overrides)
    except TunesmithError as err:
        return [str(err)]
    try:
        from tunesmith.hardware import bf16_problems
        from tunesmith.report.tracking import missing_trackers

        problems = bf16_problems(cfg.train) + missing_trackers(cfg.train.report_to)
        if problems:
            return problems
        from tunesmith.training.prepare import Prepared

        Prepared(cfg, announce=False)  # the data: columns, labels, the objective's checks
    except TunesmithError as err:
        return [str(err)]
    return []


def folder_problem(target: Path, overwrite: bool) -> tuple[str | None, Path]:
    """The CLI's run folder rule (runs.folder.plan_output) and the folder the run writes while it trains (beside
    an existing run when it replaces it)."""
    try:
        plan = plan_output(target, overwrite=overwrite)
    except TunesmithError as err:
        return str(err).replace("pass --overwrite", "tick \"replace the existing run\"").replace(
            "--out to choose another folder", "choose another name"), target
    return None, plan.stage


class Launcher:
    """The runs this board started (their processes, reaped here) and the actions on runs."""

    def __init__(self, roots: Roots, configs_dir: Path | None = None):
        self.roots, self.configs_dir = roots, configs_dir
        self.started: dict[str, tuple[subprocess.Popen, Path, float]] = {}  # run id -> process, log, start time
        self.resumed: dict[str, subprocess.Popen] = {}  # run id -> the `train --resume` process started here

    def prepare(self, root: str, name: str, shipped: str, yaml_text: str, overrides: list[str],
                overwrite: bool) -> tuple[list[str], list[str] | None, str]:
        """(problems, the command to start, the name of the folder it writes while it trains): the config checked
        and the folder rules applied, nothing started."""
        try:
            check_name(name)
            target = self.roots.resolve(root, name)
        except TunesmithError as err:
            return [f"run name: {err}"], None, name
        if shipped:
            configs = shipped_configs(self.configs_dir)
            if shipped not in configs:
                return [f"no shipped config named {shipped[:80]!r}"], None, name
            config_path = configs[shipped]
        else:
            if not yaml_text.strip():
                return ["paste a config (YAML) or choose a shipped one"], None, name
            if len(yaml_text) > MAX_YAML:
                return [f"the config is over {MAX_YAML // 1024} KB"], None, name
            config_path = self.roots.board_dir(root, "configs") / f"{name.replace('/', '__')}.yaml"
            config_path.write_text(yaml_text, encoding="utf-8")
        problem, stage = folder_problem(target, overwrite)
        problems = ([problem] if problem else []) + check_config(config_path, overrides)
        watch = name if stage == target else f"{name.rsplit('/', 1)[0]}/{stage.name}" if "/" in name else stage.name
        if problems:
            return problems, None, watch
        cmd = [sys.executable, "-m", "tunesmith.cli", "train", str(config_path), *overrides, "--out", str(target)]
        return [], cmd + (["--overwrite"] if overwrite else []), watch

    def spawn(self, root: str, name: str, cmd: list[str]) -> str:
        """Start `tunesmith train` in its own session; its output goes to ROOT/.board/logs/NAME.log."""
        log_path = self.roots.board_dir(root, "logs") / f"{name.replace('/', '__')}.log"
        with log_path.open("w") as fh:
            proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        run_id = f"{root}/{name}"
        self.started[run_id] = (proc, log_path, time.time())
        return run_id

    def pending(self) -> list[dict]:
        """Rows for runs started here whose folder has no manifest yet (loading) or whose process failed at once."""
        rows = []
        for run_id, (proc, log_path, _) in list(self.started.items()):
            root, rel = run_id.split("/", 1)
            if run_marker(self.roots.resolve(root, rel)) is not None:
                proc.poll()  # reap it once it ends
                continue
            code = proc.poll()
            if code == 0:  # it finished (a replacing run's folder was swapped in under its own name)
                del self.started[run_id]
                continue
            row = {"id": run_id, "name": rel, "status": "starting" if code is None else "failed",
                   "error": None if code is None else error_line(log_path, code), "pending": True}
            rows.append(row)
        return rows

    def busy(self, run_id: str) -> bool:
        """A resume this board started for the run is still going (its manifest may not say so yet)."""
        proc = self.resumed.get(run_id)
        return proc is not None and proc.poll() is None

    def stop(self, root: str, rel: str) -> str:
        folder = self.roots.resolve(root, rel)
        manifest = run_marker(folder) or {}
        pid = manifest.get("pid")
        if manifest.get("status") != "running" or not alive(pid) or not _is_tunesmith(pid):
            raise TunesmithError(f"{rel}: not running, nothing to stop")
        os.kill(pid, signal.SIGINT)  # as Ctrl-C: the run ends as interrupted and keeps its checkpoints
        return f"asked {rel} (pid {pid}) to stop; it ends as stopped after the step in flight"

    def resume(self, root: str, rel: str) -> str:
        folder = self.roots.resolve(root, rel)
        manifest = run_marker(folder) or {}
        if manifest.get("status") == "running" and alive(manifest.get("pid")):
            raise TunesmithError(f"{rel}: still running")
        checkpoint = last_checkpoint(folder)
        if checkpoint is None:
            raise TunesmithError(f"{rel}: no complete checkpoint to resume from (set train.save_steps to keep them); "
                                 "start it again instead")
        cmd = [sys.executable, "-m", "tunesmith.cli", "train", "--resume", str(folder)]
        run_id = self.spawn(root, rel, cmd)
        self.resumed[run_id] = self.started[run_id][0]
        return f"resuming {rel} from {checkpoint.name}"

    def log_tail(self, root: str, rel: str, lines: int = 30) -> str:
        path = self.roots.board_dir(root, "logs") / f"{rel.replace('/', '__')}.log"
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def _is_tunesmith(pid: int) -> bool:
    """The pid still belongs to a tunesmith process (not a new process that reused the number)."""
    try:
        return b"tunesmith" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return sys.platform != "linux"
