"""`tunesmith push`: a finished run's tuned model, or an export of it, to a Hugging Face Hub model repo.

Only what makes the model: the weights folder's model files (weights, model and adapter configs, tokenizer, chat
template, label names), the model card (README.md, written again with the repo id in its usage snippet) and the
run's tunesmith config (as tunesmith_config.yaml). Never the data, checkpoints, scratch, metrics, plots or the
export marker. Through huggingface_hub: create_repo, create_branch (--revision), upload_folder; the token from the
standard places (HF_TOKEN, `hf auth login`); HF_ENDPOINT for another hub (tests use a local stand-in)."""

from __future__ import annotations

import fnmatch
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from tunesmith.assets.hub import hub_offline
from tunesmith.errors import TunesmithError
from tunesmith.runs.folder import EXPORT_MARKER, check_run_folder, read_json_file

log = logging.getLogger("tunesmith")

# The files of a saved model (transformers / PEFT / tokenizers layouts), anywhere in the weights folder.
MODEL_FILES = ("*.safetensors", "*.safetensors.index.json", "*.bin", "*.bin.index.json", "*.json", "*.model",
               "*.txt", "*.jinja", "*.tiktoken", "*.py", "README.md")
NEVER = (EXPORT_MARKER, "training_args.bin", "optimizer.*", "scheduler.*", "rng_state*", "trainer_state.json", ".*")
CONFIG_IN_REPO = "tunesmith_config.yaml"


@dataclass
class PushPlan:
    source: Path  # the folder whose model files go up (a run's weights folder, an export)
    kind: str  # "run" or "export"
    run_dir: Path | None  # the run the model comes from, where it is still on disk (for the card)
    files: dict[str, Path] = field(default_factory=dict)  # path in the repo -> file on this machine
    left_out: list[str] = field(default_factory=list)  # files of the folder that are not uploaded

    @property
    def name(self) -> str:
        return (self.run_dir or self.source).name


