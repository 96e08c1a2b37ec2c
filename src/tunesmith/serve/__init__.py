"""`tunesmith serve`: an OpenAI-compatible HTTP server over tunesmith runs, one base model in memory with its
adapters switched per request.

- registry.py: which runs and models are served under which names; per loaded model a Batcher (generation); one
  compute thread runs every model's work (loading, prefills and steps, classify, score);
- batching.py: continuous batching: each model's bounded queue and batch thread (--max-batch, --batch-window-ms,
  --max-queue, --request-timeout); continuous.py: the decode loop that steps every row at work over one KV cache,
  admitting rows between steps and retiring them as they end; decode.py: each row's sampling, stop strings, stream
  and answer (shared by both loops), the static batch (one generate call) for models the loop cannot step, and the
  log-probabilities of a prompt's own tokens (echo); logprobs.py: log-probabilities in OpenAI's shapes;
- models.py: the request and response shapes, in OpenAI's format (errors.py: the error shape, APIError);
- limits.py: what one request may ask (prompts, body bytes, new tokens), each raised by a `tunesmith serve` flag;
- app.py: the FastAPI app (models, classify, score, errors); completions.py: chat and completions, streaming;
- server.py: running it under Uvicorn (through tunesmith.web, shared with the studio), port taken before models load.

Importing this package imports neither FastAPI nor torch; `serve.server.serve` and `serve.app` do.
"""
