"""The generated gRPC code is fresh (what setup.py's build step makes from the .proto now), wire-compatible
with the public service tritonclient.grpc calls, and each call needs the same scope as its HTTP route."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from google.protobuf import descriptor_pb2
from tritonclient.grpc import service_pb2 as triton_pb

from conftest import ROOT
from stratus.api.auth import POLICY as HTTP_POLICY
from stratus.grpc import inference_pb2 as pb
from stratus.grpc.service import POLICY

# The HTTP route of each call (stratus.api.v2).
ROUTES = {
    "ServerLive": ("GET", "/v2/health/live"),
    "ServerReady": ("GET", "/v2/health/ready"),
    "ModelReady": ("GET", "/v2/models/{name}/ready"),
    "ServerMetadata": ("GET", "/v2"),
    "ModelMetadata": ("GET", "/v2/models/{name}"),
    "ModelInfer": ("POST", "/v2/models/{name}/infer"),
    "RepositoryIndex": ("POST", "/v2/repository/index"),
    "RepositoryModelLoad": ("POST", "/v2/repository/models/{name}/load"),
    "RepositoryModelUnload": ("POST", "/v2/repository/models/{name}/unload"),
}


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("stratus_setup", ROOT / "setup.py")
    assert spec is not None and spec.loader is not None
    setup = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(setup)
    for generated in setup.generate_grpc(tmp_path):
        installed = ROOT / "src" / "stratus" / "grpc" / generated.name
        assert installed.read_text() == generated.read_text(), f"{installed} is stale: run `make install`"


def _messages(file: descriptor_pb2.FileDescriptorProto) -> dict[str, descriptor_pb2.DescriptorProto]:
    found: dict[str, descriptor_pb2.DescriptorProto] = {}

    def walk(prefix: str, message: descriptor_pb2.DescriptorProto) -> None:
        found[prefix + message.name] = message
        for nested in message.nested_type:
            walk(prefix + message.name + ".", nested)

    for message in file.message_type:
        walk("", message)
    return found


def test_wire_compatible_with_tritons_service() -> None:
    ours, theirs = descriptor_pb2.FileDescriptorProto(), descriptor_pb2.FileDescriptorProto()
    pb.DESCRIPTOR.CopyToProto(ours)
    triton_pb.DESCRIPTOR.CopyToProto(theirs)
    assert ours.package == theirs.package == "inference"
    (service,) = ours.service
    (their_service,) = theirs.service
    assert service.name == their_service.name == "GRPCInferenceService"
    their_methods = {m.name: m for m in their_service.method}
    assert {m.name for m in service.method} == set(POLICY)
    for method in service.method:
        twin = their_methods[method.name]
        assert (method.input_type, method.output_type) == (twin.input_type, twin.output_type)
        assert not method.client_streaming and not method.server_streaming
    their_messages = _messages(theirs)
    for name, message in _messages(ours).items():
        fields = {(f.name, f.number, f.type, f.label, f.type_name) for f in message.field}
        assert fields == {(f.name, f.number, f.type, f.label, f.type_name) for f in their_messages[name].field}, name


def test_each_call_needs_the_scope_of_its_http_route() -> None:
    assert set(ROUTES) == set(POLICY)
    for method, route in ROUTES.items():
        assert POLICY[method] == HTTP_POLICY[route], method
