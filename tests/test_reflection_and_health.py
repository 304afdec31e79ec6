"""Every role serves gRPC server reflection and the standard health service, so grpcurl-style tools
and Kubernetes' gRPC probes work against it without our proto files."""

from __future__ import annotations

from urllib.parse import urlparse

import grpc
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from conftest import Running


def _address(running: Running) -> str:
    url = urlparse(running.grpc_url)
    return f"{url.hostname}:{url.port}"


def test_reflection_lists_the_function_health_and_reflection_services(hello_world: Running) -> None:
    with grpc.insecure_channel(_address(hello_world)) as channel:
        services = set(ProtoReflectionDescriptorDatabase(channel).get_services())
    assert {"metaparticle.v1.Function", "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"} <= services


def test_reflection_describes_call_as_payload_in_payload_out(hello_world: Running) -> None:
    with grpc.insecure_channel(_address(hello_world)) as channel:
        pool = DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
        method = pool.FindServiceByName("metaparticle.v1.Function").FindMethodByName("Call")
    assert method.input_type.full_name == "metaparticle.v1.Payload"
    assert method.output_type.full_name == "metaparticle.v1.Payload"
    assert [f.name for f in method.input_type.fields] == ["json"]


def test_health_answers_serving_for_the_server_and_the_function_service(hello_world: Running) -> None:
    with grpc.insecure_channel(_address(hello_world)) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "metaparticle.v1.Function"):
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING, service


def test_health_of_an_unknown_service_is_not_found(hello_world: Running) -> None:
    with grpc.insecure_channel(_address(hello_world)) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=5)
        except grpc.RpcError as err:
            assert err.code() == grpc.StatusCode.NOT_FOUND
        else:
            raise AssertionError("an unknown service must not report a status")
