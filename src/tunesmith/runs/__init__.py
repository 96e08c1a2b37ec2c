"""Run folders: the rules for writing and reading them (folder.py) and a finished run as an object (run.py)."""

from tunesmith.runs.folder import (
    EXPORT_MARKER,
    RUN_ENTRIES,
    RUN_FORMAT,
    OutputPlan,
    check_run_folder,
    check_weights,
    commit_output,
    discard_output,
    is_finished,
    plan_output,
    read_json_file,
    run_marker,
    start_manifest,
    write_export_marker,
)
from tunesmith.runs.run import Run, load_run

__all__ = ["EXPORT_MARKER", "RUN_ENTRIES", "RUN_FORMAT", "OutputPlan", "Run", "check_run_folder", "check_weights",
           "commit_output", "discard_output", "is_finished", "load_run", "plan_output", "read_json_file", "run_marker",
           "start_manifest", "write_export_marker"]
