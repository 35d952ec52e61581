"""The platform's own Kubernetes manifests (deploy/k8s/), validated like the endpoint exports: kubernetes-validate
for the core kinds, KubeRay's RayCluster schema (vendored in deploy/k8s/schema/) for the RayCluster; then what
ties them together: settings that exist and parse, names that resolve, Ray's token authentication everywhere."""

from __future__ import annotations

import copy
import json
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from kubernetes_validate import validate as k8s_validate
from referencing import Registry, Resource

from conftest import ROOT
from stratus.settings import Settings

FOLDER = ROOT / "deploy" / "k8s"
K8S_VERSION = "1.37.0"


def _documents() -> list[dict[str, Any]]:
    """Every document of every file the kustomization lists, in its order."""
    kustomization = yaml.safe_load((FOLDER / "kustomization.yaml").read_text())
    documents: list[dict[str, Any]] = []
    for name in kustomization["resources"]:
        documents.extend(d for d in yaml.safe_load_all((FOLDER / name).read_text()) if d)
    return documents


DOCUMENTS = _documents()


def _one(kind: str, name: str) -> dict[str, Any]:
    [document] = [d for d in DOCUMENTS if d["kind"] == kind and d["metadata"]["name"] == name]
    return document


@cache
def _raycluster_validator() -> jsonschema.Draft202012Validator:
    folder = resources.files("kubernetes_validate").joinpath("kubernetes-json-schema", f"v{K8S_VERSION}-local-strict")
    definitions = json.loads(folder.joinpath("_definitions.json").read_text())
    registry: Registry = Resource.from_contents(definitions) @ Registry()
    schema = json.loads((FOLDER / "schema" / "raycluster.ray.io-v1.json").read_text())
    return jsonschema.Draft202012Validator(schema, registry=registry)


def validate(document: dict[str, Any]) -> None:
    if document["apiVersion"] == "ray.io/v1":
        _raycluster_validator().validate(document)
    else:
        k8s_validate(document, K8S_VERSION, strict=True)


def test_the_kustomization_lists_every_manifest_file() -> None:
    listed = set(yaml.safe_load((FOLDER / "kustomization.yaml").read_text())["resources"])
    assert listed == {p.name for p in FOLDER.glob("*.yaml")} - {"kustomization.yaml"}
    kinds = {d["kind"] for d in DOCUMENTS}
    wanted = {"Deployment", "Service", "ConfigMap", "Secret", "RayCluster", "PodDisruptionBudget", "NetworkPolicy"}
    assert wanted <= kinds


@pytest.mark.parametrize("document", DOCUMENTS, ids=[f"{d['kind']}/{d['metadata']['name']}" for d in DOCUMENTS])
def test_every_manifest_validates(document: dict[str, Any]) -> None:
    validate(document)
    assert document["metadata"].get("namespace", "stratus") == "stratus"


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("spec", "workerGroupSpecs", 0, "replicas"), "two", "is not of type 'integer'"),
        (("spec", "workerGroupSpecs", 0, "maxReplica"), 3, "Additional properties"),
        (("spec", "headGroupSpec", "template", "spec", "containers", 0, "imagePullPolicy"), 7, "is not of type"),
        (("spec", "headGroupSpec", "rayStartParams", "num-cpus"), 0, "is not of type 'string'"),
        (("spec", "autoscalerOptions", "upscalingMode"), "Eager", "is not one of"),
    ],
)
def test_the_raycluster_schema_refuses_what_kuberay_would(path: tuple[Any, ...], value: Any, message: str) -> None:
    """The schema check is not vacuous: a typo, a wrong type, even inside the embedded pod template, fails."""
    document = copy.deepcopy(_one("RayCluster", "stratus-ray"))
    target = document
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    with pytest.raises(jsonschema.ValidationError, match=message):
        validate(document)


def test_the_api_servers_get_settings_that_exist_and_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    config = _one("ConfigMap", "stratus-config")["data"]
    secret = _one("Secret", "stratus-secrets")["stringData"]
    declared = {f"STRATUS_{name.upper()}" for name in Settings.model_fields}
    names = {*config, *secret}
    assert {n for n in names if n.startswith("STRATUS_")} <= declared, "a manifest sets a setting that does not exist"
    assert names - {n for n in names if n.startswith("STRATUS_")} <= {
        "AWS_ENDPOINT_URL",
        "AWS_DEFAULT_REGION",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "RAY_AUTH_MODE",
        "RAY_AUTH_TOKEN",
    }
    for name, value in config.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert settings.host == "0.0.0.0" and settings.port == 8080
    assert str(settings.artifact_location).startswith("s3://")
    assert (settings.executor, settings.placement) == ("ray", "ray")
    # Shared state comes from the secret, never from a pod's own home: every server must hold the same keys.
    assert {"STRATUS_DATABASE_URL", "STRATUS_MASTER_KEY", "STRATUS_KEY_PEPPER"} <= set(secret)
    assert all("REPLACE-ME" in value for value in secret.values()), "the secret ships placeholders only"


