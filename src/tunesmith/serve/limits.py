"""How much one request may ask of `tunesmith serve`, so that no single request holds a model's only worker for
minutes: prompts (or inputs) per request, the body's size, and the tokens a request may ask to generate
(prompts x n x max_tokens). Each limit has a CLI flag that raises it; a request past one is a 400 in OpenAI's shape
that names the limit and the flag.

Nothing here imports FastAPI: the body limit is a plain ASGI middleware.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from tunesmith.serve.errors import APIError, error_body

DEFAULT_MAX_PROMPTS = 32
DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
DEFAULT_MAX_REQUEST_TOKENS = 16384


@dataclass(frozen=True)
class Limits:
    """What one request may ask for (`tunesmith serve --max-prompts --max-body-bytes --max-request-tokens`)."""

    max_prompts: int = DEFAULT_MAX_PROMPTS  # prompts of one /v1/completions request; inputs of /v1/classify, /v1/score
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES  # the request body, as sent
    max_request_tokens: int = DEFAULT_MAX_REQUEST_TOKENS  # prompts x n x max_tokens

    def __post_init__(self):
        for name in ("max_prompts", "max_body_bytes", "max_request_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                flag = "--" + name.replace("_", "-")
                raise ValueError(f"{flag} must be a whole number of at least 1, got {value!r}")

    def check_count(self, count: int, param: str, what: str = "prompts") -> None:
        """At most max_prompts prompts (or inputs) in one request."""
        if count > self.max_prompts:
            raise APIError(400, f"{param}: {count} {what} in one request; this server takes at most {self.max_prompts} "
                                f"(--max-prompts). Send them in several requests, or start the server with a higher "
                                f"--max-prompts", param=param, code="too_many_prompts")

    def max_new_tokens(self, prompts: int, n: int, wanted: int | None, fitted: int) -> int:
        """max_tokens for a request of `prompts` x `n` completions: `fitted` (what the context leaves, or as asked),
        refused when asked for explicitly past max_request_tokens, and cut to fit it when it is only the default."""
        share = self.max_request_tokens // (prompts * n)
        if wanted is None and share >= 1:
            return min(fitted, share)
        if prompts * n * fitted <= self.max_request_tokens:
            return fitted
        asked = (f"up to {prompts * n * fitted} new tokens ({prompts} prompts x n={n} x max_tokens={fitted})"
                 if wanted is not None else f"at least {prompts * n} new tokens ({prompts} prompts x n={n} x 1)")
        raise APIError(400, f"this request asks for {asked}; this server allows {self.max_request_tokens} per "
                            "request (--max-request-tokens). Lower max_tokens or n, send fewer prompts, or start the "
                            "server with a higher --max-request-tokens", param="max_tokens", code="request_too_large")


DRAIN_BYTES = 64 * 2**20  # the most of a refused body read (and dropped) before the answer


async def _drain(receive) -> None:
    """Read and drop the rest of a refused body (at most DRAIN_BYTES), so that a client still sending it reads the
    400 instead of a reset connection: Uvicorn delivers no body once the answer is sent, and closing a connection
    with unread bytes resets it."""
    left = DRAIN_BYTES
    while left > 0:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body", False):
            return
        left -= len(message.get("body", b""))


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes is refused with a 400 before anything parses it, whether
    the client declared its length (Content-Length) or streams it in chunks."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            if headers.get(b"expect", b"").lower() != b"100-continue":  # else the client waits for this answer
                await _drain(receive)
            return await self._refuse(send, int(declared))
        chunks, size = [], 0
        while True:  # read the whole body first (FastAPI would anyway), counting
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                more = message.get("more_body", False)
                if more:
                    await _drain(receive)
                return await self._refuse(send, size, more=more)
            if not message.get("more_body", False):
                break
        body, replayed = b"".join(chunks), False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: the disconnect a streaming response listens for

        await self.app(scope, replay, send)

    async def _refuse(self, send, size: int, more: bool = False) -> None:
        said = f"over {size}" if more else f"{size}"
        message = (f"the request body is {said} bytes; this server takes at most {self.limit} (--max-body-bytes). "
                   "Send less in one request, or start the server with a higher --max-body-bytes")
        payload = json.dumps(error_body(message, code="request_too_large")).encode()
        await send({"type": "http.response.start", "status": 400,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": payload})
