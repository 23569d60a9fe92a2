"""Names and ports that other artifacts (mesh/, vault/, the SDK) must agree with.

The mesh tests import this module, so a probe or port in mesh/ that drifts from what the daemon
really serves fails the suite.
"""

from __future__ import annotations

# The gRPC service name that readiness is reported under (grpc.health.v1). Spelled out so that this
# module stays free of protobuf; tests/unit/test_names.py checks it against the generated descriptor.
GENERATION_SERVICE_NAME = "autoglm.v1.GenerationService"
READINESS_SERVICE: str = GENERATION_SERVICE_NAME
# Liveness is reported under the empty service name, as grpc.health.v1 defines for the whole server.
LIVENESS_SERVICE: str = ""

DEFAULT_GRPC_PORT = 50051
DEFAULT_ADMIN_PORT = 9090
DEFAULT_HTTP_PORT = 8000
DEFAULT_LISTEN = f"127.0.0.1:{DEFAULT_GRPC_PORT}"
DEFAULT_HTTP_LISTEN = f"127.0.0.1:{DEFAULT_HTTP_PORT}"
DEFAULT_ADMIN_LISTEN = f"127.0.0.1:{DEFAULT_ADMIN_PORT}"

# Paths served on the admin HTTP port.
METRICS_PATH = "/metrics"
JWKS_PATH = "/.well-known/jwks.json"

# The OpenAI-compatible HTTP API (the daemon's second front door, --http-listen).
HTTP_PORT_NAME = "http-openai"
GRPC_PORT_NAME = "grpc"
HTTP_HEALTH_PATH = "/health"
OPENAI_CHAT_COMPLETIONS_PATH = "/v1/chat/completions"
OPENAI_COMPLETIONS_PATH = "/v1/completions"
OPENAI_MODELS_PATH = "/v1/models"

# The header (gRPC metadata key and HTTP header alike) that names an agent's session. The mesh hashes
# on it so that one agent's steps reach the replica holding its prefix cache; the daemon only logs
# and traces it, never uses it for auth.
SESSION_HEADER = "x-autoglm-session"
# The session header of the Gateway API Inference Extension's router (llm-d's session-affinity scorer);
# honoured like ours when ours is absent, for logging and tracing only (serving/session.py).
ROUTER_SESSION_HEADER = "x-session-id"

DEFAULT_DRAIN_TIMEOUT_S = 30.0

# Scopes a JWT's `scope` claim must hold for each RPC (configurable in settings).
SCOPE_GENERATE = "generate"
SCOPE_MODELS_READ = "models:read"

# RPCs that bypass authentication and load shedding.
HEALTH_SERVICE_PREFIX = "/grpc.health.v1.Health/"
REFLECTION_SERVICE_PREFIX = "/grpc.reflection."
