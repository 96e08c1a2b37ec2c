"""`tunesmith serve`: an OpenAI-compatible HTTP server over tunesmith runs, one base model in memory with its
adapters switched per request.

- registry.py: which runs and models are served under which names; one worker (a FIFO queue) per loaded model;
- models.py: the request and response shapes, in OpenAI's format (errors.py: the error shape, APIError);
- limits.py: what one request may ask (prompts, body bytes, new tokens), each raised by a `tunesmith serve` flag;
- app.py: the FastAPI app (routes, errors, streaming);
- server.py: running it under Uvicorn (through tunesmith.web, shared with the studio), port taken before models load.

Importing this package imports neither FastAPI nor torch; `serve.server.serve` and `serve.app` do.
"""
