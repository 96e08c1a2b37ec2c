"""A rater's routes under /r/TOKEN: the queue page and its forms, the answers page, and the JSON API (the same
rules; the CSRF token comes from /api/next and is sent as X-CSRF-Token). Each route checks the token first and
acts only for that rater (queue.py takes the rater, never a rater id from the request)."""

from __future__ import annotations

from fastapi import Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse

from tunesmith.studio import queue
from tunesmith.studio.study import settings
from tunesmith.studio.web import (
    answer_args,
    check_csrf,
    db,
    fields,
    page,
    progress,
    rater_of,
    session,
    with_cookie,
)

# --- pages ----------------------------------------------------------------------------------------------------------


def rater_page(token: str, request: Request, conn=Depends(db)):
    from tunesmith.studio.generate import status as generation_status

    rater = rater_of(conn, token)
    csrf, sid = session(request, conn, rater)
    response = page(request, "rate.html", title="Rate", rater=rater["name"], token=token, csrf=csrf,
                    task=queue.next_task(conn, rater), rate=settings(conn).rate,
                    generation=generation_status(conn), **progress(conn, rater))
    return with_cookie(response, request, sid, token)


def answer_form(token: str, request: Request, data: dict = Depends(fields), conn=Depends(db)):
    rater = rater_of(conn, token)
    check_csrf(request, conn, rater, data)
    queue.record(conn, rater, **answer_args(data))
    return RedirectResponse(f"/r/{token}", status_code=303)


def undo_form(token: str, request: Request, data: dict = Depends(fields), conn=Depends(db)):
    rater = rater_of(conn, token)
    check_csrf(request, conn, rater, data, refused="Nothing undone")
    queue.undo(conn, rater)
    return RedirectResponse(f"/r/{token}", status_code=303)


def answers_page(token: str, request: Request, conn=Depends(db)):
    rater = rater_of(conn, token)
    return page(request, "answers.html", title="Your answers", rater=rater["name"], token=token,
                answers=queue.own_answers(conn, rater))


# --- the JSON API ---------------------------------------------------------------------------------------------------


def api_next(token: str, request: Request, conn=Depends(db)):
    rater = rater_of(conn, token)
    csrf, sid = session(request, conn, rater)
    body = {"task": queue.next_task(conn, rater), "csrf": csrf, "rate": settings(conn).rate, **progress(conn, rater)}
    return with_cookie(JSONResponse(body), request, sid, token)


def api_answer(token: str, request: Request, data: dict = Depends(fields), conn=Depends(db)):
    rater = rater_of(conn, token)
    check_csrf(request, conn, rater, data)
    saved = queue.record(conn, rater, **answer_args(data))
    return {"saved": saved, "task": queue.next_task(conn, rater), **progress(conn, rater)}  # next: no extra trip


def api_undo(token: str, request: Request, data: dict = Depends(fields), conn=Depends(db)):
    rater = rater_of(conn, token)
    check_csrf(request, conn, rater, data, refused="Nothing undone")
    return {"undone_task": queue.undo(conn, rater), "task": queue.next_task(conn, rater), **progress(conn, rater)}


def api_answers(token: str, conn=Depends(db)):
    rater = rater_of(conn, token)
    return {"rater": rater["name"], "answers": queue.own_answers(conn, rater)}


def add_routes(app: FastAPI) -> None:
    """The rater's routes, on the app itself (so `app.routes` lists each one, as the security test reads them)."""
    app.get("/r/{token}", response_class=HTMLResponse)(rater_page)
    app.post("/r/{token}/answer")(answer_form)
    app.post("/r/{token}/undo")(undo_form)
    app.get("/r/{token}/answers", response_class=HTMLResponse)(answers_page)
    app.get("/r/{token}/api/next")(api_next)
    app.post("/r/{token}/api/answer")(api_answer)
    app.post("/r/{token}/api/undo")(api_undo)
    app.get("/r/{token}/api/answers")(api_answers)
