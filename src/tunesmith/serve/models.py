"""Request and response shapes of `tunesmith serve`, in OpenAI's format.

Requests are pydantic models that refuse what they do not know, as OpenAI does ("Unrecognized request argument"),
so a misspelt option is an error naming it rather than silently ignored. Options OpenAI has and this server does
not implement (penalties, tools, JSON mode...) are accepted only at their neutral value (0, null,
false, empty), because clients often send those. `top_k` is not OpenAI's but vLLM's extension, sent through the
client's `extra_body`. Numbers and booleans are strict, as OpenAI's are: `"max_tokens": "8"` or `"n": true` is a
400, not silently read as 8 or 1. Responses are plain dicts built by the functions at the end (errors: errors.py).
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tunesmith.serve.errors import error_body  # noqa: F401 (responses: the error shape too)

DEFAULT_CHAT_TOKENS = 256  # max_tokens when a chat request gives none (and the context leaves room)
DEFAULT_COMPLETION_TOKENS = 16  # OpenAI's default for /v1/completions
MAX_N = 16
MAX_LOGPROBS = 20  # top_logprobs (chat) and logprobs (completions): OpenAI's chat limit, vLLM's for both


def _unsupported(value, neutral=(None, 0, False, "", [], {})):
    if value not in neutral:
        raise ValueError(f"{value!r} is not supported by tunesmith serve; leave it out")
    return value


class _Options(BaseModel):
    """What every generation request may say."""

    model_config = ConfigDict(extra="forbid")

    model: str
    max_tokens: int | None = Field(None, ge=1, strict=True, description="Most new tokens per completion (default: see each endpoint).")
    temperature: float | None = Field(None, ge=0, le=2, strict=True, description="0: greedy; default 1 (sampled), as OpenAI's.")
    top_p: float | None = Field(None, gt=0, le=1, strict=True)
    top_k: int | None = Field(None, ge=0, strict=True, description="Not OpenAI's (vLLM's extension): sample from the k best; 0: off.")
    n: int = Field(1, ge=1, le=MAX_N, strict=True)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, strict=True, description="The same seed, prompt and options give the same samples.")
    stream: bool = Field(False, strict=True)
    stream_options: dict | None = None
    user: str | None = None
    presence_penalty: float | None = Field(None, strict=True)
    frequency_penalty: float | None = Field(None, strict=True)
    logit_bias: dict | None = None

    @field_validator("stop")
    @classmethod
    def _stops(cls, value):
        if isinstance(value, list) and len(value) > 4:
            raise ValueError(f"at most 4 stop strings, got {len(value)}")
        return value

    @field_validator("presence_penalty", "frequency_penalty", "logit_bias")
    @classmethod
    def _neutral(cls, value):
        return _unsupported(value)

    def sampling(self, max_tokens: int) -> dict:
        """The options of `generation.complete` this request asks for."""
        stop = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return {"max_new_tokens": max_tokens, "temperature": 1.0 if self.temperature is None else self.temperature,
                "top_p": 1.0 if self.top_p is None else self.top_p, "top_k": self.top_k or 0, "stop": stop,
                "n": self.n, "seed": self.seed}

    @property
    def include_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class Message(BaseModel):
    """A chat message; text only (content parts of type text are joined)."""

    model_config = ConfigDict(extra="allow")  # name, tool_call_id ...: passed to nobody, harmless

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None

    def as_dict(self) -> dict:
        """{'role', 'content'} as chat templates take it; OpenAI's newer 'developer' role is a system message."""
        text = "".join(p.text for p in self.content) if isinstance(self.content, list) else self.content or ""
        return {"role": "system" if self.role == "developer" else self.role, "content": text}


class ChatRequest(_Options):
    messages: list[Message] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1, strict=True, description="OpenAI's newer name for max_tokens.")
    logprobs: bool | None = Field(None, strict=True, description="The generated tokens' log-probabilities.")
    top_logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS, strict=True, description="With logprobs: the k most likely tokens at each position.")
    tools: list | None = None
    tool_choice: Any = None
    parallel_tool_calls: bool | None = Field(None, strict=True)
    response_format: dict | None = None
    metadata: dict | None = None
    store: bool | None = Field(None, strict=True)

    @field_validator("tools")
    @classmethod
    def _off(cls, value):
        return _unsupported(value)

    @property
    def top(self) -> int | None:
        """Log-probabilities per generated token: None (not asked), else the k most likely alongside."""
        return (self.top_logprobs or 0) if self.logprobs else None

    @field_validator("tool_choice")
    @classmethod
    def _no_tools(cls, value):
        return _unsupported(value, (None, "none", "auto"))

    @field_validator("response_format")
    @classmethod
    def _text_only(cls, value):
        if value and value.get("type") != "text":
            raise ValueError(f"{value.get('type')!r} is not supported by tunesmith serve; only {{'type': 'text'}}")
        return value


