"""names.py spells the gRPC service name out (it imports no protobuf): it must match the contract."""

from autoglm_client.v1 import generation_pb2
from autoglm_server import names


def test_generation_service_name_matches_the_generated_descriptor() -> None:
    service = generation_pb2.DESCRIPTOR.services_by_name["GenerationService"]
    assert service.full_name == names.GENERATION_SERVICE_NAME
    assert service.full_name == names.READINESS_SERVICE
