"""Explanations in the Python client: ``Client.explain`` returns the attributions as numpy arrays."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # numpy (and stratus.types) load when an explanation is asked for, not with the client
    from stratus.types import Array


@dataclass
class Explanation:
    """Attributions of each row: [rows, features] (tabular) or the images' shape (occlusion), or for text one
    array per text, a value per word of ``tokens``. ``base_values`` is E[f(X)] over the background (tabular),
    so an additive method's rows sum to ``scores - base_values``."""

    attributions: Array | list[Array]
    scores: Array
    targets: Array
    base_values: Array | None
    feature_names: list[str] = field(default_factory=list)
    method: str = ""
    additive: bool = False
    output_space: str = ""
    tokens: list[list[str]] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)


def _query(**params: Any) -> dict[str, Any]:
    return {k: v for k, v in params.items() if v is not None}


class ExplainCalls:
    """Mixed into ``Client``; every call goes through its ``_json``."""

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:  # provided by Client
        raise NotImplementedError

    def explain(
        self,
        name: str,
        rows: Any,
        *,
        version: int | str | None = None,
        method: str | None = None,
        output: str | None = None,
        target: int | None = None,
        background: int | None = None,
        max_evals: int | None = None,
        patch: int | None = None,
    ) -> Explanation:
        """Explain the predictions of ``rows`` (an array: [n, features], images [n, C, H, W], or a list of texts),
        sent as a V1 ``:explain`` request; options as in docs/explain.md."""
        import numpy as np

        texts = isinstance(rows, list | tuple) and bool(rows) and isinstance(rows[0], str)
        instances = list(rows) if texts else np.asarray(rows).tolist()
        where = f"/versions/{version}" if version is not None else ""
        params = _query(
            method=method, output=output, target=target, background=background, max_evals=max_evals, patch=patch
        )
        result: dict[str, Any] = self._json(
            "POST", f"/v1/models/{name}{where}:explain", json={"instances": instances}, params=params
        )
        base = result.get("base_values")
        values = result["attributions"]
        text = result.get("kind") == "text"  # one array per text, of its own length
        return Explanation(
            attributions=[np.asarray(v, dtype=np.float64) for v in values] if text else np.asarray(values, np.float64),
            scores=np.asarray(result["scores"], dtype=np.float64),
            targets=np.asarray(result["targets"]),
            base_values=None if base is None else np.asarray(base, dtype=np.float64),
            feature_names=list(result.get("feature_names", [])),
            method=str(result["method"]),
            additive=bool(result["additive"]),
            output_space=str(result["output_space"]),
            tokens=list(result.get("tokens", [])),
            raw=result,
        )
