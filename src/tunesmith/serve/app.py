"""The HTTP app of `tunesmith serve`: OpenAI's GET /v1/models (POST /v1/chat/completions and /v1/completions are in
completions.py), plus POST /v1/classify and /v1/score (tunesmith's own, for classify and reward runs) and GET /health.

A classify or score request is handed to the server's compute thread (registry.py) and awaited, so the event loop
stays free while models work. Errors come in OpenAI's shape, {"error": {"message", "type", "param", "code"}}, with
OpenAI's status codes. The routes are plain functions on `router`; the registry and the limits (limits.py) they serve
are on `app.state`.
"""

from __future__ import annotations

import asyncio
import json
import secrets

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from tunesmith.errors import TunesmithError
from tunesmith.serve import models as shapes
from tunesmith.serve.completions import lookup
from tunesmith.serve.completions import router as completions_router
from tunesmith.serve.errors import APIError
from tunesmith.serve.limits import BodyLimit, Limits
from tunesmith.serve.registry import Registry, Served

__all__ = ["APIError", "create_app", "router"]


def create_app(registry: Registry, api_key: str | None = None, limits: Limits | None = None) -> FastAPI:
    """The FastAPI app serving `registry`; with `api_key`, every /v1 route wants `Authorization: Bearer KEY`;
    `limits` caps what one request may ask (default: `Limits()`)."""
    app = FastAPI(title="tunesmith serve", description="OpenAI-compatible API over tunesmith runs", version="1")
    app.state.registry, app.state.limits = registry, limits or Limits()
    app.add_middleware(BodyLimit, limit=app.state.limits.max_body_bytes)
    if api_key is not None:  # added last, so it runs first: 401 before any 400, as OpenAI answers
        app.middleware("http")(_authorizer(api_key))
    for error, handler in _HANDLERS.items():
        app.add_exception_handler(error, handler)
    app.include_router(router)
    app.include_router(completions_router)
    return app


def _authorizer(api_key: str):
    async def authorized(request: Request, call_next):
        """With an API key, /v1 wants it before anything else is read (as OpenAI answers 401 before 400)."""
        if not request.url.path.startswith("/v1/"):
            return await call_next(request)
        given = request.headers.get("authorization", "")
        scheme, _, key = given.partition(" ")
        if not given:
            message = ("No API key given: send the header 'Authorization: Bearer KEY' (the OpenAI client's api_key) "
                       "with the key the server was started with")
        elif scheme.lower() != "bearer" or not secrets.compare_digest(key.strip().encode(), api_key.encode()):
            message = "Incorrect API key: it does not match the server's --api-key / TUNESMITH_API_KEY"
        else:
            return await call_next(request)
        return JSONResponse(shapes.error_body(message, code="invalid_api_key"), status_code=401)

    return authorized


# --- errors, in OpenAI's shape -------------------------------------------------------------------------------------


async def _api_error(request, err: APIError):
    return JSONResponse(shapes.error_body(err.message, err.param, err.code, err.type), status_code=err.status,
                        headers=err.headers)


async def _invalid(request, err: RequestValidationError):
    problems = err.errors()
    if problems and problems[0]["type"] == "json_invalid":  # loc is ("body", character offset): no parameter
        at, why = problems[0]["loc"][-1], (problems[0].get("ctx") or {}).get("error")
        message = f"the request body is not valid JSON (at character {at}" + (f": {why})" if why else ")")
        return JSONResponse(shapes.error_body(message), status_code=400)
    fields = [".".join(str(p) for p in e["loc"][1:]) or "body" for e in problems]
    said = [f"Unrecognized request argument supplied: {f}" if e["type"] == "extra_forbidden" else
            f"{f}: {e['msg'].removeprefix('Value error, ')}" + _given(e) for f, e in zip(fields, problems)]
    return JSONResponse(shapes.error_body("; ".join(said), fields[0] if fields else None), status_code=400)


def _given(problem: dict) -> str:
    """', got the string "8"' for a value of the wrong type (numbers and booleans are strict, as OpenAI's)."""
    kind = {str: "the string", bool: "the boolean", int: "the integer", float: "the number"}.get(type(problem.get("input")))
    if not problem["type"].endswith("_type") or kind is None:
        return ""
    return f", got {kind} {json.dumps(problem['input'])[:40]}"


async def _http(request, err: HTTPException):
    return JSONResponse(shapes.error_body(str(err.detail)), status_code=err.status_code)


async def _tunesmith(request, err: TunesmithError):
    return JSONResponse(shapes.error_body(str(err)), status_code=400)


async def _crash(request, err: Exception):  # a bug: still answered in OpenAI's shape
    return JSONResponse(shapes.error_body(f"{type(err).__name__}: {err}", type_="server_error"), status_code=500)


_HANDLERS = {APIError: _api_error, RequestValidationError: _invalid, HTTPException: _http,
             TunesmithError: _tunesmith, Exception: _crash}


# --- routes --------------------------------------------------------------------------------------------------------

router = APIRouter()


@router.get("/health")
async def health(request: Request):
    return {"status": "ok", "models": list(request.app.state.registry.models)}


@router.get("/v1/models")
async def list_models(request: Request):
    return {"object": "list", "data": [shapes.model_card(s) for s in request.app.state.registry.models.values()]}


@router.get("/v1/models/{name:path}")
async def get_model(name: str, request: Request):
    return shapes.model_card(lookup(request, name))


@router.post("/v1/classify")
async def classify(req: shapes.ClassifyRequest, request: Request):
    served = lookup(request, req.model)
    if not served.classifies:
        raise APIError(400, f"{served.name!r} predicts no labels ({_what(served)}); /v1/classify takes a classify "
                            "run", param="model")
    texts = [req.input] if isinstance(req.input, str) else req.input
    request.app.state.limits.check_count(len(texts), "input", "inputs")
    predictions = await _job(served, lambda: served.predict(texts))
    return {"object": "list", "model": served.name,
            "data": [{"object": "classification", "index": i, **p} for i, p in enumerate(predictions)]}


@router.post("/v1/score")
async def score(req: shapes.ScoreRequest, request: Request):
    served = lookup(request, req.model)
    if not served.scores:
        raise APIError(400, f"{served.name!r} scores nothing ({_what(served)}); /v1/score takes a reward model run",
                       param="model")
    rows = [req.input] if isinstance(req.input, dict) else req.input
    request.app.state.limits.check_count(len(rows), "input", "inputs")
    values = await _job(served, lambda: served.score(rows))
    return {"object": "list", "model": served.name,
            "data": [{"object": "score", "index": i, "score": float(v)} for i, v in enumerate(values)]}


def _what(served: Served) -> str:
    return f"a {served.objective} run" if served.run is not None else "a base model"


async def _job(served: Served, fn):
    """Run `fn` on the compute thread, after the requests queued before it; a TunesmithError is the client's 400."""
    try:
        return await asyncio.wrap_future(served.worker.submit(fn))
    except TunesmithError as err:
        raise APIError(400, str(err)) from None