def test_the_names_the_manifests_use_resolve() -> None:
    deployment = _one("Deployment", "stratus-api")
    pod = deployment["spec"]["template"]
    container = pod["spec"]["containers"][0]
    assert {s["configMapRef"]["name"] for s in container["envFrom"] if "configMapRef" in s} == {"stratus-config"}
    assert {s["secretRef"]["name"] for s in container["envFrom"] if "secretRef" in s} == {"stratus-secrets"}
    labels = pod["metadata"]["labels"]
    for selector in (
        _one("Service", "stratus-api")["spec"]["selector"],
        deployment["spec"]["selector"]["matchLabels"],
        _one("PodDisruptionBudget", "stratus-api")["spec"]["selector"]["matchLabels"],
    ):
        assert selector.items() <= labels.items()
    autoscaler = _one("HorizontalPodAutoscaler", "stratus-api")["spec"]
    assert autoscaler["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "stratus-api"}
    assert autoscaler["minReplicas"] >= 2 and deployment["spec"]["replicas"] >= 2  # one server can always be lost
    ports = {p["name"] for p in container["ports"]}
    assert {p["targetPort"] for p in _one("Service", "stratus-api")["spec"]["ports"]} <= ports
    config = _one("ConfigMap", "stratus-config")["data"]
    assert config["STRATUS_RAY_ADDRESS"].startswith("ray://stratus-ray-head-svc.")  # KubeRay's <name>-head-svc
    assert config["AWS_ENDPOINT_URL"].startswith("http://stratus-s3.")
    assert _one("Service", "stratus-s3")["spec"]["type"] == "ExternalName"
    assert (
        "@stratus-postgres.stratus.svc:5432/" in _one("Secret", "stratus-secrets")["stringData"]["STRATUS_DATABASE_URL"]
    )
    assert _one("Service", "stratus-postgres")["spec"]["type"] == "ExternalName"


def _ray_containers(cluster: dict[str, Any]) -> list[dict[str, Any]]:
    groups = [cluster["spec"]["headGroupSpec"], *cluster["spec"]["workerGroupSpecs"]]
    return [c for g in groups for c in g["template"]["spec"]["containers"]]


def test_every_ray_node_has_token_authentication_and_the_servers_image() -> None:
    cluster = _one("RayCluster", "stratus-ray")
    server = _one("Deployment", "stratus-api")["spec"]["template"]["spec"]["containers"][0]
    assert _one("ConfigMap", "stratus-config")["data"]["RAY_AUTH_MODE"] == "token"
    token = {"secretKeyRef": {"name": "stratus-secrets", "key": "RAY_AUTH_TOKEN"}}
    for env in [*(c["env"] for c in _ray_containers(cluster)), cluster["spec"]["autoscalerOptions"]["env"]]:
        variables = {e["name"]: e for e in env}
        assert variables["RAY_AUTH_MODE"]["value"] == "token"
        assert variables["RAY_AUTH_TOKEN"]["valueFrom"] == token
    # A job child or a replica is Stratus code, and Ray Client needs the same Ray on both ends.
    assert {c["image"] for c in _ray_containers(cluster)} == {server["image"]}
    constraints = (ROOT / "constraints.txt").read_text().splitlines()
    assert f"ray=={cluster['spec']['rayVersion']}" in constraints
    # Only Stratus and Ray pods reach the Ray pods.
    policy = _one("NetworkPolicy", "stratus-ray")["spec"]
    assert policy["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "stratus-ray"}
    allowed = [peer["podSelector"]["matchLabels"] for rule in policy["ingress"] for peer in rule["from"]]
    assert allowed == [{"app.kubernetes.io/name": "stratus-api"}, {"app.kubernetes.io/name": "stratus-ray"}]


def test_every_pod_runs_restricted() -> None:
    """The namespace enforces Pod Security's restricted profile; every pod here must pass it."""
    cluster = _one("RayCluster", "stratus-ray")
    templates = [
        _one("Deployment", "stratus-api")["spec"]["template"],
        cluster["spec"]["headGroupSpec"]["template"],
        *(g["template"] for g in cluster["spec"]["workerGroupSpecs"]),
    ]
    for template in templates:
        spec = template["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert spec["automountServiceAccountToken"] is False
        for container in spec["containers"]:
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"]["drop"] == ["ALL"]


def test_the_platform_image_is_documented() -> None:
    """The manifests name an image; docs/scale-out.md says how to build it and what to change."""
    text = Path(ROOT / "docs" / "scale-out.md").read_text()
    assert "deploy/k8s" in text and "kubectl apply -k deploy/k8s" in text


def test_the_platform_image_matches_the_manifests_and_the_tested_versions() -> None:
    import sys

    from dockerfile_parse import DockerfileParser

    parser = DockerfileParser(path=str(ROOT / "deploy" / "Dockerfile"))
    # Ray Client needs the same Python minor version on the servers and the Ray nodes: the one tested here.
    assert parser.baseimage == f"python:{sys.version_info.major}.{sys.version_info.minor}-slim"
    instructions = {(i["instruction"], i["value"]) for i in parser.structure}
    assert ("USER", "10001") in instructions  # the manifests' runAsUser
    [install] = [v for i, v in instructions if i == "RUN" and "pip install" in v]
    assert "-c constraints.txt" in install and "ray[default]" in install and ".[train]" in install
    server = _one("Deployment", "stratus-api")["spec"]["template"]["spec"]
    assert server["securityContext"]["runAsUser"] == 10001
