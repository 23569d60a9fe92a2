"""The daemon's two front doors over one request path: `grpc/` (autoglm.v1) and `openai/` (HTTP)."""
