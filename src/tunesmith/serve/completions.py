"""POST /v1/chat/completions and /v1/completions of `tunesmith serve`: a request is checked and its prompt formatted
here, then queued as a Job on its model's Batcher (batching.py) and awaited, so the event loop stays free while the
model works; a stream receives text as its own rows generate it.

Back-pressure: a full queue is a 429 with Retry-After; a request not answered within --request-timeout is a 504
(a stream gets an error event), and its rows are cancelled. A client that leaves a stream cancels its rows only.
"""

from __future__ import annotations

import asyncio
import json
import time

from fastapi import APIRouter, Request
from fastapi.responses import StreamingResponse

from tunesmith.errors import TunesmithError
from tunesmith.serve import logprobs as lp
from tunesmith.serve import models as shapes
from tunesmith.serve.batching import Job, QueueFull, Row
from tunesmith.serve.errors import APIError
from tunesmith.serve.registry import Served, UnknownModel

router = APIRouter()


def lookup(request: Request, name: str) -> Served:
    try:
        return request.app.state.registry.get(name)
    except UnknownModel as err:
        raise APIError(404, str(err), param="model", code="model_not_found") from None


@router.post("/v1/chat/completions")
async def chat(req: shapes.ChatRequest, request: Request):
    served = _generator(lookup(request, req.model))
    if req.top_logprobs and not req.logprobs:
        raise APIError(400, "top_logprobs: set logprobs to true to get top_logprobs", param="top_logprobs")
    ids = _format(served.chat_ids, [m.as_dict() for m in req.messages], param="messages")
    wanted = req.max_tokens or req.max_completion_tokens
    fitted = _fit(served, [ids], wanted, shapes.DEFAULT_CHAT_TOKENS, "messages")
    options = req.sampling(request.app.state.limits.max_new_tokens(1, req.n, wanted, fitted))
    rid, top = shapes.new_id("chatcmpl"), req.top
    if req.stream:
        stream = _streaming(served, Job.generate(served, [ids], options, top))
        return _sse(_chat_events(served, rid, req, ids, stream))
    done = await wait(served, Job.generate(served, [ids], options, top))
    shown = (lambda c: lp.chat_logprobs(served.tokenizer, c.logprobs)) if top is not None else None
    return shapes.chat_response(rid, served.name, done, len(ids), shown)


@router.post("/v1/completions")
async def completions(req: shapes.CompletionRequest, request: Request):
    served, limits = _generator(lookup(request, req.model)), request.app.state.limits
    texts = req.prompts()
    limits.check_count(len(texts), "prompt")
    prompts = [_format(served.text_ids, p, param="prompt") for p in texts]
    if any(not p for p in prompts):
        raise APIError(400, "prompt: an empty prompt; give some text or token ids", param="prompt")
    scoring = req.max_tokens == 0
    if scoring and (not req.echo or req.stream):
        raise APIError(400, "max_tokens: 0 generates nothing; it scores the prompt with echo: true (and logprobs), "
                            "without stream", param="max_tokens")
    if req.echo and req.logprobs is not None and req.stream:
        raise APIError(400, "echo with logprobs does not stream here; leave stream out", param="stream")
    if scoring:
        _fit(served, [p[:-1] for p in prompts], None, 1, "prompt")  # the whole prompt fits the context
    else:
        fitted = _fit(served, prompts, req.max_tokens, shapes.DEFAULT_COMPLETION_TOKENS, "prompt")
        options = req.sampling(limits.max_new_tokens(len(prompts), req.n, req.max_tokens, fitted))
    rid = shapes.new_id("cmpl")
    if req.stream:
        job = Job.generate(served, prompts, options, req.logprobs)
        return _sse(_completion_events(served, rid, req, prompts, texts, job, _streaming(served, job)))
    scored = None
    if req.echo and req.logprobs is not None:
        rows = [Row(p, i, logprobs=req.logprobs) for i, p in enumerate(prompts)]
        scored = await wait(served, Job(served, rows, kind="score"))
    if scoring:
        from tunesmith.serve.decode import Completed

        done = [Completed(p, s, "", [], "length") for p in range(len(prompts)) for s in range(req.n)]
    else:
        done = await wait(served, Job.generate(served, prompts, options, req.logprobs))
    shown, logprobs = _echoed(served, req, texts, prompts, done, scored)
    return shapes.completion_response(rid, served.name, done, [len(p) for p in prompts], shown, logprobs)


def _echoed(served, req, texts, prompts, done, scored):
    """Each choice's text (the prompt first with echo) and logprobs object (None when not asked for)."""
    tok = served.tokenizer
    heads = [(t if isinstance(t, str) else tok.decode(p)) if req.echo else "" for t, p in zip(texts, prompts)]
    shown = [heads[c.prompt] + c.text for c in done]
    if req.logprobs is None:
        return shown, None
    out = []
    for c in done:
        head = lp.completion_logprobs(tok, scored[c.prompt]) if scored else None
        tail = lp.completion_logprobs(tok, c.logprobs, len(heads[c.prompt])) if c.logprobs is not None else None
        out.append(lp.joined(head, tail))
    return shown, out


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


