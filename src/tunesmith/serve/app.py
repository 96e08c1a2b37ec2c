"""The HTTP app of `tunesmith serve`: OpenAI's GET /v1/models, POST /v1/chat/completions and /v1/completions, plus
POST /v1/classify and /v1/score (tunesmith's own, for classify and reward runs) and GET /health.

A request is checked and its prompt formatted here, then handed to its model's worker (registry.py) and awaited,
so the event loop stays free while models work; a stream receives text as it is generated. Errors come in
OpenAI's shape, {"error": {"message", "type", "param", "code"}}, with OpenAI's status codes.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import threading

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.exceptions import HTTPException

from tunesmith.errors import TunesmithError
from tunesmith.serve import models as shapes
from tunesmith.serve.registry import Registry, Served, UnknownModel


class APIError(Exception):
    """An error answered in OpenAI's shape with an HTTP status."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code


class _Abandoned(Exception):
    """The client of a stream went away: its generation stops early."""


def create_app(registry: Registry, api_key: str | None = None) -> FastAPI:
    """The FastAPI app serving `registry`; with `api_key`, every /v1 route wants `Authorization: Bearer KEY`."""
    app = FastAPI(title="tunesmith serve", description="OpenAI-compatible API over tunesmith runs", version="1")

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

    if api_key is not None:
        app.middleware("http")(authorized)

    def lookup(name: str) -> Served:
        try:
            return registry.get(name)
        except UnknownModel as err:
            raise APIError(404, str(err), param="model", code="model_not_found") from None

    @app.exception_handler(APIError)
    async def _api_error(request, err: APIError):
        return JSONResponse(shapes.error_body(err.message, err.param, err.code), status_code=err.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, err: RequestValidationError):
        problems = err.errors()
        fields = [".".join(str(p) for p in e["loc"][1:]) or "body" for e in problems]
        said = [f"Unrecognized request argument supplied: {f}" if e["type"] == "extra_forbidden" else
                f"{f}: {e['msg'].removeprefix('Value error, ')}" for f, e in zip(fields, problems)]
        return JSONResponse(shapes.error_body("; ".join(said), fields[0] if fields else None), status_code=400)

    @app.exception_handler(HTTPException)
    async def _http(request, err: HTTPException):
        return JSONResponse(shapes.error_body(str(err.detail)), status_code=err.status_code)

    @app.exception_handler(TunesmithError)
    async def _tunesmith(request, err: TunesmithError):
        return JSONResponse(shapes.error_body(str(err)), status_code=400)

    @app.exception_handler(Exception)
    async def _crash(request, err: Exception):  # a bug: still answered in OpenAI's shape
        return JSONResponse(shapes.error_body(f"{type(err).__name__}: {err}", type_="server_error"), status_code=500)

    @app.get("/health")
    async def health():
        return {"status": "ok", "models": list(registry.models)}

    @app.get("/v1/models")
    async def list_models():
        return {"object": "list", "data": [shapes.model_card(s) for s in registry.models.values()]}

    @app.get("/v1/models/{name:path}")
    async def get_model(name: str):
        return shapes.model_card(lookup(name))

    @app.post("/v1/chat/completions")
    async def chat(req: shapes.ChatRequest):
        served = _generator(lookup(req.model))
        ids = _format(served.chat_ids, [m.as_dict() for m in req.messages], param="messages")
        wanted = req.max_tokens or req.max_completion_tokens
        options = req.sampling(_fit(served, [ids], wanted, shapes.DEFAULT_CHAT_TOKENS, "messages"))
        rid = shapes.new_id("chatcmpl")
        if req.stream:
            return _sse(_chat_events(served, rid, req, ids, options))
        completions = await _job(served, lambda: served.complete([ids], **options))
        return shapes.chat_response(rid, served.name, completions, len(ids))

    @app.post("/v1/completions")
    async def completions(req: shapes.CompletionRequest):
        served = _generator(lookup(req.model))
        prompts = [_format(served.text_ids, p, param="prompt") for p in req.prompts()]
        if any(not p for p in prompts):
            raise APIError(400, "prompt: an empty prompt; give some text or token ids", param="prompt")
        options = req.sampling(_fit(served, prompts, req.max_tokens, shapes.DEFAULT_COMPLETION_TOKENS, "prompt"))
        rid = shapes.new_id("cmpl")
        if req.stream:
            return _sse(_completion_events(served, rid, req, prompts, options))
        done = await _job(served, lambda: served.complete(prompts, **options))
        return shapes.completion_response(rid, served.name, done, [len(p) for p in prompts])

    @app.post("/v1/classify")
    async def classify(req: shapes.ClassifyRequest):
        served = lookup(req.model)
        if not served.classifies:
            raise APIError(400, f"{served.name!r} predicts no labels ({_what(served)}); /v1/classify takes a classify "
                                "run", param="model")
        texts = [req.input] if isinstance(req.input, str) else req.input
        predictions = await _job(served, lambda: served.predict(texts))
        return {"object": "list", "model": served.name,
                "data": [{"object": "classification", "index": i, **p} for i, p in enumerate(predictions)]}

    @app.post("/v1/score")
    async def score(req: shapes.ScoreRequest):
        served = lookup(req.model)
        if not served.scores:
            raise APIError(400, f"{served.name!r} scores nothing ({_what(served)}); /v1/score takes a reward model run",
                           param="model")
        rows = [req.input] if isinstance(req.input, dict) else req.input
        values = await _job(served, lambda: served.score(rows))
        return {"object": "list", "model": served.name,
                "data": [{"object": "score", "index": i, "score": float(v)} for i, v in enumerate(values)]}

    return app


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