class CompletionRequest(_Options):
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = Field(None, ge=0, strict=True, description="Most new tokens per completion (default 16); 0 with echo: score the prompt only.")
    echo: bool | None = Field(None, strict=True, description="Give the prompt back before the completion (and its tokens' logprobs).")
    suffix: str | None = None
    best_of: int | None = Field(None, strict=True)
    logprobs: int | None = Field(None, ge=0, le=MAX_LOGPROBS, strict=True, description="Log-probabilities of the tokens and the k most likely at each position.")

    @field_validator("prompt")
    @classmethod
    def _some(cls, value):
        if isinstance(value, list) and not value:
            raise ValueError("give a prompt: a string, a list of strings, or token ids")
        return value

    @field_validator("suffix")
    @classmethod
    def _off(cls, value):
        return _unsupported(value)

    @field_validator("best_of")
    @classmethod
    def _one(cls, value):
        return _unsupported(value, (None, 1))

    def prompts(self) -> list[str | list[int]]:
        p = self.prompt
        if isinstance(p, str) or (p and isinstance(p[0], int)):
            return [p]
        return list(p)


class ClassifyRequest(BaseModel):
    """Not in OpenAI's API: the label and probabilities a classify run gives each input."""

    model_config = ConfigDict(extra="forbid")
    model: str
    input: str | list[str] = Field(min_length=1)


class ScoreRequest(BaseModel):
    """Not in OpenAI's API: a reward model run's score of each row (rows shaped as that run's data)."""

    model_config = ConfigDict(extra="forbid")
    model: str
    input: dict | list[dict] = Field(min_length=1)


# --- responses ---------------------------------------------------------------------------------------------------


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(prompt_lengths: list[int], completions) -> dict:
    prompt, generated = sum(prompt_lengths), sum(len(c.token_ids) for c in completions)
    return {"prompt_tokens": prompt, "completion_tokens": generated, "total_tokens": prompt + generated}


def chat_response(rid: str, model: str, completions, prompt_tokens: int, logprobs=None) -> dict:
    """`logprobs(completion)`: a choice's logprobs object (logprobs.py), or None when they were not asked for."""
    return {"id": rid, "object": "chat.completion", "created": int(time.time()), "model": model,
            "choices": [{"index": i, "message": {"role": "assistant", "content": c.text},
                         "logprobs": logprobs(c) if logprobs else None,
                         "finish_reason": c.finish_reason} for i, c in enumerate(completions)],
            "usage": usage([prompt_tokens], completions)}


def chat_chunk(rid: str, model: str, index: int | None = None, delta: dict | None = None,
               finish_reason: str | None = None, usage_: dict | None = None, logprobs: dict | None = None) -> dict:
    choices = [] if index is None else [{"index": index, "delta": delta or {}, "logprobs": logprobs,
                                         "finish_reason": finish_reason}]
    chunk = {"id": rid, "object": "chat.completion.chunk", "created": int(time.time()), "model": model,
             "choices": choices}
    return {**chunk, "usage": usage_} if usage_ else chunk


def completion_response(rid: str, model: str, completions, prompt_lengths: list[int], texts=None, logprobs=None) -> dict:
    """`texts`: each choice's text (echo puts the prompt first); `logprobs`: each choice's logprobs object."""
    return {"id": rid, "object": "text_completion", "created": int(time.time()), "model": model,
            "choices": [{"index": i, "text": texts[i] if texts else c.text, "logprobs": logprobs[i] if logprobs else None,
                         "finish_reason": c.finish_reason} for i, c in enumerate(completions)],
            "usage": usage(prompt_lengths, completions)}


def completion_chunk(rid: str, model: str, index: int | None = None, text: str = "",
                     finish_reason: str | None = None, usage_: dict | None = None, logprobs: dict | None = None) -> dict:
    choices = [] if index is None else [{"index": index, "text": text, "logprobs": logprobs, "finish_reason": finish_reason}]
    chunk = {"id": rid, "object": "text_completion", "created": int(time.time()), "model": model, "choices": choices}
    return {**chunk, "usage": usage_} if usage_ else chunk


def model_card(served) -> dict:
    """A /v1/models entry: OpenAI's fields, plus `parent` (an adapter's base), as vLLM lists LoRA adapters."""
    return {"id": served.name, "object": "model", "created": served.created, "owned_by": "tunesmith",
            "parent": served.parent, "kind": served.kind, "objective": served.objective}