def check_repo_id(repo: str) -> str:
    """OWNER/NAME as the Hub spells repo ids; else one error with what was found and the fix."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    problem = None if repo.count("/") == 1 and all(repo.split("/")) else "it must be OWNER/NAME (your user or organisation, a slash, the model's name)"
    if problem is None:
        try:
            validate_repo_id(repo)
        except HFValidationError as err:
            problem = str(err).splitlines()[0]
    if problem:
        raise TunesmithError(f"--repo {repo!r} is not a valid Hub repo id: {problem.rstrip('.')}; e.g. --repo alice/sentiment-lora")
    return repo


def _model_files(folder: Path) -> tuple[dict[str, Path], list[str]]:
    files, left_out = {}, []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        rel = path.relative_to(folder).as_posix()
        wanted = any(fnmatch.fnmatch(path.name, pattern) for pattern in MODEL_FILES)
        never = any(fnmatch.fnmatch(part, pattern) for part in Path(rel).parts for pattern in NEVER)
        if wanted and not never:
            files[rel] = path
        else:
            left_out.append(rel)
    return files, left_out


def plan_push(source: str | Path) -> PushPlan:
    """What `push` uploads from a run folder or an export folder."""
    source = Path(source).expanduser()
    if (source / EXPORT_MARKER).is_file():
        marker = read_json_file(source / EXPORT_MARKER)
        run_dir = Path(marker["run"]) if marker.get("run") and (Path(marker["run"]) / "manifest.json").is_file() else None
        files, left_out = _model_files(source)
        return PushPlan(source, "export", run_dir, files, left_out)
    manifest = check_run_folder(source)  # a run that did not finish (or is not a run) stops here, with the reason
    weights = source / manifest["saved"]
    files, left_out = _model_files(weights)
    files[CONFIG_IN_REPO] = source / "config.yaml"
    left_out += sorted(p.name + ("/" if p.is_dir() else "") for p in source.iterdir()
                       if p != weights and p.name != "config.yaml")
    return PushPlan(weights, "run", source, files, left_out)


def _token() -> str:
    import huggingface_hub

    if hub_offline():
        raise TunesmithError("push: HF_HUB_OFFLINE is set, so nothing may be sent to the hub; unset it to push")
    token = huggingface_hub.get_token()
    if not token:
        raise TunesmithError("push: no Hugging Face token; set HF_TOKEN to a token with write access "
                             "(https://huggingface.co/settings/tokens) or log in once with `hf auth login`")
    return token


def _stage(plan: PushPlan, folder: Path, repo: str, card: Callable | None) -> None:
    """The files to upload, linked (or copied) into `folder`, with a fresh card that names the repo."""
    for rel, path in plan.files.items():
        target = folder / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, target)
        except OSError:  # another file system
            shutil.copy2(path, target)
    if card is not None and plan.run_dir is not None:
        marker = plan.source / EXPORT_MARKER
        if marker.is_file():  # the card says what the export is (merged, a rank cut)
            shutil.copy2(marker, folder / EXPORT_MARKER)
        (folder / "README.md").unlink(missing_ok=True)  # a hard link to the original: never write through it
        card(plan.run_dir, folder, repo=repo)
        (folder / EXPORT_MARKER).unlink(missing_ok=True)
    elif not (folder / "README.md").is_file():
        log.warning("push: %s has no model card (README.md); the repo gets none", plan.source)


def push(source, repo: str, *, private: bool = False, revision: str | None = None, merge: bool = False,
         dry_run: bool = False, card: Callable | None = None, trust_remote_code: bool = False) -> dict:
    """Upload a run's tuned model (or an export) to the Hub repo `repo` (created if absent; `private` then). `merge`:
    a run's LoRA-family adapter folded into the base first (an export to a temporary folder). `card(run_dir, folder,
    repo=...)` writes the model card (the CLI passes tunesmith.report.card.write_card). `dry_run`: only what would go.
    Returns {"repo", "revision", "files": {path in repo: bytes}, "left_out", "commit_url" (None for a dry run)}."""
    check_repo_id(repo)
    plan = plan_push(source)
    if merge and plan.kind == "export":
        raise TunesmithError(f"push --merge: {source} is already an export; push it as it is, or push the run with --merge")
    token = None if dry_run else _token()  # before any merging
    with tempfile.TemporaryDirectory(prefix="tunesmith-push-") as tmp:
        if merge:
            from tunesmith.runs.adapters import export

            merged = export(plan.run_dir, Path(tmp) / "merged", merge=True, trust_remote_code=trust_remote_code, card=card)
            config = plan.files[CONFIG_IN_REPO]
            plan = plan_push(merged)
            plan.files[CONFIG_IN_REPO] = config
        sizes = {rel: path.stat().st_size for rel, path in plan.files.items()}
        if card is not None and plan.run_dir is not None:
            sizes.setdefault("README.md", 0)  # written when pushing, with the repo id in its snippet
        result = {"repo": repo, "revision": revision or "main", "files": sizes, "left_out": plan.left_out,
                  "commit_url": None}
        if dry_run:
            return result
        stage = Path(tmp) / "upload"
        stage.mkdir()
        _stage(plan, stage, repo, card)
        result["files"] = {p.relative_to(stage).as_posix(): p.stat().st_size for p in sorted(stage.rglob("*")) if p.is_file()}
        result["commit_url"] = _upload(stage, repo, token, private=private, revision=revision, plan=plan)
    return result


def _upload(folder: Path, repo: str, token: str, *, private: bool, revision: str | None, plan: PushPlan) -> str:
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    endpoint = os.environ.get("HF_ENDPOINT") or None  # read now, not when huggingface_hub was imported
    api = HfApi(endpoint=endpoint, token=token)
    where = endpoint or "https://huggingface.co"
    message = f"tunesmith push: {plan.kind} {plan.name}"
    if plan.run_dir is not None and (plan.run_dir / "manifest.json").is_file():
        manifest = read_json_file(plan.run_dir / "manifest.json")
        message += f" ({manifest.get('method')}, {manifest.get('objective')} on {manifest.get('model')})"
    try:
        api.create_repo(repo, private=private, exist_ok=True, repo_type="model")
        if revision:
            api.create_branch(repo, branch=revision, exist_ok=True)
        info = api.upload_folder(repo_id=repo, folder_path=folder, commit_message=message, revision=revision)
    except HfHubHTTPError as err:
        status = getattr(err.response, "status_code", None)
        why = {401: "the token was refused (expired or mistyped); set HF_TOKEN to a valid token or run `hf auth login`",
               403: f"the token may not write to {repo.split('/')[0]!r}; use a token with write access to it, or your own "
                    "user name as OWNER"}.get(status, str(err).splitlines()[0])
        raise TunesmithError(f"push to {repo} on {where} failed (HTTP {status}): {why}") from err
    except OSError as err:  # connection refused, DNS, timeouts (httpx errors are not OSErrors; see below)
        raise TunesmithError(f"push: cannot reach {where} ({err}); check the network or HF_ENDPOINT") from err
    except Exception as err:
        if type(err).__module__.startswith(("httpx", "httpcore")):
            raise TunesmithError(f"push: cannot reach {where} ({type(err).__name__}: {err}); check the network or "
                                 "HF_ENDPOINT") from err
        raise
    log.info("Pushed %d files to %s (%s)", len(list(folder.rglob("*"))), repo, info.commit_url)
    return info.commit_url
