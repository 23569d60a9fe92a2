"""The gRPC front door: the servicer over the shared pipeline and the protobuf <-> domain mapping.

`service.py` (the servicer, and `register()` that puts it, health and reflection on a server),
`convert.py` (messages <-> specs and deltas), `status.py` (the error tree -> gRPC status with
google.rpc details), `decode_guard.py` (an unparsable request is INVALID_ARGUMENT), `health.py`
(grpc.health.v1). The only code below the interceptors that imports protobuf messages.
"""
