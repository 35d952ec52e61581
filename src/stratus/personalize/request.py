"""A personalization request and its parameters, each with a validated range (no service imports: the job's
child reads it too)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from stratus.errors import InvalidInput
from stratus.registry.names import NAME_PATTERN

#: The embedding models a project can personalize, by the name the bundled sample is served under.
BASES = ("minilm",)
REPORT_FILE = "personalize-report.json"
PIPELINE_FILES = ("encoder.onnx", "tokenizer.json")


class PersonalizeParams(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: Literal["pairs", "labels"] | None = Field(
        default=None, description="default: pairs when the CSV has anchor,positive, else labels (text,label)"
    )
    steps: int = Field(default=200, ge=1, le=100_000, description="optimizer steps")
    batch_size: int = Field(default=32, ge=2, le=512, description="pairs per step (the in-batch negatives)")
    lr: float = Field(default=3e-5, gt=0.0, le=1e-2, description="AdamW learning rate, linear decay")
    max_length: int = Field(default=128, ge=8, le=256, description="tokens per text while training")
    scale: float = Field(default=20.0, ge=1.0, le=100.0, description="cosine similarity scale in the loss")
    held_out: float = Field(default=0.2, gt=0.0, lt=0.9, description="share of the rows kept for the report")
    seed: int = Field(default=0, ge=0, le=2**31 - 1)


class PersonalizeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base: Literal["minilm"] = "minilm"
    dataset: str = Field(pattern=NAME_PATTERN, max_length=64)
    name: str | None = Field(
        default=None, pattern=NAME_PATTERN, max_length=64, description="the new model's name; default: BASE-DATASET"
    )
    params: PersonalizeParams = Field(default_factory=PersonalizeParams)
    timeout_s: int = Field(default=3600, ge=1, le=7 * 24 * 3600)


def parse_request(raw: Any) -> PersonalizeRequest:
    try:
        return PersonalizeRequest.model_validate(raw)
    except ValidationError as exc:
        detail = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise InvalidInput(f"invalid personalization request: {detail}") from None


__all__ = ["BASES", "PIPELINE_FILES", "REPORT_FILE", "PersonalizeParams", "PersonalizeRequest", "parse_request"]
