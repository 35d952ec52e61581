"""The Python client. It raises the same error kinds as the server's core, carrying the server's
message, so code reads the same in-process and over HTTP."""

from __future__ import annotations

import io
import ssl
import sys
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import orjson

from stratus import errors
from stratus.sdk.admin import AdminCalls
from stratus.sdk.alerts import AlertCalls
from stratus.sdk.automl import AutoMLCalls
from stratus.sdk.devices import DeviceCalls
from stratus.sdk.drift import DriftCalls
from stratus.sdk.endpoints import EndpointCalls
from stratus.sdk.errors import error_for_response
from stratus.sdk.explain import ExplainCalls
from stratus.sdk.federated import FederatedCalls
from stratus.sdk.jobs import Job
from stratus.sdk.monitoring import MonitoringCalls

# numpy and stratus.protocol (numpy again) are imported where tensors are handled: the CLI runs every
# command through this client, and `stratus models list` should not pay for numpy at start.
if TYPE_CHECKING:
    from stratus.types import Tensor


#: From how many input elements ``Client.predict`` sends binary tensors unless told (docs/benchmarks.md).
BINARY_FROM_ELEMENTS = 64


def discover_api_key() -> str | None:
    """The key to send when none is given: STRATUS_API_KEY, else the admin key file that a server on this
    machine wrote into its home (STRATUS_HOME, default ~/.stratus), when this user can read it."""
    from stratus.settings import Settings

    settings = Settings()
    if settings.api_key is not None:
        return settings.api_key.get_secret_value()
    try:
        return settings.resolved_admin_key_file.read_text().strip() or None
    except OSError:
        return None


