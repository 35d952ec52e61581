"""Endpoint calls of the Python client: create, update, roll back, delete, watch rollouts, export."""

from __future__ import annotations

import io
import tarfile
import time
from pathlib import Path
from typing import Any

from stratus.errors import InvalidInput, NotReady


def _body(targets: list[dict[str, Any]] | None, options: dict[str, Any]) -> dict[str, Any]:
    body = {key: value for key, value in options.items() if value is not None}
    if targets is not None:
        body["targets"] = targets
    return body


def extract_tar_gz(data: bytes, out: Path) -> list[Path]:
    """Unpack an export into ``out``: regular files only, no absolute paths, nothing outside ``out``."""
    out = out.resolve()
    written = []
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        for member in archive.getmembers():
            target = (out / member.name).resolve()
            if not member.isfile() or not target.is_relative_to(out):
                raise InvalidInput(f"refusing to extract {member.name!r} from the export")
            target.parent.mkdir(parents=True, exist_ok=True)
            source = archive.extractfile(member)
            assert source is not None
            target.write_bytes(source.read())
            written.append(target)
    return written


class EndpointCalls:
    """Mixed into ``Client``; every call goes through its ``_json`` / ``request``."""

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:  # provided by Client
        raise NotImplementedError

    def request(self, method: str, path: str, **kwargs: Any) -> Any:  # provided by Client
        raise NotImplementedError

    def create_endpoint(self, name: str, targets: list[dict[str, Any]], **options: Any) -> dict[str, Any]:
        """``targets``: ``[{"model": "iris", "version": "1", "weight": 90}, ...]``. Options: shadows,
        sticky_header, scaling, rollout ("rolling" or "canary"), canary, description."""
        result: dict[str, Any] = self._json("POST", "/api/v1/endpoints", json={"name": name, **_body(targets, options)})
        return result

    def update_endpoint(self, name: str, targets: list[dict[str, Any]], **options: Any) -> dict[str, Any]:
        """Replace the endpoint's spec: a new revision, rolled out as its ``rollout`` says."""
        result: dict[str, Any] = self._json("PUT", f"/api/v1/endpoints/{name}", json=_body(targets, options))
        return result

    def get_endpoint(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self._json("GET", f"/api/v1/endpoints/{name}")
        return result

    def list_endpoints(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._json("GET", "/api/v1/endpoints")["endpoints"]
        return result

    def delete_endpoint(self, name: str) -> None:
        self.request("DELETE", f"/api/v1/endpoints/{name}")

    def rollback_endpoint(self, name: str, revision: int | None = None) -> dict[str, Any]:
        """Deploy the previous live revision again (or ``revision``), as a new revision."""
        body = {"revision": revision} if revision is not None else {}
        result: dict[str, Any] = self._json("POST", f"/api/v1/endpoints/{name}/rollback", json=body)
        return result

    def endpoint_revisions(self, name: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._json("GET", f"/api/v1/endpoints/{name}/revisions")["revisions"]
        return result

    def endpoint_events(self, name: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._json("GET", f"/api/v1/endpoints/{name}/events")["events"]
        return result

    def wait_endpoint(self, name: str, revision: int | None = None, timeout_s: float = 180.0) -> dict[str, Any]:
        """Wait until ``revision`` (default: the latest) is live, or raise when it failed or rolled back."""
        deadline = time.monotonic() + timeout_s
        while True:
            endpoint = self.get_endpoint(name)
            wanted = revision or endpoint["latest_revision"]
            if endpoint["revision"] == wanted and endpoint["state"] == "ready":
                return endpoint
            status = next((r["status"] for r in self.endpoint_revisions(name) if r["revision"] == wanted), "")
            if status in ("failed", "rolled_back"):
                raise NotReady(f"revision {wanted} of endpoint {name!r} {status}: {endpoint['message']}")
            if time.monotonic() > deadline:
                raise NotReady(f"revision {wanted} of endpoint {name!r} is not live after {timeout_s:.0f} s")
            time.sleep(0.2)

    def export_docker(self, name: str, out: Path) -> list[Path]:
        """Write the endpoint's Docker build context into ``out``."""
        response = self.request("GET", f"/api/v1/endpoints/{name}/export/docker")
        return extract_tar_gz(response.content, out)

    def export_k8s(self, name: str, image: str | None = None, namespace: str = "default") -> str:
        params = {"namespace": namespace, **({"image": image} if image else {})}
        text: str = self.request("GET", f"/api/v1/endpoints/{name}/export/k8s", params=params).text
        return text
