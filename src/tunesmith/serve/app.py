"""The HTTP app of `tunesmith serve`: OpenAI's GET /v1/models, POST /v1/chat/completions and /v1/completions, plus
POST /v1/classify and /v1/score (tunesmith's own, for classify and reward runs) and GET /health.

A request is checked and its prompt formatted here, then handed to its model's worker (registry.py) and awaited,
so the event loop stays free while models work; a stream receives text as it is generated. Errors come in
OpenAI's shape, {"error": {"message", "type", "param", "code"}}, with OpenAI's status codes. The routes are plain
functions on `router`; the registry and the limits (limits.py) they serve are on `app.state`.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import threading

from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException

from tunesmith.errors import TunesmithError
from tunesmith.serve import models as shapes
from tunesmith.serve.errors import APIError
from tunesmith.serve.limits import BodyLimit, Limits
from tunesmith.serve.registry import Registry, Served, UnknownModel

__all__ = ["APIError", "create_app", "router"]


class _Abandoned(Exception):
    """The client of a stream went away: its generation stops early."""


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
    return JSONResponse(shapes.error_body(err.message, err.param, err.code), status_code=err.status)


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


def _lookup(request: Request, name: str) -> Served:
    try:
        return request.app.state.registry.get(name)
    except UnknownModel as err:
        raise APIError(404, str(err), param="model", code="model_not_found") from None


@router.get("/health")
async def health(request: Request):
    return {"status": "ok", "models": list(request.app.state.registry.models)}


@router.get("/v1/models")
async def list_models(request: Request):
    return {"object": "list", "data": [shapes.model_card(s) for s in request.app.state.registry.models.values()]}


@router.get("/v1/models/{name:path}")
async def get_model(name: str, request: Request):
    return shapes.model_card(_lookup(request, name))


@router.post("/v1/chat/completions")
async def chat(req: shapes.ChatRequest, request: Request):
    served = _generator(_lookup(request, req.model))
    ids = _format(served.chat_ids, [m.as_dict() for m in req.messages], param="messages")
    wanted = req.max_tokens or req.max_completion_tokens
    fitted = _fit(served, [ids], wanted, shapes.DEFAULT_CHAT_TOKENS, "messages")
    options = req.sampling(request.app.state.limits.max_new_tokens(1, req.n, wanted, fitted))
    rid = shapes.new_id("chatcmpl")
    if req.stream:
        return _sse(_chat_events(served, rid, req, ids, options))
    completions = await _job(served, lambda: served.complete([ids], **options))
    return shapes.chat_response(rid, served.name, completions, len(ids))


@router.post("/v1/completions")
async def completions(req: shapes.CompletionRequest, request: Request):
    served, limits = _generator(_lookup(request, req.model)), request.app.state.limits
    texts = req.prompts()
    limits.check_count(len(texts), "prompt")
    prompts = [_format(served.text_ids, p, param="prompt") for p in texts]
    if any(not p for p in prompts):
        raise APIError(400, "prompt: an empty prompt; give some text or token ids", param="prompt")
    fitted = _fit(served, prompts, req.max_tokens, shapes.DEFAULT_COMPLETION_TOKENS, "prompt")
    options = req.sampling(limits.max_new_tokens(len(prompts), req.n, req.max_tokens, fitted))
    rid = shapes.new_id("cmpl")
    if req.stream:
        return _sse(_completion_events(served, rid, req, prompts, options))
    done = await _job(served, lambda: served.complete(prompts, **options))
    return shapes.completion_response(rid, served.name, done, [len(p) for p in prompts])


@router.post("/v1/classify")
async def classify(req: shapes.ClassifyRequest, request: Request):
    served = _lookup(request, req.model)
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
    served = _lookup(request, req.model)
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


def _generator(served: Served) -> Served:
    if not served.generates:
        raise APIError(400, f"{served.name!r} is a {served.objective} run, which generates no text; send it to "
                            "/v1/classify" + (" or /v1/score" if served.scores else ""), param="model")
    return served


def _format(fn, value, param: str):
    """Format a prompt on the request's thread (tokenizing is quick); a problem with it is a 400 naming `param`."""
    try:
        return fn(value)
    except TunesmithError as err:
        raise APIError(400, str(err), param=param) from None


def _fit(served: Served, prompts: list[list[int]], wanted: int | None, default: int, param: str) -> int:
    """max_tokens for this request: as asked, or the default cut to what the context leaves; a prompt that leaves no
    room, or max_tokens past the context, is a 400 (code context_length_exceeded), as OpenAI answers it."""
    context, longest = served.context, max(len(p) for p in prompts)
    if context is None:
        return wanted or default
    room = context - longest
    if room < 1 or (wanted is not None and wanted > room):
        asked = f" and max_tokens asks for {wanted} more" if wanted else ""
        raise APIError(400, f"This model's maximum context length is {context} tokens. However, your {param} take "
                            f"{longest} tokens{asked}. Shorten the {param}" + (" or lower max_tokens" if wanted else ""),
                       param=param, code="context_length_exceeded")
    return wanted or min(default, room)


async def _job(served: Served, fn):
    """Run `fn` on the model's worker, after the requests queued before it; a TunesmithError is the client's 400."""
    try:
        return await asyncio.wrap_future(served.worker.submit(fn))
    except TunesmithError as err:
        raise APIError(400, str(err)) from None


def _sse(events) -> StreamingResponse:
    async def lines():
        async for event in events:
            yield f"data: {json.dumps(event)}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(lines(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


async def _stream(served: Served, prompts: list[list[int]], options: dict):
    """Yield (index, text) pieces as the worker generates them, then the list of Completions. When the client goes
    away, the generation ends at its next piece of text (or never starts, if it was still queued)."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    gone = threading.Event()

    def put(item) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the event loop has closed (a forced shutdown)
            gone.set()

    def on_text(index: int, text: str) -> None:
        if gone.is_set():
            raise _Abandoned
        put((index, text))

    def work():
        if gone.is_set():
            raise _Abandoned
        return served.complete(prompts, on_text=on_text, **options)

    future = served.worker.submit(work)
    future.add_done_callback(lambda _: put(None))
    try:
        while (item := await queue.get()) is not None:
            yield item
        yield future.result()
    finally:
        gone.set()


async def _chat_events(served, rid, req, ids, options):
    for i in range(req.n):
        yield shapes.chat_chunk(rid, served.name, i, {"role": "assistant", "content": ""})
    try:
        async for item in _stream(served, [ids], options):
            if isinstance(item, tuple):
                yield shapes.chat_chunk(rid, served.name, item[0], {"content": item[1]})
                continue
            for i, c in enumerate(item):
                yield shapes.chat_chunk(rid, served.name, i, {}, c.finish_reason)
            if req.include_usage:
                yield shapes.chat_chunk(rid, served.name, usage_=shapes.usage([len(ids)], item))
    except TunesmithError as err:
        yield shapes.error_body(str(err))


async def _completion_events(served, rid, req, prompts, options):
    try:
        async for item in _stream(served, prompts, options):
            if isinstance(item, tuple):
                yield shapes.completion_chunk(rid, served.name, item[0], item[1])
                continue
            for i, c in enumerate(item):
                yield shapes.completion_chunk(rid, served.name, i, "", c.finish_reason)
            if req.include_usage:
                yield shapes.completion_chunk(rid, served.name, usage_=shapes.usage([len(p) for p in prompts], item))
    except TunesmithError as err:
        yield shapes.error_body(str(err))
