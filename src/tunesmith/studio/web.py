"""What every studio route shares: the refusals (403, 400) and the page each one shows, the per-request database,
the token checks, the session cookie and its CSRF token, and reading a POST body. app.py says the rules in order.

The app's per-folder state lives on `app.state` (studio_dir, templates, generation), so these helpers and the
route modules are plain functions that read it from the request.
"""

from __future__ import annotations

import json
import secrets
from urllib.parse import parse_qs

from fastapi import Request
from fastapi.responses import HTMLResponse, Response

from tunesmith.studio import queue
from tunesmith.studio.db import open_studio

MAX_BODY = 64 * 1024
COOKIE = "studio_session"


class Forbidden(Exception):
    """No valid token, session or CSRF token: 403. `title` heads the page (what happened), `back` links onward."""

    def __init__(self, message: str, title: str = "Forbidden", back: str | None = None):
        super().__init__(message)
        self.title, self.back = title, back


class BadRequest(Exception):
    """A request the page could not have sent: 400. `title` heads the page; `links` ((label, href), ...) are what
    the request could have asked for; `back` links onward."""

    def __init__(self, message: str, title: str = "Not saved", links: tuple = (), back: str | None = None):
        super().__init__(message)
        self.title, self.links, self.back = title, links, back


def page(request: Request, name: str, status: int = 200, **context) -> HTMLResponse:
    """A template rendered with autoescaping (the app's Jinja2 environment)."""
    html = request.app.state.templates.get_template(name).render(**context)
    return HTMLResponse(html, status_code=status)


def db(request: Request):
    """The studio's database for one request (a dependency: closed when the response is done)."""
    conn = open_studio(request.app.state.studio_dir)
    try:
        yield conn
    finally:
        conn.close()


def rater_of(conn, token: str):
    rater = queue.rater_for(conn, token)
    if rater is None:
        raise Forbidden("this rater link is not valid (ask the study's owner for yours)", title="Link not valid")
    return rater


def owner_of(conn, token: str) -> None:
    if not queue.is_owner(conn, token):
        raise Forbidden("this owner link is not valid", title="Link not valid")


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


def check_csrf(request: Request, conn, rater, fields: dict, refused: str = "Not saved") -> None:
    """403 unless the request carries this link's session cookie and its CSRF token; `refused` titles the page."""
    expected = queue.session_csrf(conn, request.cookies.get(COOKIE), rater["id"])
    given = request.headers.get("x-csrf-token") or fields.get("csrf") or ""
    back = "/".join(request.url.path.split("/")[:3])  # the rater's link: opening it starts a session
    if expected is None:
        raise Forbidden("no session for this link in this browser: open your link again, then answer", refused, back)
    if not secrets.compare_digest(str(given).encode(), expected.encode()):
        raise Forbidden("the form's CSRF token does not match this session: reload your link and answer again",
                        refused, back)


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


def _number(data: dict, key: str) -> int | None:
    value = data.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, bool) or not (isinstance(value, int) or (isinstance(value, str) and value.isdigit())):
        raise BadRequest(f"{key} must be a whole number, got {str(value)[:40]!r}")
    return int(value)


def answer_args(data: dict) -> dict:
    """queue.record's keyword arguments from a posted answer; 400 for a body no page of ours sends."""
    if "_bad" in data:
        raise BadRequest(data["_bad"])
    task_id = _number(data, "task_id")
    if task_id is None:
        raise BadRequest("task_id is missing")
    verdict = data.get("verdict") or None
    comment = data.get("comment") or ""
    if not isinstance(comment, str) or (verdict is not None and not isinstance(verdict, str)):
        raise BadRequest("comment and verdict must be text")
    return {"task_id": task_id, "rating": _number(data, "rating"), "verdict": verdict,
            "left_response": _number(data, "left_response"), "comment": comment}


def progress(conn, rater) -> dict:
    done, total = queue.progress(conn, rater)
    return {"done": done, "total": total}
