"""The exception tree: status codes map to classes; rich details and RetryInfo are read from trailers."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2

from autoglm_client import (
    AutoglmError,
    CancelledError,
    Client,
    DeadlineExceededError,
    InternalError,
    InvalidArgumentError,
    PermissionDeniedError,
    ResourceExhaustedError,
    UnauthenticatedError,
    UnavailableError,
    _wire,
)
from autoglm_client.errors import error_for
from tests.client.scripted_server import RETRY_AFTER_S, ScriptedServer


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        (grpc.StatusCode.INVALID_ARGUMENT, InvalidArgumentError),
        (grpc.StatusCode.UNAUTHENTICATED, UnauthenticatedError),
        (grpc.StatusCode.PERMISSION_DENIED, PermissionDeniedError),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, ResourceExhaustedError),
        (grpc.StatusCode.UNAVAILABLE, UnavailableError),
        (grpc.StatusCode.DEADLINE_EXCEEDED, DeadlineExceededError),
        (grpc.StatusCode.CANCELLED, CancelledError),
        (grpc.StatusCode.INTERNAL, InternalError),
        (grpc.StatusCode.UNKNOWN, InternalError),
        (grpc.StatusCode.NOT_FOUND, AutoglmError),
    ],
)
def test_each_code_maps_to_its_class_and_keeps_code_and_message(code: grpc.StatusCode, cls: type[AutoglmError]) -> None:
    error = error_for(code, "the message")
    assert type(error) is cls
    assert isinstance(error, AutoglmError)
    assert error.code is code
    assert error.message == "the message"
    assert str(error) == f"{code.name}: the message"


def _packed(message: Message) -> any_pb2.Any:
    detail = any_pb2.Any()
    detail.Pack(message)
    return detail


def test_wire_reader_decodes_status_written_by_googleapis_protos() -> None:
    """Cross-check the SDK's minimal decoder against the official google.rpc message classes."""
    retry = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=3, nanos=500_000_000))
    info = error_details_pb2.ErrorInfo(reason="QUEUE_FULL", domain="autoglm")
    status = status_pb2.Status(code=8, message="queue full ✓", details=[_packed(info), _packed(retry)])
    decoded = _wire.parse_status(status.SerializeToString())
    assert decoded.code == 8
    assert decoded.message == "queue full ✓"
    assert [d.type_url for d in decoded.details] == [d.type_url for d in status.details]
    assert _wire.parse_retry_delay(decoded.details[0]) is None
    assert _wire.parse_retry_delay(decoded.details[1]) == pytest.approx(3.5)
    unpacked = error_details_pb2.ErrorInfo()
    assert decoded.details[0].Unpack(unpacked)
    assert unpacked.reason == "QUEUE_FULL"


def test_resource_exhausted_reads_retry_after_from_details() -> None:
    retry = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=0, nanos=250_000_000))
    error = error_for(grpc.StatusCode.RESOURCE_EXHAUSTED, "full", (_packed(retry),))
    assert isinstance(error, ResourceExhaustedError)
    assert error.retry_after == pytest.approx(0.25)
    assert error_for(grpc.StatusCode.RESOURCE_EXHAUSTED, "full").retry_after is None  # type: ignore[attr-defined]


@pytest.mark.parametrize("data", [b"\x0a\xff", b"\x08", b"\x0b\x00", b"\x12\x05ab"])
def test_wire_reader_rejects_malformed_bytes(data: bytes) -> None:
    with pytest.raises(_wire.WireError):
        _wire.parse_status(data)


def test_server_errors_arrive_as_typed_exceptions(scripted: ScriptedServer) -> None:
    with Client(scripted.target, timeout=10, retry=None) as client:
        with pytest.raises(InvalidArgumentError, match="max_new_tokens") as invalid:
            client.generate_text("invalid")
        assert invalid.value.code is grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(ResourceExhaustedError) as exhausted:
            client.generate_text("overloaded")
        assert exhausted.value.retry_after == pytest.approx(RETRY_AFTER_S)
        assert exhausted.value.details[0].type_url.endswith("google.rpc.RetryInfo")
        with pytest.raises(InternalError, match="correlation id"):
            list(client.generate("internal"))
        with pytest.raises(UnavailableError):
            client.generate_text("unavailable")


def test_nothing_listening_is_unavailable() -> None:
    with Client("127.0.0.1:1", timeout=5, retry=None) as client, pytest.raises(UnavailableError):
        client.model_info()
