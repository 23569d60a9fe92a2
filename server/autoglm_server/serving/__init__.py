"""The transport-neutral request path that both front doors (gRPC, OpenAI HTTP) share."""
