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
- the database is opened per request; queue.py writes in transactions with parameterized statements;
- an error page is titled for what happened ("Link not valid", "Not saved", "Unknown export format"...); the JSON
  API answers {"error": why} with the same status.

web.py holds the checks and helpers every route shares; rater_routes.py and owner_routes.py the routes.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException

from tunesmith.studio import owner, owner_routes, queue, rater_routes
from tunesmith.studio.db import open_studio
from tunesmith.studio.web import BadRequest, Forbidden, page
from tunesmith.web import SECURITY_HEADERS

HERE = Path(__file__).parent
STATIC = {"studio.js": "text/javascript; charset=utf-8", "studio.css": "text/css; charset=utf-8"}
NEEDS_A_LINK = "Personal link needed"


def templates():
    from jinja2 import Environment, FileSystemLoader

    env = Environment(loader=FileSystemLoader(str(HERE / "templates")), autoescape=True)
    env.filters["fmt"] = owner.fmt
    return env


def create_app(studio_dir: str | Path, generation=None) -> FastAPI:
    """The app for one studio folder; `generation` (a GenerationJob) is shown on the owner page while it runs."""
    studio_dir = Path(studio_dir)
    open_studio(studio_dir).close()  # a folder that is no studio fails here, before serving
    app = FastAPI(title="tunesmith studio", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.studio_dir, app.state.templates, app.state.generation = studio_dir, templates(), generation
    app.middleware("http")(headers)
    app.add_exception_handler(Forbidden, forbidden)
    app.add_exception_handler(BadRequest, bad_request)
    app.add_exception_handler(queue.AnswerError, bad_request)
    app.add_exception_handler(HTTPException, http_error)
    app.get("/", response_class=HTMLResponse)(root)
    app.get("/static/{name}")(static)
    rater_routes.add_routes(app)
    owner_routes.add_routes(app)
    return app


async def headers(request: Request, call_next):
    response = await call_next(request)
    for key, value in SECURITY_HEADERS.items():
        response.headers.setdefault(key, value)
    return response


# --- refusals: a page titled for what happened, or {"error": why} for the JSON API --------------------------------

def wants_json(request: Request) -> bool:
    return "/api/" in request.url.path


async def forbidden(request: Request, err: Forbidden):
    if wants_json(request):
        return JSONResponse({"error": str(err)}, status_code=403)
    return page(request, "error.html", 403, title=err.title, message=str(err), back=err.back)


async def bad_request(request: Request, err: Exception):
    """BadRequest, or an answer queue.py refuses (AnswerError: "Not saved")."""
    if wants_json(request):
        return JSONResponse({"error": str(err)}, status_code=400)
    back = getattr(err, "back", None)
    if back is None and request.url.path.startswith("/r/"):
        back = "/".join(request.url.path.split("/")[:3])
    return page(request, "error.html", 400, title=getattr(err, "title", "Not saved"), message=str(err), back=back,
                links=getattr(err, "links", ()))


async def http_error(request: Request, err: HTTPException):
    if err.status_code in (404, 405):  # no route tells a stranger what exists
        return await forbidden(request, Forbidden("this address needs a valid personal link", title=NEEDS_A_LINK))
    return JSONResponse({"error": err.detail}, status_code=err.status_code)


# --- the two routes without a token -----------------------------------------------------------------------------

def root():
    raise Forbidden("this studio needs a personal link (`tunesmith studio rater` prints one)", title=NEEDS_A_LINK)


def static(name: str):
    if name not in STATIC:
        raise Forbidden("no such file", title="No such file")
    return Response((HERE / "static" / name).read_bytes(), media_type=STATIC[name])

