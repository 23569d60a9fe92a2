"""A minimal protobuf wire-format reader for the two google.rpc messages the SDK needs.

The SDK depends on grpcio and protobuf only. google.rpc.Status and google.rpc.RetryInfo live in
googleapis-common-protos, so rather than add that dependency for two tiny, frozen messages, this
module reads their fields straight from the wire format (which protobuf guarantees stable).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from google.protobuf import any_pb2

_VARINT, _FIXED64, _LENGTH, _FIXED32 = 0, 1, 2, 5

RETRY_INFO_TYPE_URL = "type.googleapis.com/google.rpc.RetryInfo"


class WireError(ValueError):
    """The bytes are not a well-formed protobuf message."""


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise WireError("truncated or overlong varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def fields(data: bytes) -> Iterator[tuple[int, int | bytes]]:
    """Yield (field number, value) pairs: ints for varint fields, bytes for the others."""
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire_type = key >> 3, key & 7
        if wire_type == _VARINT:
            value, pos = _varint(data, pos)
            yield number, value
            continue
        if wire_type == _LENGTH:
            size, pos = _varint(data, pos)
            end = pos + size
        elif wire_type == _FIXED64:
            end = pos + 8
        elif wire_type == _FIXED32:
            end = pos + 4
        else:
            raise WireError(f"unsupported wire type {wire_type}")
        if end > len(data):
            raise WireError("truncated field")
        yield number, data[pos:end]
        pos = end


@dataclass(frozen=True)
class RpcStatus:
    """The fields of a google.rpc.Status (the `grpc-status-details-bin` trailer)."""

    code: int
    message: str
    details: tuple[any_pb2.Any, ...]


def parse_status(data: bytes) -> RpcStatus:
    """Decode google.rpc.Status {int32 code = 1; string message = 2; repeated Any details = 3}."""
    code, message, details = 0, "", []
    for number, value in fields(data):
        if number == 1 and isinstance(value, int):
            code = value
        elif number == 2 and isinstance(value, bytes):
            message = value.decode("utf-8", errors="replace")
        elif number == 3 and isinstance(value, bytes):
            detail = any_pb2.Any()
            detail.ParseFromString(value)
            details.append(detail)
    return RpcStatus(code=code, message=message, details=tuple(details))


def parse_retry_delay(detail: any_pb2.Any) -> float | None:
    """Seconds of a google.rpc.RetryInfo {Duration retry_delay = 1}, or None for another type."""
    if detail.type_url != RETRY_INFO_TYPE_URL:
        return None
    seconds = nanos = 0
    for number, value in fields(detail.value):
        if number == 1 and isinstance(value, bytes):
            for inner, inner_value in fields(value):
                # Duration {int64 seconds = 1; int32 nanos = 2}; both non-negative for a delay.
                if inner == 1 and isinstance(inner_value, int):
                    seconds = inner_value
                elif inner == 2 and isinstance(inner_value, int):
                    nanos = inner_value
    return seconds + nanos / 1e9
