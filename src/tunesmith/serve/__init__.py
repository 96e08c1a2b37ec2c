"""`tunesmith serve`: an OpenAI-compatible HTTP server over tunesmith runs, one base model in memory with its
adapters switched per request.

- registry.py: which runs and models are served under which names; one worker (a FIFO queue) per loaded model;
- models.py: the request and response shapes, in OpenAI's format;
- app.py: the FastAPI app (routes, errors, streaming);
- server.py: running it under Uvicorn, in the foreground or in a thread.

Importing this package imports neither FastAPI nor torch; `serve.server.serve` and `serve.app` do.
"""
