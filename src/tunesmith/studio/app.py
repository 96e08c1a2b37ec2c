"""The studio's web app: rater pages and their JSON API under /r/TOKEN, the owner page under /o/TOKEN.

Security, in order of the request:
- the token in the path is looked up by its SHA-256 hash; a missing or wrong token, and any unknown path, is 403;
- the first page load of a link starts a session: a random cookie (HttpOnly, SameSite=Strict, its path limited to
  that link) whose hash is stored with a CSRF token; every POST needs that cookie and the CSRF token (form field
  `csrf` or header X-CSRF-Token), else 403;
- a rater's routes read and write only that rater's answers (queue.py takes the rater, never a rater id from the
  request); the owner page needs the owner token;
- pages are Jinja2 templates with autoescaping on, and a Content-Security-Policy allows scripts only from
  /static, so a response holding HTML or <script> is shown as text and never runs; no referrer is sent (the
  token is in the URL), nothing is cached;
- the database is opened per request; queue.py writes in transactions with parameterized statements.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from urllib.parse import parse_qs

from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.exceptions import HTTPException

from tunesmith.studio import owner, queue
from tunesmith.studio.db import open_studio
from tunesmith.studio.study import settings

HERE = Path(__file__).parent
MAX_BODY = 64 * 1024
COOKIE = "studio_session"
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                               "form-action 'self'; connect-src 'self'; base-uri 'none'; frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}
STATIC = {"studio.js": "text/javascript; charset=utf-8", "studio.css": "text/css; charset=utf-8"}


class Forbidden(Exception):
    """No valid token, session or CSRF token: 403."""


class BadRequest(Exception):
    """A request the page could not have sent: 400."""


def templates():
    from jinja2 import Environment, FileSystemLoader

    env = Environment(loader=FileSystemLoader(str(HERE / "templates")), autoescape=True)
    env.filters["fmt"] = owner.fmt
    return env


def create_app(studio_dir: str | Path, generation=None) -> FastAPI:
    """The app for one studio folder; `generation` (a GenerationJob) is shown on the owner page while it runs."""
    studio_dir = Path(studio_dir)
    open_studio(studio_dir).close()  # a folder that is no studio fails here, before serving
    env = templates()
    app = FastAPI(title="tunesmith studio", docs_url=None, redoc_url=None, openapi_url=None)

    def page(name: str, status: int = 200, **context) -> HTMLResponse:
        return HTMLResponse(env.get_template(name).render(**context), status_code=status)

    @app.middleware("http")
    async def headers(request: Request, call_next):
        response = await call_next(request)
        for key, value in HEADERS.items():
            response.headers.setdefault(key, value)
        return response

    def wants_json(request: Request) -> bool:
        return "/api/" in request.url.path

    @app.exception_handler(Forbidden)
    async def forbidden(request: Request, err: Forbidden):
        if wants_json(request):
            return JSONResponse({"error": str(err)}, status_code=403)
        return page("error.html", 403, title="Forbidden", message=str(err))

    @app.exception_handler(BadRequest)
    @app.exception_handler(queue.AnswerError)
    async def bad_request(request: Request, err: Exception):
        if wants_json(request):
            return JSONResponse({"error": str(err)}, status_code=400)
        back = "/".join(request.url.path.split("/")[:3]) if request.url.path.startswith("/r/") else None
        return page("error.html", 400, title="Not saved", message=str(err), back=back)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException):
        if err.status_code in (404, 405):  # no route tells a stranger what exists
            return await forbidden(request, Forbidden("this address needs a valid personal link"))
        return JSONResponse({"error": err.detail}, status_code=err.status_code)

    def db():
        conn = open_studio(studio_dir)
        try:
            yield conn
        finally:
            conn.close()

    def rater_of(conn, token: str):
        rater = queue.rater_for(conn, token)
        if rater is None:
            raise Forbidden("this rater link is not valid (ask the study's owner for yours)")
        return rater

    def owner_of(conn, token: str) -> None:
        if not queue.is_owner(conn, token):
            raise Forbidden("this owner link is not valid")

    def session(request: Request, conn, rater) -> tuple[str, str | None]:
        """This browser's CSRF token for the link, and a new session id when it has no session yet."""
        csrf = queue.session_csrf(conn, request.cookies.get(COOKIE), rater["id"])
        if csrf is not None:
            return csrf, None
        sid, csrf = queue.new_session(conn, rater["id"])
        return csrf, sid

    def with_cookie(response: Response, request: Request, sid: str | None, token: str) -> Response:
        if sid is not None:  # only the link's own routes receive it
            response.set_cookie(COOKIE, sid, httponly=True, samesite="strict", path=f"/r/{token}",
                                secure=request.url.scheme == "https")
        return response

    def check_csrf(request: Request, conn, rater, fields: dict) -> None:
        expected = queue.session_csrf(conn, request.cookies.get(COOKIE), rater["id"])
        given = request.headers.get("x-csrf-token") or fields.get("csrf") or ""
        if expected is None:
            raise Forbidden("no session for this link in this browser: open your link again, then answer")
        if not secrets.compare_digest(str(given).encode(), expected.encode()):
            raise Forbidden("the form's CSRF token does not match this session: reload your link and answer again")

    async def fields(request: Request) -> dict:
        """A POST body: a urlencoded form or a JSON object (the content type says which). A body that cannot be
        read comes back as {"_bad": why}, refused only after the token and CSRF checks (a stranger gets 403)."""
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY:
                return {"_bad": f"the request body is over {MAX_BODY // 1024} KB"}
        if request.headers.get("content-type", "").startswith("application/json"):
            try:
                data = json.loads(body or b"{}")
            except ValueError:
                return {"_bad": "the body is not valid JSON"}
            return data if isinstance(data, dict) else {"_bad": "the body must be a JSON object"}
        try:
            return {k: v[0] for k, v in parse_qs(body.decode("utf-8"), keep_blank_values=True).items()}
        except UnicodeDecodeError:
            return {"_bad": "the form is not UTF-8"}

    def answer_args(data: dict) -> dict:
        if "_bad" in data:
            raise BadRequest(data["_bad"])

        def number(key):
            value = data.get(key)
            if value is None or value == "":
                return None
            if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, str) and value.isdigit())):
                raise BadRequest(f"{key} must be a whole number, got {str(value)[:40]!r}")
            return int(value)

        task_id = number("task_id")
        if task_id is None:
            raise BadRequest("task_id is missing")
        verdict = data.get("verdict") or None
        comment = data.get("comment") or ""
        if not isinstance(comment, str) or (verdict is not None and not isinstance(verdict, str)):
            raise BadRequest("comment and verdict must be text")
        return {"task_id": task_id, "rating": number("rating"), "verdict": verdict,
                "left_response": number("left_response"), "comment": comment}

    def progress(conn, rater) -> dict:
        done, total = queue.progress(conn, rater)
        return {"done": done, "total": total}

    # --- pages ------------------------------------------------------------------------------------------------------

    @app.get("/", response_class=HTMLResponse)
    def root():
        raise Forbidden("this studio needs a personal link (`tunesmith studio rater` prints one)")

    @app.get("/static/{name}")
    def static(name: str):
        if name not in STATIC:
            raise Forbidden("no such file")
        return Response((HERE / "static" / name).read_bytes(), media_type=STATIC[name])

    @app.get("/r/{token}", response_class=HTMLResponse)
    def rater_page(token: str, request: Request, conn=Depends(db)):
        from tunesmith.studio.generate import status as generation_status

        rater = rater_of(conn, token)
        csrf, sid = session(request, conn, rater)
        response = page("rate.html", title="Rate", rater=rater["name"], token=token, csrf=csrf,
                        task=queue.next_task(conn, rater), rate=settings(conn).rate,
                        generation=generation_status(conn), **progress(conn, rater))
        return with_cookie(response, request, sid, token)

    @app.post("/r/{token}/answer")
    def answer_form(token: str, request: Request, data: dict = Depends(fields), conn=Depends(db)):
        rater = rater_of(conn, token)
        check_csrf(request, conn, rater, data)
        queue.record(conn, rater, **answer_args(data))
        return RedirectResponse(f"/r/{token}", status_code=303)

    @app.post("/r/{token}/undo")
    def undo_form(token: str, request: Request, data: dict = Depends(fields), conn=Depends(db)):
        rater = rater_of(conn, token)
        check_csrf(request, conn, rater, data)
        queue.undo(conn, rater)
        return RedirectResponse(f"/r/{token}", status_code=303)

    @app.get("/r/{token}/answers", response_class=HTMLResponse)
    def answers_page(token: str, conn=Depends(db)):
        rater = rater_of(conn, token)
        return page("answers.html", title="Your answers", rater=rater["name"], token=token,
                    answers=queue.own_answers(conn, rater))

    # --- the rater's JSON API (the same rules; CSRF token from /api/next, sent as X-CSRF-Token) ---------------------

    @app.get("/r/{token}/api/next")
    def api_next(token: str, request: Request, conn=Depends(db)):
        rater = rater_of(conn, token)
        csrf, sid = session(request, conn, rater)
        body = {"task": queue.next_task(conn, rater), "csrf": csrf, "rate": settings(conn).rate, **progress(conn, rater)}
        return with_cookie(JSONResponse(body), request, sid, token)

    @app.post("/r/{token}/api/answer")
    def api_answer(token: str, request: Request, data: dict = Depends(fields), conn=Depends(db)):
        rater = rater_of(conn, token)
        check_csrf(request, conn, rater, data)
        saved = queue.record(conn, rater, **answer_args(data))
        return {"saved": saved, "task": queue.next_task(conn, rater), **progress(conn, rater)}  # next: no extra trip

    @app.post("/r/{token}/api/undo")
    def api_undo(token: str, request: Request, data: dict = Depends(fields), conn=Depends(db)):
        rater = rater_of(conn, token)
        check_csrf(request, conn, rater, data)
        return {"undone_task": queue.undo(conn, rater), "task": queue.next_task(conn, rater), **progress(conn, rater)}

    @app.get("/r/{token}/api/answers")
    def api_answers(token: str, conn=Depends(db)):
        rater = rater_of(conn, token)
        return {"rater": rater["name"], "answers": queue.own_answers(conn, rater)}

    # --- the owner ----------------------------------------------------------------------------------------------

    @app.get("/o/{token}", response_class=HTMLResponse)
    def owner_page(token: str, conn=Depends(db)):
        owner_of(conn, token)
        data = owner.owner_data(conn)
        job = generation.progress if generation is not None and generation.alive() else None
        return page("owner.html", title="Study", token=token, data=data, images=owner.plots(data), job=job)

    @app.get("/o/{token}/api/stats")
    def owner_stats(token: str, conn=Depends(db)):
        owner_of(conn, token)
        return owner.json_ready(owner.owner_data(conn))

    @app.get("/o/{token}/export/{fmt}.jsonl")
    def owner_export(token: str, fmt: str, conn=Depends(db)):
        from tunesmith.studio import export

        owner_of(conn, token)
        if fmt not in export.FORMATS:
            raise BadRequest(f"format {fmt!r}: use one of {', '.join(export.FORMATS)}")
        rows, _ = export.pair_rows(conn) if fmt == "pairs" else export.rating_rows(conn) if fmt == "ratings" \
            else export.kto_rows(conn)
        return Response(export.to_jsonl(rows), media_type="application/jsonl; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="studio-{fmt}.jsonl"'})

    return app
