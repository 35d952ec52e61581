"""The benchmark workloads: request bodies for the load generator and in-process inputs for the ceiling."""

from __future__ import annotations

import json
import random

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
