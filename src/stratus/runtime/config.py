"""Per-version serving config (batching, instances), stored on the version in the registry."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from stratus.errors import InvalidInput
from stratus.runtime.batching import BatchPolicy
from stratus.types import Signature


class BatchingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool | None = Field(default=None, description="Default: on when every tensor's first dim is dynamic.")
    max_batch_size: int = Field(default=32, ge=1, le=4096)
    max_queue_delay_ms: float = Field(default=0.0, ge=0, le=1000)
    # Bounded like max_batch_size: the sizes are batch sizes, never more than a batch can hold.
    preferred_batch_sizes: list[Annotated[int, Field(ge=1, le=4096)]] = Field(default_factory=list, max_length=64)
    max_queue_size: int = Field(default=4096, ge=1, le=1_000_000)
    timeout_ms: float = Field(default=30_000, gt=0, le=3_600_000)


class ServingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    batching: BatchingConfig = Field(default_factory=BatchingConfig)
    instances: int = Field(default=1, ge=1, le=64, description="Batches of this version run in parallel.")
    separate_sessions: bool = Field(
        default=False,
        description="Give each instance its own ONNX Runtime session. By default instances share one session "
        "(ONNX Runtime runs concurrent calls safely), so extra instances cost no model memory.",
    )

    @classmethod
    def parse(cls, raw: dict[str, Any] | None) -> ServingConfig:
        try:
            # As JSON Schema reads JSON: 2.0 is the integer 2, but "2" is no number and "yes" no boolean.
            config = cls.model_validate(_whole_numbers_as_ints(raw or {}), strict=True)
            config.policy()
        except ValidationError as exc:
            detail = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
            raise InvalidInput(f"invalid serving config: {detail}") from None
        return config

    def batching_enabled(self, signature: Signature) -> bool:
        if self.batching.enabled is not None:
            return self.batching.enabled
        tensors = (*signature.inputs, *signature.outputs)
        return bool(tensors) and all(t.shape and t.shape[0] == -1 for t in tensors)

    def policy(self) -> BatchPolicy:
        b = self.batching
        return BatchPolicy(
            max_batch_size=b.max_batch_size,
            max_queue_delay_ms=b.max_queue_delay_ms,
            preferred_batch_sizes=tuple(b.preferred_batch_sizes),
            max_queue_size=b.max_queue_size,
            default_timeout_ms=b.timeout_ms,
        )


def _whole_numbers_as_ints(value: Any) -> Any:
    """JSON has one number type: a float with no fraction is an integer (what strict validation wants)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _whole_numbers_as_ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_whole_numbers_as_ints(v) for v in value]
    return value
