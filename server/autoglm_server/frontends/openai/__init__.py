"""The OpenAI-compatible HTTP API: the only code that knows HTTP, JSON bodies and SSE.

schemas.py parses and maps requests onto the shared specs, responses.py builds response bodies and
stream chunks, errors.py maps the one error tree onto HTTP statuses and OpenAI error bodies,
routes.py holds the endpoints (thin, over serving/pipeline.py), server.py runs uvicorn on the
daemon's own event loop.
"""
