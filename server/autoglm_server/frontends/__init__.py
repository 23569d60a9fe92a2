"""The daemon's second front door: the OpenAI-compatible HTTP API (the gRPC one is service.py)."""
