"""What an endpoint is, as a user asks for it: targets with traffic weights, shadows, sticky routing,
scaling and the rollout policy. Validated here; the service pins each target to a version number."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from stratus.errors import InvalidInput

#: Replica processes per target on this machine. Each holds its own copy of the model.
MAX_REPLICAS = 8
_HEADER = re.compile(r"[A-Za-z0-9-]{1,64}")


class TargetSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=64)
    version: str = Field(default="latest", min_length=1, max_length=64, description="number, alias or latest")
    weight: int = Field(default=100, ge=0, le=100)

    @field_validator("version", mode="before")
    @classmethod
    def _as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class ScalingSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min_replicas: int = Field(default=1, ge=0, le=MAX_REPLICAS, description="0 allows scale to zero")
    max_replicas: int = Field(default=1, ge=1, le=MAX_REPLICAS)
    target_in_flight: float = Field(default=4.0, gt=0, le=1000, description="in-flight requests per replica")
    scale_up_seconds: float = Field(default=2.0, ge=0.2, le=600, description="sustained load before adding one")
    cooldown_seconds: float = Field(default=30.0, ge=0.5, le=3600, description="quiet time before removing one")

    @model_validator(mode="after")
    def _ordered(self) -> ScalingSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError(f"min_replicas ({self.min_replicas}) is above max_replicas ({self.max_replicas})")
        return self


class CanarySpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    steps: list[Annotated[int, Field(ge=1, le=100)]] = Field(
        default_factory=lambda: [10, 50, 100], min_length=1, max_length=10
    )
    step_seconds: float = Field(default=30.0, ge=0.5, le=3600)
    max_error_rate: float = Field(default=0.05, ge=0, le=1)
    max_p99_ms: float | None = Field(default=None, gt=0)

    @field_validator("steps")
    @classmethod
    def _increasing(cls, steps: list[int]) -> list[int]:
        if any(not 1 <= s <= 100 for s in steps) or steps != sorted(set(steps)) or steps[-1] != 100:
            raise ValueError("steps are increasing percentages between 1 and 100 that end at 100")
        return steps


class EndpointSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    targets: list[TargetSpec] = Field(min_length=1, max_length=4)
    shadows: list[TargetSpec] = Field(default_factory=list, max_length=2)
    sticky_header: str | None = None
    scaling: ScalingSpec = Field(default_factory=ScalingSpec)
    rollout: Literal["rolling", "canary"] = "rolling"
    canary: CanarySpec = Field(default_factory=CanarySpec)
    description: str = Field(default="", max_length=500)

    @field_validator("sticky_header")
    @classmethod
    def _header(cls, value: str | None) -> str | None:
        if value is not None and not _HEADER.fullmatch(value):
            raise ValueError("sticky_header is an HTTP header name (letters, digits, '-')")
        return value.lower() if value else None

    @model_validator(mode="after")
    def _weights(self) -> EndpointSpec:
        if sum(t.weight for t in self.targets) <= 0:
            raise ValueError("the targets' weights add up to 0: at least one target needs traffic")
        seen = [(t.model, t.version) for t in self.targets]
        if len(set(seen)) != len(seen):
            raise ValueError("the same model version is listed twice in targets")
        return self

    @classmethod
    def parse(cls, raw: Any) -> EndpointSpec:
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            raise InvalidInput(f"invalid endpoint: {describe(exc)}") from None


def describe(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg'].removeprefix('Value error, ')}"
        for e in exc.errors()
    )
