"""Federated learning as a kind of job: Stratus is the control plane, Flower the engine (docs/federated.md).

``submit`` queues a ``federated`` job; its child (federated/worker.py) runs Flower's ServerApp behind a relay on
loopback and prints where it listens. ``create_key`` makes a key of the ``federated`` role bound to one job (off the
scope ladder, like an edge key: it can join that job's federation and do nothing else). ``join`` checks such a key,
the client's name and the shape of its data against the job, and answers with the relay's address and a client token
(an HMAC of job id and client name under the job's secret, which is an HMAC of the job id under this server's
secret): the relay takes no other credential. The result is registered like a training job's, with a lineage naming
the federation (clients, rounds, strategy) and no data set: the server never had one.

No flwr, no torch here: this runs in the Stratus server.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from sqlalchemy import select

from stratus import tenancy
from stratus.errors import Conflict, Forbidden, InvalidInput, NotFound, NotReady
from stratus.jobs import JobService
from stratus.registry import RegistryService, check_name
from stratus.registry.names import NAME_PATTERN
from stratus.security.keys import PREFIX, KeyService
from stratus.security.scopes import FEDERATED
from stratus.store.tables import ApiKey, Project
from stratus.training.params import TrainParams
from stratus.version import __version__

KIND = "federated"
CLIENT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
_CLIENT_RE = re.compile(CLIENT_PATTERN.strip("^$"))


def _refuse_null(value: Any) -> Any:
    if value is None:  # leave the field out instead: the published schema has no null here
        raise ValueError("give a value or leave the field out")
    return value


class FederatedRequest(BaseModel):
    """``stratus federated create``: the model, the federation's rules, and the shape every client's data has."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(
        default=None, pattern=NAME_PATTERN, max_length=64, description="registered model name; default: federated-MODEL"
    )
    model: Literal["logistic_regression", "mlp", "cnn"]
    rounds: int = Field(default=10, ge=1, le=1000)
    # At least 2: a federation of one is that client's own training, and a secure sum of one is its update.
    min_clients: int = Field(default=2, ge=2, le=1000)
    strategy: Literal["fedavg", "fedprox"] = "fedavg"
    proximal_mu: float = Field(default=0.1, ge=0.0, le=100.0)
    local_epochs: int = Field(default=1, ge=1, le=100)
    secure_aggregation: bool = True
    round_timeout_s: float = Field(default=120.0, gt=0.0, le=86400.0)
    features: int | None = Field(default=None, ge=1, le=100_000)
    image_shape: list[Annotated[int, Field(ge=1, le=4096)]] | None = Field(default=None, min_length=3, max_length=3)
    classes: list[Annotated[str, Field(min_length=1, max_length=256)]] = Field(min_length=2, max_length=10_000)
    params: TrainParams = Field(default_factory=TrainParams)
    timeout_s: int = Field(default=3600, ge=1, le=7 * 86400)

    @field_validator("features", "image_shape", mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        return _refuse_null(value)

    @model_validator(mode="after")
    def _consistent(self) -> FederatedRequest:
        if (self.features is None) == (self.image_shape is None):
            raise ValueError("give either features (tabular) or image_shape [channels, height, width]")
        if self.image_shape is not None and not all(1 <= v <= 4096 for v in self.image_shape):
            raise ValueError("image_shape values are 1-4096")
        if self.model == "cnn" and self.image_shape is None:
            raise ValueError("cnn trains on images: give image_shape")
        if self.params.scaling == "minmax":
            raise ValueError("federated jobs scale with standard or none (the federation's mean and variance)")
        if len(set(self.classes)) != len(self.classes):
            raise ValueError("classes must be distinct")
        return self


class JoinRequest(BaseModel):
    """``stratus federated join``: the client's name and what its data looks like (checked before it trains)."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("features", "image_shape", mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        return _refuse_null(value)

    client: str = Field(pattern=CLIENT_PATTERN, max_length=64)
    features: int | None = Field(default=None, ge=1, le=100_000)
    image_shape: list[Annotated[int, Field(ge=1, le=4096)]] | None = Field(default=None, min_length=3, max_length=3)
    classes: list[Annotated[str, Field(min_length=1, max_length=256)]] = Field(min_length=1, max_length=10_000)


def _exactly_one_shape() -> dict[str, Any]:
    return {
        "oneOf": [
            {"required": ["features"], "not": {"required": ["image_shape"]}},
            {"required": ["image_shape"], "not": {"required": ["features"]}},
        ]
    }


#: JSON Schema for what the request models' validators check across fields (the routes' openapi_extra).
CREATE_RULES: dict[str, Any] = {
    "allOf": [
        _exactly_one_shape(),
        {"if": {"properties": {"model": {"const": "cnn"}}}, "then": {"required": ["image_shape"]}},
    ]
}
JOIN_RULES: dict[str, Any] = _exactly_one_shape()


def _integral(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: _integral(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_integral(v) for v in value]
    return value


def _parse(model: type[BaseModel], raw: Any) -> Any:
    try:
        # Strict: JSON's types as the published schema states them (no "1" for 1, no false for 0.0); a number with
        # no fraction is an integer in JSON Schema, so 3.0 counts as 3.
        return model.model_validate(_integral(raw), strict=True)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidInput(f"{where + ': ' if where else ''}{first['msg']}") from None


def key_name(job_id: str) -> str:
    return f"federated {job_id}"


class FederatedJobs:
    """The ``federated`` job kind, its keys and joins."""

    module = "stratus.federated.worker"

    def __init__(
        self, registry: RegistryService, jobs: JobService, keys: KeyService, secret: bytes, host: str = "127.0.0.1"
    ) -> None:
        self.registry = registry
        self.jobs = jobs
        self.keys = keys
        self._secret = secret
        #: Where job children bind their relay: loopback unless the operator says otherwise (STRATUS_FEDERATED_HOST).
        self.host = host
        jobs.kinds[KIND] = self

    def job_secret(self, job_id: str) -> bytes:
        return hmac.new(self._secret, job_id.encode(), hashlib.sha256).digest()

    # -- create -----------------------------------------------------------------------------------

    def submit(self, raw: Any) -> dict[str, Any]:
        request: FederatedRequest = _parse(FederatedRequest, raw)
        name = request.name or f"federated-{request.model}".replace("_", "-")
        check_name(name)
        spec = request.model_dump(exclude={"name", "timeout_s"})
        return self.jobs.create(KIND, spec, name, retries=0, timeout_s=request.timeout_s)

    def _job(self, job_id: str) -> dict[str, Any]:
        job = self.jobs.get(job_id)  # NotFound for another project's job
        if job["kind"] != KIND:
            raise NotFound(f"job {job_id!r} is not a federated job")
        return job

    def create_key(self, job_id: str, name: str = "") -> dict[str, Any]:
        """A key of the ``federated`` role bound to this job; its plaintext is shown this once."""
        self._job(job_id)
        key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        project = tenancy.current_project()
        with self.registry.db.write() as s:
            project_id = s.scalar(select(Project.id).where(Project.name == project))
            if project_id is None:
                raise NotFound(f"no project {project!r}")
            s.add(
                ApiKey(
                    id=key_id,
                    project_id=project_id,
                    name=key_name(job_id),
                    secret_hash=self.keys._hash(secret),
                    scopes=[FEDERATED],
                    created_by=tenancy.current().key_id or None,
                )
            )
        return {"id": key_id, "key": f"{PREFIX}{key_id}_{secret}", "job": job_id, "scopes": [FEDERATED], "name": name}

    # -- join -------------------------------------------------------------------------------------

    def join(self, job_id: str, raw: Any) -> dict[str, Any]:
        job = self._job(job_id)
        with self.registry.db.read() as s:
            bound = s.scalar(select(ApiKey.name).where(ApiKey.id == tenancy.current().key_id))
        if bound != key_name(job_id):
            raise Forbidden("this key is not bound to this federated job")
        request: JoinRequest = _parse(JoinRequest, raw)
        if not _CLIENT_RE.fullmatch(request.client):
            raise InvalidInput(
                "a client name has 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
            )
        spec = job["spec"]
        self._check_shape(spec, request)
        if job["state"] in ("succeeded", "failed", "cancelled"):
            raise Conflict(f"federated job {job_id} has ended ({job['state']})")
        events = self.jobs.events(job_id)
        address = next((e["data"]["address"] for e in reversed(events) if e["kind"] == "listening"), None)
        if job["state"] != "running" or address is None:  # 503: the same request succeeds in a moment
            raise NotReady(f"federated job {job_id} has not started its server yet; join again in a moment")
        if any(e["kind"] == "join" and e["data"].get("client") == request.client for e in events):
            raise Conflict(f"client {request.client!r} has joined this job already")
        self.jobs._record(job_id, {"event": "join", "client": request.client})
        token = hmac.new(self.job_secret(job_id), f"{job_id}\n{request.client}".encode(), hashlib.sha256).hexdigest()
        return {
            "job": job_id,
            "client": request.client,
            "address": address,
            "token": token,
            "spec": {
                k: spec[k]
                for k in ("model", "features", "image_shape", "classes", "params", "secure_aggregation", "rounds")
            },
        }

    @staticmethod
    def _check_shape(spec: dict[str, Any], request: JoinRequest) -> None:
        if spec.get("image_shape"):
            if request.image_shape != spec["image_shape"]:
                raise InvalidInput(
                    f"the job trains on images of shape {spec['image_shape']}; this client has "
                    f"{request.image_shape or f'{request.features} tabular features'}"
                )
        elif request.features != spec["features"]:
            raise InvalidInput(f"the job takes {spec['features']} features; this client has {request.features}")
        unknown = sorted(set(request.classes) - set(spec["classes"]))
        if unknown:
            raise InvalidInput(f"classes {unknown[:5]} are not among the job's classes")

    # -- the job kind -----------------------------------------------------------------------------

    def inputs(self, spec: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
        job_id = spec["job_id"]
        plain = {k: v for k, v in spec.items() if k not in ("key_id", "model_name", "job_id")}
        return {"spec": plain, "secret": self.job_secret(job_id).hex(), "job_id": job_id, "host": self.host}, b""

    def register(self, job_id: str, spec: dict[str, Any], job_dir: Path) -> tuple[dict[str, Any], int | None]:
        result = json.loads((job_dir / "result.json").read_text())
        federation = json.loads((job_dir / "federation.json").read_text())
        lineage = {
            "clients": federation["clients"],
            "dropped": federation["dropped"],
            "rounds": len(federation["rounds"]),
            "strategy": federation["strategy"],
            "secure_aggregation": federation["secure_aggregation"],
        }
        version = self.registry.register_onnx(
            spec["model_name"],
            (job_dir / "model.onnx").read_bytes(),
            files={"federation.json": (job_dir / "federation.json").read_bytes()},
            metrics=result["metrics"],
            params={
                **spec["params"],
                "trainer": spec["model"],
                "job_id": job_id,
                "federation": lineage,
                "stratus_version": __version__,
            },
            dataset=None,
            source=result["source"],
            task="classification",
            description=f"federated by job {job_id} ({len(lineage['clients'])} clients, {lineage['rounds']} rounds)",
        )
        return result["metrics"], version.version


__all__ = ["KIND", "FederatedJobs", "FederatedRequest", "JoinRequest"]
