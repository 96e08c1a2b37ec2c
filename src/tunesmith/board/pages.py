"""The board's pages (runs, one run, start a run, compare) and the JSON their scripts poll (the runs table, a run's
new metrics lines). Every run is named ROOT/REL and resolved through paths.Roots before a file is read."""

from __future__ import annotations

import asyncio
import json
import time

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from tunesmith.board import compare, scan
from tunesmith.board.launch import shipped_configs
from tunesmith.runs.folder import run_marker

RESTARTABLE = ("stopped", "unfinished", "failed")  # shown as starting while the board's resume process loads
STREAM_SECONDS = 10  # a Ctrl-C waits at most this long for an open page's stream
REPORT_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; sandbox"
FIELDS = (("train.max_steps", "max steps"), ("train.learning_rate", "learning rate"),
          ("train.num_train_epochs", "epochs"), ("train.save_steps", "checkpoint every N steps"),
          ("data.train_size", "train examples"))


def num(value, digits: int = 4) -> str:
    """A number for a table cell: – when missing, thousands separated, floats rounded."""
    if value is None or isinstance(value, bool):
        return "–"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:,.{digits}f}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def page(request: Request, name: str, status: int = 200, **context) -> HTMLResponse:
    state = request.app.state
    html = state.templates.get_template(name).render(csrf=state.csrf, roots=state.roots.dirs, **context)
    return HTMLResponse(html, status_code=status)


def refusal(request: Request, status: int, title: str, message: str) -> Response:
    if "/api/" in request.url.path:
        return JSONResponse({"error": message}, status_code=status)
    html = request.app.state.templates.get_template("error.html").render(title=title, message=message)
    return HTMLResponse(html, status_code=status)


def add_routes(app: FastAPI) -> None:
    app.get("/", response_class=HTMLResponse)(runs_page)
    app.get("/api/runs")(runs_json)
    app.get("/run/{root}/{rel:path}", response_class=HTMLResponse)(run_page)
    app.get("/api/metrics/{root}/{rel:path}")(metrics_json)
    app.get("/api/events/{root}/{rel:path}")(events)
    app.get("/report/{root}/{rel:path}")(report)
    app.get("/new", response_class=HTMLResponse)(new_page)
    app.get("/compare", response_class=HTMLResponse)(compare_page)


def rows(request: Request) -> list[dict]:
    state = request.app.state
    found = scan.all_runs(state.roots)
    known = {r["id"] for r in found}
    for r in found:
        if r["status"] in RESTARTABLE and state.launcher.busy(r["id"]):
            r["status"] = "starting"
    return [r for r in state.launcher.pending() if r["id"] not in known] + found


def runs_page(request: Request):
    return page(request, "runs.html", title="Runs", runs=rows(request))


def runs_json(request: Request):
    return JSONResponse({"runs": rows(request)})


def folder_of(request: Request, root: str, rel: str):
    folder = request.app.state.roots.resolve(root, rel)
    manifest = run_marker(folder)
    return folder, manifest


def run_page(request: Request, root: str, rel: str):
    folder, manifest = folder_of(request, root, rel)
    run_id = f"{root}/{rel}"
    if manifest is None:
        pending = [r for r in request.app.state.launcher.pending() if r["id"] == run_id]
        if not pending:
            raise HTTPException(404)
        return page(request, "run.html", title=rel, run=pending[0], config="", results={}, metrics=[],
                    log=request.app.state.launcher.log_tail(root, rel))
    row = scan.summary(run_id, folder, manifest)
    if row["status"] in RESTARTABLE and request.app.state.launcher.busy(run_id):
        row["status"] = "starting"
    config = folder / "config.yaml"
    text = config.read_text(errors="replace") if config.is_file() else json.dumps(
        manifest.get("started_config") or {}, indent=2)
    results = scan.read_eval(folder)
    table = eval_table(results)
    return page(request, "run.html", title=rel, run=row, config=text, table=table, preview=scan.read_preview(folder),
                has_report=(folder / "report.html").is_file(), log=request.app.state.launcher.log_tail(root, rel))


def eval_table(results: dict) -> list[tuple]:
    """(metric, base, tuned, change) for every number both sides have."""
    base, tuned = scan.scalars(results.get("base")), scan.scalars(results.get("tuned"))
    return [(k, base.get(k), tuned.get(k), tuned[k] - base[k] if k in base else None) for k in tuned]


def metrics_json(request: Request, root: str, rel: str, offset: int = 0):
    return JSONResponse(metrics_since(request, root, rel, offset))


async def events(request: Request, root: str, rel: str, offset: int = 0):
    """Server-sent events: each new batch of metrics.jsonl lines (as metrics_json's answer) when it is written. A
    stream lasts STREAM_SECONDS at most (a server stopping is never held up long); the browser reconnects with the
    last event id, the byte offset it has read to."""
    folder_of(request, root, rel)  # refused before the stream starts
    last = request.headers.get("last-event-id")
    start = int(last) if last and last.isdigit() else max(0, offset)

    async def stream():
        position, deadline = start, time.monotonic() + STREAM_SECONDS
        yield "retry: 1000\n\n"
        while time.monotonic() < deadline and not await request.is_disconnected():
            data = await run_in_threadpool(metrics_since, request, root, rel, position)
            if data["rows"] or data["offset"] != position or position == start:
                position = data["offset"]
                yield f"id: {position}\ndata: {json.dumps(data)}\n\n"
            if data["status"] not in ("running", "starting"):
                return
            await asyncio.sleep(1.0)

    return StreamingResponse(stream(), media_type="text/event-stream")


def metrics_since(request: Request, root: str, rel: str, offset: int) -> dict:
    folder, manifest = folder_of(request, root, rel)
    lines, end = scan.metrics_from(folder, offset)
    state = scan.status(folder, manifest) if manifest else "starting"
    if state in RESTARTABLE and request.app.state.launcher.busy(f"{root}/{rel}"):
        state = "starting"
    max_steps = ((manifest or {}).get("started_config") or {}).get("train", {}).get("max_steps")
    recent, _ = scan.metrics_from(folder, max(0, end - 8192)) if end else ([], 0)
    return {"rows": lines, "offset": end, "status": state, "pace": scan.pace(recent, max_steps),
            "log": request.app.state.launcher.log_tail(root, rel)}


def report(request: Request, root: str, rel: str):
    folder, manifest = folder_of(request, root, rel)
    path = folder / "report.html"
    if manifest is None or not path.is_file():
        raise HTTPException(404)
    return Response(path.read_bytes(), media_type="text/html; charset=utf-8",
                    headers={"Content-Security-Policy": REPORT_CSP})


def new_page(request: Request):
    return new_form(request, {}, [])


def new_form(request: Request, form: dict, problems: list[str], status: int = 200):
    state = request.app.state
    return page(request, "new.html", status, title="Start a run", fields=FIELDS, form=form, problems=problems,
                configs=list(shipped_configs(state.launcher.configs_dir)))


def compare_page(request: Request):
    ids = request.query_params.getlist("run")
    result = compare.comparison(request.app.state.roots, ids) if ids else None
    return page(request, "compare.html", title="Compare runs", result=result,
                finished=[r for r in scan.all_runs(request.app.state.roots) if r["status"] == "finished"])
