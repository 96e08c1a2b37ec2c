"""The board's forms and the try box: start a run (checked first, nothing started while the config has problems),
stop, resume, and prompt or classify with a finished run. Each needs the page's CSRF token."""

from __future__ import annotations

import json
import secrets
from urllib.parse import parse_qs, quote

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

from tunesmith.board.launch import parse_overrides
from tunesmith.board.pages import FIELDS, new_form, refusal
from tunesmith.errors import TunesmithError

MAX_BODY = 128 * 1024


class CsrfRefused(TunesmithError):
    pass


def add_routes(app: FastAPI) -> None:
    app.post("/new")(start)
    app.post("/stop/{root}/{rel:path}")(stop)
    app.post("/resume/{root}/{rel:path}")(resume)
    app.post("/api/try/{root}/{rel:path}")(try_run)
    app.add_exception_handler(CsrfRefused, csrf_refused)


async def csrf_refused(request: Request, err: CsrfRefused):
    return refusal(request, 403, "Form refused", str(err))


async def fields(request: Request) -> dict:
    """The POST body (a urlencoded form or a JSON object), after the CSRF check."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise TunesmithError(f"the request body is over {MAX_BODY // 1024} KB")
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            data = json.loads(body or b"{}")
        except ValueError:
            data = None
        if not isinstance(data, dict):
            raise TunesmithError("the body must be a JSON object")
    else:
        try:
            data = {k: v[0] for k, v in parse_qs(body.decode("utf-8"), keep_blank_values=True).items()}
        except UnicodeDecodeError:
            raise TunesmithError("the form is not UTF-8") from None
    given = request.headers.get("x-csrf-token") or data.get("csrf") or ""
    if not secrets.compare_digest(str(given).encode(), request.app.state.csrf.encode()):
        raise CsrfRefused("the form's CSRF token does not match this board (reload the page and send it again)")
    return data


async def start(request: Request):
    form = await fields(request)
    form = {k: v for k, v in form.items() if isinstance(v, str)}
    launcher = request.app.state.launcher
    root, name = form.get("root", "0"), form.get("name", "").strip()
    try:
        overrides = parse_overrides(form.get("overrides", ""), {key: form.get(key, "") for key, _ in FIELDS})
    except TunesmithError as err:
        return new_form(request, form, [str(err)], 400)
    problems, cmd, watch = await run_in_threadpool(
        launcher.prepare, root, name, form.get("shipped", ""), form.get("yaml", ""), overrides,
        form.get("overwrite") == "on")
    if problems:
        return new_form(request, form, problems, 400)
    run_id = launcher.spawn(root, watch, cmd)
    return RedirectResponse(f"/run/{quote(run_id)}", status_code=303)


async def stop(request: Request, root: str, rel: str):
    await fields(request)
    request.app.state.launcher.stop(root, rel)
    return RedirectResponse(f"/run/{quote(root)}/{quote(rel)}", status_code=303)


async def resume(request: Request, root: str, rel: str):
    await fields(request)
    request.app.state.launcher.resume(root, rel)
    return RedirectResponse(f"/run/{quote(root)}/{quote(rel)}", status_code=303)


async def try_run(request: Request, root: str, rel: str):
    data = await fields(request)
    folder = request.app.state.roots.resolve(root, rel)
    from tunesmith.runs.folder import finished_run

    if not finished_run(folder):
        raise TunesmithError(f"{rel}: only a finished run answers (this one has no saved model yet)")
    text = data.get("text")
    if not isinstance(text, str):
        raise TunesmithError("text must be a string")
    try:
        max_new = int(data.get("max_new_tokens") or 64)
    except (TypeError, ValueError):
        raise TunesmithError("max_new_tokens must be a whole number") from None
    answer = await run_in_threadpool(request.app.state.chat.answer, folder, text, max_new,
                                     bool(data.get("with_base", True)))
    return JSONResponse(answer, headers={"Cache-Control": "no-store"})