def _submit(served: Served, job: Job) -> Job:
    try:
        return served.batcher.submit(job)
    except QueueFull as err:
        raise APIError(429, str(err), code="queue_full", type_="rate_limit_error",
                       headers={"Retry-After": str(err.retry_after)}) from None


def _timed_out(served: Served) -> APIError:
    limit = served.batcher.config.timeout
    return APIError(504, f"the request was not answered within {limit:g} s (--request-timeout); the server is busy: "
                         "retry later, or start it with a higher --request-timeout", code="timeout", type_="timeout")


async def wait(served: Served, job: Job):
    """Queue `job` on its model's batcher and await its answer (a TunesmithError is the client's 400)."""
    _submit(served, job)
    try:
        return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(job.future)), served.batcher.config.timeout)
    except asyncio.TimeoutError:
        raise _timed_out(served) from None
    except TunesmithError as err:
        raise APIError(400, str(err)) from None
    finally:
        job.cancel()  # answered, timed out or the client left: nothing more to do for it


def _sse(events) -> StreamingResponse:
    async def lines():
        async for event in events:
            yield f"data: {json.dumps(event)}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(lines(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def _streaming(served: Served, job: Job):
    """Queue a streaming job (a full queue is a 429 before the response starts); yields (index, text, logprob entries
    or None) pieces as its rows generate them, then the list of Completions. A client that goes away, or --request-timeout, cancels it."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()

    def put(item) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, item)
        except RuntimeError:  # the event loop has closed (a forced shutdown)
            job.cancel()

    job.on_text = lambda index, text, entries: put((index, text, entries))
    _submit(served, job)
    job.future.add_done_callback(lambda _: put(None))
    limit = served.batcher.config.timeout

    async def pieces():
        try:
            while True:
                left = None if limit is None else job.arrived + limit - time.monotonic()
                try:
                    item = await asyncio.wait_for(queue.get(), left)
                except asyncio.TimeoutError:
                    raise _timed_out(served) from None
                if item is None:
                    break
                yield item
            yield job.future.result()
        finally:
            job.cancel()

    return pieces()


async def _chat_events(served, rid, req, ids, stream):
    """A chunk per piece of text, with the logprobs of its tokens; the tokens not shown yet (those of a stop string,
    or EOS) come with the choice's last chunk."""
    sent = [0] * req.n
    for i in range(req.n):
        yield shapes.chat_chunk(rid, served.name, i, {"role": "assistant", "content": ""})
    try:
        async for item in stream:
            if isinstance(item, tuple):
                index, text, entries = item
                sent[index] += len(entries or [])
                shown = lp.chat_logprobs(served.tokenizer, entries) if entries is not None else None
                yield shapes.chat_chunk(rid, served.name, index, {"content": text}, logprobs=shown)
                continue
            for i, c in enumerate(item):
                shown = lp.chat_logprobs(served.tokenizer, c.logprobs[sent[i]:]) if c.logprobs is not None else None
                yield shapes.chat_chunk(rid, served.name, i, {}, c.finish_reason, logprobs=shown)
            if req.include_usage:
                yield shapes.chat_chunk(rid, served.name, usage_=shapes.usage([len(ids)], item))
    except (TunesmithError, APIError) as err:
        yield shapes.error_body(str(err))


async def _completion_events(served, rid, req, prompts, texts, job, stream):
    """As _chat_events; with echo, each choice's prompt first. text_offset counts from the choice's first chunk."""
    sent, at = [0] * len(job.rows), [0] * len(job.rows)
    if req.echo:
        for c in job.rows:
            head = texts[c.prompt] if isinstance(texts[c.prompt], str) else served.tokenizer.decode(prompts[c.prompt])
            at[c.index] = len(head)
            yield shapes.completion_chunk(rid, served.name, c.index, head)
    try:
        async for item in stream:
            if isinstance(item, tuple):
                index, text, entries = item
                shown = lp.completion_logprobs(served.tokenizer, entries, at[index]) if entries is not None else None
                sent[index], at[index] = sent[index] + len(entries or []), at[index] + len(text)
                yield shapes.completion_chunk(rid, served.name, index, text, logprobs=shown)
                continue
            for i, c in enumerate(item):
                rest = c.logprobs[sent[i]:] if c.logprobs is not None else None
                shown = lp.completion_logprobs(served.tokenizer, rest, at[i]) if rest is not None else None
                yield shapes.completion_chunk(rid, served.name, i, "", c.finish_reason, logprobs=shown)
            if req.include_usage:
                yield shapes.completion_chunk(rid, served.name, usage_=shapes.usage([len(p) for p in prompts], item))
    except (TunesmithError, APIError) as err:
        yield shapes.error_body(str(err))