class Client(
    AdminCalls,
    EndpointCalls,
    DriftCalls,
    MonitoringCalls,
    AlertCalls,
    DeviceCalls,
    ExplainCalls,
    FederatedCalls,
    AutoMLCalls,
):
    """``Client("http://127.0.0.1:8080")``. The URL defaults to STRATUS_URL; the API key to STRATUS_API_KEY or
    the local server's admin key file (see ``discover_api_key``)."""

    def __init__(
        self,
        url: str | None = None,
        *,
        api_key: str | None = None,
        timeout: float = 120.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if url is None:
            from stratus.settings import Settings

            url = Settings().url
        if api_key is None:
            api_key = discover_api_key()
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.url = url.rstrip("/")
        # A plain-http server needs no CA bundle, and loading certifi's costs every CLI call 0.2 s. The
        # context given instead trusts no certificate at all, so anything that did try TLS would fail closed.
        verify: ssl.SSLContext | bool = True
        if self.url.startswith("http://"):
            verify = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        self._http = httpx.Client(
            base_url=self.url, timeout=timeout, headers=headers, transport=transport, verify=verify
        )
        self._inputs: dict[tuple[str, str | None], list[dict[str, Any]]] = {}

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        response = self._http.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise error_for_response(response)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.request(method, path, **kwargs).json()

    def stream(self, method: str, path: str, **kwargs: Any) -> AbstractContextManager[httpx.Response]:
        """A streamed response (server-sent events), its status not yet checked: ``error_for_response``."""
        return self._http.stream(method, path, **kwargs)

    # -- server ---------------------------------------------------------------------------------

    def is_ready(self) -> bool:
        try:
            return self._http.get("/v2/health/ready").status_code == 200
        except httpx.TransportError:
            return False

    # -- registry -------------------------------------------------------------------------------

    def list_models(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._json("GET", "/api/v1/models")["models"]
        return result

    def get_model(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self._json("GET", f"/api/v1/models/{name}")
        return result

    def create_model(
        self, name: str, *, description: str = "", task: str = "other", tags: dict[str, str] | None = None
    ) -> dict[str, Any]:
        body = {"name": name, "description": description, "task": task, "tags": tags or {}}
        result: dict[str, Any] = self._json("POST", "/api/v1/models", json=body)
        return result

    def delete_model(self, name: str) -> None:
        self.request("DELETE", f"/api/v1/models/{name}")

    def list_versions(self, name: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._json("GET", f"/api/v1/models/{name}/versions")["versions"]
        return result

    def get_version(self, name: str, version: int | str) -> dict[str, Any]:
        result: dict[str, Any] = self._json("GET", f"/api/v1/models/{name}/versions/{version}")
        return result

    def delete_version(self, name: str, version: int) -> None:
        self.request("DELETE", f"/api/v1/models/{name}/versions/{version}")

    def archive_version(self, name: str, version: int) -> dict[str, Any]:
        result: dict[str, Any] = self._json(
            "PATCH", f"/api/v1/models/{name}/versions/{version}", json={"status": "archived"}
        )
        return result

    def set_alias(self, name: str, alias: str, version: int) -> dict[str, Any]:
        result: dict[str, Any] = self._json("PUT", f"/api/v1/models/{name}/aliases/{alias}", json={"version": version})
        return result

    def delete_alias(self, name: str, alias: str) -> None:
        self.request("DELETE", f"/api/v1/models/{name}/aliases/{alias}")

    def register_model(
        self,
        name: str,
        model: str | Path | bytes | Any,
        *,
        sample_input: Any = None,
        version: int | None = None,
        description: str = "",
        task: str | None = None,
        metrics: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        dataset: str | None = None,
    ) -> dict[str, Any]:
        """Register an ONNX file (path or bytes), a scikit-learn estimator, or a torch ``nn.Module``.

        Estimators and modules are converted to ONNX here, and the ONNX outputs are checked against
        the source model's on ``sample_input`` before anything is sent. Pickles are never sent.
        """
        source = None
        if isinstance(model, str | Path):
            data = Path(model).read_bytes()
            filename = Path(model).name
        elif isinstance(model, bytes):
            data, filename = model, "model.onnx"
        else:
            converted = _convert(model, sample_input)
            data, filename, source = converted.onnx_bytes, "model.onnx", converted.source
            if task is None:
                task = _guess_task(model)
        form: dict[str, Any] = {"description": description, "task": task or "other"}
        for key, value in (("version", version), ("dataset", dataset), ("source", source)):
            if value is not None:
                form[key] = str(value)
        if metrics:
            form["metrics"] = orjson.dumps(metrics).decode()
        if params:
            form["params"] = orjson.dumps(params).decode()
        files = {"file": (filename, io.BytesIO(data), "application/octet-stream")}
        result: dict[str, Any] = self._json("POST", f"/api/v1/models/{name}/versions", data=form, files=files)
        return result

    # -- datasets and training ------------------------------------------------------------------

    def upload_dataset(
        self,
        name: str,
        source: str | Path | bytes | None = None,
        *,
        builtin: str | None = None,
        format: str | None = None,
        target: str | None = None,
        missing: str = "error",
        task: str | None = None,
    ) -> dict[str, Any]:
        """Upload a CSV, NPZ or image-folder ZIP, or register a scikit-learn built-in by name."""
        if builtin is not None:
            result: dict[str, Any] = self._json(
                "POST", "/api/v1/datasets/builtin", json={"name": name, "builtin": builtin}
            )
            return result
        if source is None:
            raise errors.InvalidInput("give a file (path or bytes) or builtin=NAME")
        data = source if isinstance(source, bytes) else Path(source).read_bytes()
        filename = "dataset" if isinstance(source, bytes) else Path(source).name
        form = {
            k: v
            for k, v in {"name": name, "format": format, "target": target, "missing": missing, "task": task}.items()
            if v is not None
        }
        result = self._json("POST", "/api/v1/datasets", data=form, files={"file": (filename, io.BytesIO(data))})
        return result

    def list_datasets(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._json("GET", "/api/v1/datasets")["datasets"]
        return result

    def get_dataset(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self._json("GET", f"/api/v1/datasets/{name}")
        return result

    def delete_dataset(self, name: str) -> None:
        self.request("DELETE", f"/api/v1/datasets/{name}")

    def train(
        self,
        dataset: str,
        model: str,
        *,
        name: str | None = None,
        params: dict[str, Any] | None = None,
        wait: bool = True,
        timeout_s: int = 3600,
        retries: int = 0,
        workers: int | None = None,
        cpus_per_worker: float = 1.0,
        memory_mb_per_worker: int = 0,
        dp_epsilon: float | None = None,
        dp_delta: float | None = None,
    ) -> Job:
        """Submit a training job; with wait=True, return once it has ended (raising if it failed). ``workers``
        trains a torch trainer data-parallel on the server's Ray cluster (each worker asking for
        ``cpus_per_worker`` CPUs and ``memory_mb_per_worker`` MB); see docs/training.md. ``dp_epsilon`` (and
        ``dp_delta``, default 1e-5) trains with DP-SGD within that budget; the version's metrics then hold the
        epsilon spent (``dp_epsilon``), see docs/privacy.md."""
        body: dict[str, Any] = {
            "dataset": dataset,
            "model": model,
            "params": params or {},
            "timeout_s": timeout_s,
            "retries": retries,
        }
        for key, value in (("dp_epsilon", dp_epsilon), ("dp_delta", dp_delta)):
            if value is not None:
                body["params"] = {**body["params"], key: value}
        if workers is not None:
            body.update(workers=workers, cpus_per_worker=cpus_per_worker, memory_mb_per_worker=memory_mb_per_worker)
        if name is not None:
            body["name"] = name
        job = Job(self, self._json("POST", "/api/v1/jobs", json=body))
        return job.wait(timeout_s=timeout_s + 60) if wait else job

    def compress(
        self,
        model: str,
        version: int | str = "latest",
        *,
        methods: list[str],
        params: dict[str, dict[str, Any]] | None = None,
        accuracy_budget: float = 0.01,
        promote_alias: str | None = None,
        wait: bool = True,
        timeout_s: int = 3600,
        timing_seconds: float = 1.0,
    ) -> Job:
        """Compress a version with each method as one job; ``job.metrics`` is then the comparison report, and
        ``job.version`` the recommended variant (fastest within the budget), if any. ``timing_seconds`` is
        the length of each timing phase (3 alternating rounds per model)."""
        body: dict[str, Any] = {
            "methods": methods,
            "params": params or {},
            "accuracy_budget": accuracy_budget,
            "promote_alias": promote_alias,
            "timeout_s": timeout_s,
            "timing_seconds": timing_seconds,
        }
        path = f"/api/v1/models/{model}/versions/{version}/compress"
        job = Job(self, self._json("POST", path, json=body))
        return job.wait(timeout_s=timeout_s + 60) if wait else job

    def personalize(
        self,
        dataset: str,
        base: str = "minilm",
        *,
        name: str | None = None,
        params: dict[str, Any] | None = None,
        wait: bool = True,
        timeout_s: int = 3600,
    ) -> Job:
        """Fine-tune the embedding model ``base`` on this project's pairs (CSV anchor,positive) or labelled texts
        (text,label) as a job; the model it registers (default name BASE-DATASET) belongs to this project only.
        ``job.metrics`` is then the report: base and personalized held-out figures (docs/personalize.md)."""
        body: dict[str, Any] = {"base": base, "dataset": dataset, "params": params or {}, "timeout_s": timeout_s}
        if name is not None:
            body["name"] = name
        job = Job(self, self._json("POST", "/api/v1/personalize", json=body))
        return job.wait(timeout_s=timeout_s + 60) if wait else job

    def get_job(self, job_id: str) -> Job:
        return Job(self, self._json("GET", f"/api/v1/jobs/{job_id}"))

    def list_jobs(self, state: str | None = None) -> list[Job]:
        params = {"state": state} if state else None
        return [Job(self, j) for j in self._json("GET", "/api/v1/jobs", params=params)["jobs"]]

    # -- inference ------------------------------------------------------------------------------

    def metadata(self, name: str, version: int | str | None = None) -> dict[str, Any]:
        path = f"/v2/models/{name}" + (f"/versions/{version}" if version is not None else "")
        result: dict[str, Any] = self._json("GET", path)
        return result

    def infer(self, name: str, body: dict[str, Any], version: int | str | None = None) -> dict[str, Any]:
        """Send a raw Open Inference Protocol (V2) JSON request body; return the response body."""
        path = f"/v2/models/{name}" + (f"/versions/{version}" if version is not None else "") + "/infer"
        result: dict[str, Any] = self._json("POST", path, json=body)
        return result

    def predict_v1(self, name: str, body: dict[str, Any], version: int | str | None = None) -> dict[str, Any]:
        path = f"/v1/models/{name}" + (f"/versions/{version}" if version is not None else "") + ":predict"
        result: dict[str, Any] = self._json("POST", path, json=body)
        return result

    def _input_specs(self, name: str, version: int | str | None) -> list[dict[str, Any]]:
        key = (name, None if version is None else str(version))
        if key not in self._inputs:
            self._inputs[key] = self.metadata(name, version)["inputs"]
        return self._inputs[key]

    def predict(
        self,
        name: str,
        inputs: dict[str, Any] | Any,
        version: int | str | None = None,
        outputs: list[str] | None = None,
        *,
        binary: bool | None = None,
    ) -> dict[str, Tensor]:
        """Run the model on array-likes: a dict by input name, or one array for a one-input model.

        Values are converted to the datatypes the model declares, so plain lists and float64 arrays work.
        ``binary=True`` sends the tensors as raw bytes (Triton's binary tensor extension) and asks for the
        outputs the same way: no number formatting and parsing on either side, faster for batches and no
        faster for a row or two (docs/benchmarks.md). ``binary=False`` sends plain V2 JSON. The default
        chooses binary from ``BINARY_FROM_ELEMENTS`` input elements on. String outputs come back as
        ``bytes`` either way.
        """
        import numpy as np

        from stratus import protocol
        from stratus.types import numpy_dtype

        specs = {spec["name"]: spec for spec in self._input_specs(name, version)}
        if not isinstance(inputs, dict):
            if len(specs) != 1:
                raise errors.InvalidInput(f"model {name!r} has inputs {list(specs)}; pass a dict keyed by input name")
            inputs = {next(iter(specs)): inputs}
        tensors: dict[str, Tensor] = {}
        for key, value in inputs.items():
            array = np.asarray(value)
            spec = specs.get(key)
            if spec is not None and spec["datatype"] != "BYTES" and array.dtype.kind in "biuf":
                array = array.astype(numpy_dtype(spec["datatype"]), copy=False)
            tensors[key] = array
        if binary is None:
            binary = sum(array.size for array in tensors.values()) >= BINARY_FROM_ELEMENTS
        body, header_length = protocol.encode_infer_request(
            tensors, outputs=outputs, binary_inputs=binary, binary_outputs=binary
        )
        headers = {"Content-Type": protocol.JSON_CONTENT_TYPE}
        if header_length is not None:
            headers = {"Content-Type": protocol.BINARY_CONTENT_TYPE, protocol.HEADER_LENGTH_HEADER: str(header_length)}
        path = f"/v2/models/{name}" + (f"/versions/{version}" if version is not None else "") + "/infer"
        response = self.request("POST", path, content=body, headers=headers)
        length = protocol.parse_header_length(response.headers.get(protocol.HEADER_LENGTH_HEADER))
        decoded = protocol.decode_infer_response(response.content, length)
        # Binary outputs are read-only views of the response body; what predict returns is the caller's.
        return {key: a if a.flags.writeable else a.copy() for key, a in decoded.outputs.items()}


def _convert(model: Any, sample_input: Any) -> Any:
    import numpy as np

    from stratus import formats

    torch = sys.modules.get("torch")
    if torch is not None and isinstance(model, torch.nn.Module):
        if sample_input is None:
            raise errors.InvalidInput("registering a torch module needs sample_input (an example batch)")
        return formats.torch_to_onnx(model, sample_input)
    if type(model).__module__.startswith("sklearn") or hasattr(model, "predict"):
        return formats.sklearn_to_onnx(model, None if sample_input is None else np.asarray(sample_input))
    raise errors.InvalidInput(
        f"cannot register a {type(model).__name__}: pass an ONNX file path or bytes, a scikit-learn "
        "estimator or a torch nn.Module"
    )


def _guess_task(model: Any) -> str:
    if type(model).__module__.startswith("sklearn"):
        from sklearn.base import is_classifier, is_regressor

        if is_classifier(model):
            return "classification"
        if is_regressor(model):
            return "regression"
    return "other"
