"""The benchmark workloads: request bodies for the load generator and in-process inputs for the ceiling."""

from __future__ import annotations

import json
import random
from typing import Any

IRIS_ROW = [5.1, 3.5, 1.4, 0.2]

_WORDS = [
    "model",
    "serving",
    "platform",
    "request",
    "latency",
    "throughput",
    "batch",
    "tensor",
    "runtime",
    "cluster",
    "registry",
    "version",
    "alias",
    "deployment",
    "canary",
    "replica",
    "metric",
    "token",
    "sentence",
    "embedding",
    "vector",
    "cosine",
    "quantize",
    "prune",
    "distill",
    "train",
    "dataset",
    "evaluation",
    "accuracy",
    "network",
    "protocol",
    "client",
    "server",
    "python",
    "fast",
    "secure",
    "tenant",
    "usage",
    "billing",
    "the",
    "a",
    "of",
    "and",
    "to",
    "in",
    "is",
    "for",
    "on",
    "with",
    "that",
    "this",
    "it",
    "as",
    "at",
    "by",
    "from",
]


def sentences(count: int = 64, words: int = 18, seed: int = 0) -> list[str]:
    """Deterministic English-like sentences of about ``words`` words (MiniLM: 22-30 tokens each)."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(_WORDS) for _ in range(words)).capitalize() + "." for _ in range(count)]


def iris_grpc_request() -> Any:
    """The same row as a gRPC ModelInferRequest with raw contents, as tritonclient.grpc sends it."""
    import numpy as np

    from stratus.grpc import inference_pb2 as pb

    request = pb.ModelInferRequest(model_name="iris")
    request.inputs.add(name="input", datatype="FP32", shape=[1, 4])
    request.raw_input_contents.append(np.array([IRIS_ROW], dtype="<f4").tobytes())
    return request


def minilm_grpc_request(text: str) -> Any:
    """One sentence as a BYTES tensor in raw contents (a 4-byte little-endian length, then UTF-8)."""
    import struct

    from stratus.grpc import inference_pb2 as pb

    request = pb.ModelInferRequest(model_name="minilm", outputs=[{"name": "embedding"}])
    request.inputs.add(name="text", datatype="BYTES", shape=[1])
    encoded = text.encode()
    request.raw_input_contents.append(struct.pack("<I", len(encoded)) + encoded)
    return request


def iris_v2_body() -> str:
    return json.dumps(
        {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": IRIS_ROW}]}, separators=(",", ":")
    )


def minilm_openai_bodies(texts: list[str]) -> list[str]:
    return [json.dumps({"model": "minilm", "input": t}, separators=(",", ":")) for t in texts]


def wrk_script(bodies: list[str], api_key: str) -> str:
    """A wrk Lua script that POSTs JSON bodies in rotation with an API key, as a real client would."""
    quoted = ",\n".join("[==[" + body + "]==]" for body in bodies)
    return f"""
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {api_key}"
local bodies = {{
{quoted}
}}
local i = 0
request = function()
  i = i % #bodies + 1
  return wrk.format(nil, nil, nil, bodies[i])
end
"""
