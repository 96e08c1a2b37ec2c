"""The board's web app. Security, in order of the request:
- every route, the static files included, needs the access token printed at start (as Jupyter's): `?token=T` in the
  address (then a cookie, HttpOnly and SameSite=Strict, carries it and the address is cleaned of it), the cookie, or
  the header `Authorization: token T`; without it, 403 and nothing else;
- every POST needs the CSRF token of the page that sent it (form field `csrf` or header X-CSRF-Token);
- a run is named as ROOT/REL and resolved by paths.Roots: `..`, absolute paths and symlinks that lead out of the run
  directories are refused (403), so no path outside them is read or written;
- pages are Jinja2 templates with autoescaping on; a Content-Security-Policy allows scripts only from /static; a
  run's report.html is served sandboxed (no script runs); no referrer is sent; nothing is cached.
pages.py holds the pages and the JSON the page scripts poll; actions.py the forms (start, stop, resume, try)."""

from __future__ import annotations

import secrets
from pathlib import Path
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from starlette.exceptions import HTTPException

from tunesmith.board import actions, pages
from tunesmith.board.chat import Chat
from tunesmith.board.launch import Launcher
from tunesmith.board.pages import refusal
from tunesmith.board.paths import OutsideRoots, Roots
from tunesmith.errors import TunesmithError
from tunesmith.web import SECURITY_HEADERS

HERE = Path(__file__).parent
COOKIE = "board_token"
STATIC = {"board.js": "text/javascript; charset=utf-8", "board.css": "text/css; charset=utf-8"}


def templates():
    from jinja2 import Environment, FileSystemLoader

    env = Environment(loader=FileSystemLoader(str(HERE / "templates")), autoescape=True)
    env.filters["num"] = pages.num
    env.filters["short"] = lambda value: str(value).rstrip("/").rsplit("/", 1)[-1] if value else ""
    return env


def create_app(run_dirs, token: str | None = None, configs_dir: Path | None = None,
               trust_remote_code: bool = False) -> FastAPI:
    """The board over the run directories `run_dirs`; `token` (default: a new random one) opens it."""
    roots = Roots(run_dirs)
    app = FastAPI(title="tunesmith board", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.roots, app.state.templates = roots, templates()
    app.state.token, app.state.csrf = token or secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    app.state.launcher, app.state.chat = Launcher(roots, configs_dir), Chat(trust_remote_code)
    app.middleware("http")(guard)
    app.add_exception_handler(OutsideRoots, outside)
    app.add_exception_handler(TunesmithError, bad_request)
    app.add_exception_handler(HTTPException, http_error)
    app.get("/static/{name}")(static)
    pages.add_routes(app)
    actions.add_routes(app)
    return app


def cookie_name(request: Request) -> str:
    """One cookie per port: browsers share cookies across the ports of a host, so two boards keep theirs apart."""
    return f"{COOKIE}_{request.url.port or 80}"


def given_token(request: Request) -> str:
    auth = request.headers.get("authorization", "")
    return (request.query_params.get("token") or request.cookies.get(cookie_name(request))
            or (auth[6:] if auth.lower().startswith("token ") else ""))


async def guard(request: Request, call_next):
    """The access token on every route, then the security headers on every answer."""
    expected = request.app.state.token
    if not secrets.compare_digest(given_token(request).encode(), expected.encode()):
        response = refusal(request, 403, "Token needed", "this board needs its access token: open the address "
                           "`tunesmith board` printed (http://HOST:PORT/?token=...)")
    elif "token" in request.query_params and request.method == "GET":  # keep the token out of the address bar
        query = urlencode([(k, v) for k, v in request.query_params.multi_items() if k != "token"])
        response = RedirectResponse(request.url.path + (f"?{query}" if query else ""), status_code=303)
        response.set_cookie(cookie_name(request), expected, httponly=True, samesite="strict",
                            secure=request.url.scheme == "https")
    else:
        response = await call_next(request)
    for key, value in SECURITY_HEADERS.items():
        response.headers.setdefault(key, value)
    return response


async def outside(request: Request, err: OutsideRoots):
    return refusal(request, 403, "Outside the run directories", str(err))


async def bad_request(request: Request, err: TunesmithError):
    return refusal(request, 400, "Not done", str(err))


async def http_error(request: Request, err: HTTPException):
    if err.status_code in (404, 405):
        return refusal(request, 404, "Not found", "no such page on this board")
    return refusal(request, err.status_code, "Refused", str(err.detail))


def static(name: str):
    if name not in STATIC:
        raise HTTPException(404)
    return Response((HERE / "static" / name).read_bytes(), media_type=STATIC[name])
