"""autoglm-client: the Python SDK of the autoglm-serve daemon (grpcio and protobuf only, no torch).

from autoglm_client import Client

with Client("127.0.0.1:50051") as client:
    for event in client.generate("Hello", max_new_tokens=32):
        ...
    reply = client.chat_text([{"role": "user", "content": "Hi"}], max_new_tokens=32)
"""

from __future__ import annotations

from autoglm_client.aio import AsyncClient
from autoglm_client.channel import RetryPolicy, TlsConfig
from autoglm_client.client import Client
from autoglm_client.errors import (
    AutoglmError,
    CancelledError,
    DeadlineExceededError,
    InternalError,
    InvalidArgumentError,
    PermissionDeniedError,
    ResourceExhaustedError,
    UnauthenticatedError,
    UnavailableError,
)
from autoglm_client.messages import ContentPart, ImagePart, Message, Role, TextPart
from autoglm_client.tokens import FileToken, StaticToken, TokenError, TokenProvider, VaultIdentityToken
from autoglm_client.types import (
    Chunk,
    Finished,
    FinishReason,
    GenerateEvent,
    GenerationResult,
    HealthStatus,
    ModelInfo,
    Started,
    TokenLogprob,
    TopLogprob,
    Usage,
)

__version__ = "0.1.0"

__all__ = [
    "AsyncClient",
    "AutoglmError",
    "CancelledError",
    "Chunk",
    "Client",
    "ContentPart",
    "DeadlineExceededError",
    "FileToken",
    "FinishReason",
    "Finished",
    "GenerateEvent",
    "GenerationResult",
    "HealthStatus",
    "ImagePart",
    "InternalError",
    "InvalidArgumentError",
    "Message",
    "ModelInfo",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "RetryPolicy",
    "Role",
    "Started",
    "StaticToken",
    "TextPart",
    "TlsConfig",
    "TokenError",
    "TokenLogprob",
    "TokenProvider",
    "TopLogprob",
    "UnauthenticatedError",
    "UnavailableError",
    "Usage",
    "VaultIdentityToken",
    "__version__",
]
