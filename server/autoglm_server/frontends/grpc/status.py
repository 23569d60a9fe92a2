"""Turn an AutoglmError (or anything unexpected) into a gRPC status with rich details.

The only module that knows the wire form of errors: google.rpc.Status with BadRequest for invalid
fields and RetryInfo for overload, in the `grpc-status-details-bin` trailer.
"""

from __future__ import annotations

import logging
import math
import uuid

import grpc
from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from autoglm_server.errors import AutoglmError, InvalidRequestError, OverloadedError

logger = logging.getLogger(__name__)


def to_grpc_status(error: AutoglmError) -> grpc.Status:
    """The status (code, message, trailer with details) a client receives for error."""
    details = []
    if isinstance(error, InvalidRequestError):
        violation = error_details_pb2.BadRequest.FieldViolation(field=error.field, description=error.reason)
        details.append(error_details_pb2.BadRequest(field_violations=[violation]))
    if isinstance(error, OverloadedError):
        seconds = max(error.retry_after_s, 0.0)
        whole = math.floor(seconds)
        delay = duration_pb2.Duration(seconds=whole, nanos=int((seconds - whole) * 1e9))
        details.append(error_details_pb2.RetryInfo(retry_delay=delay))
        details.append(error_details_pb2.ErrorInfo(reason=error.reason.upper(), domain="autoglm.v1"))
    status = status_pb2.Status(code=error.code.value[0], message=error.message)
    for detail in details:
        status.details.add().Pack(detail)
    return rpc_status.to_status(status)


def internal_status(error: BaseException) -> grpc.Status:
    """A generic INTERNAL status; the detail goes to the log under a correlation id."""
    correlation_id = uuid.uuid4().hex[:16]
    logger.error("unexpected error (correlation id %s)", correlation_id, exc_info=error)
    status = status_pb2.Status(
        code=code_pb2.INTERNAL,
        message=f"internal error; quote correlation id {correlation_id} to the operator",
    )
    return rpc_status.to_status(status)


async def abort(context: grpc.aio.ServicerContext, status: grpc.Status) -> None:
    """End the call with status; raises, as grpc.aio's abort does."""
    await context.abort(status.code, status.details, status.trailing_metadata)
