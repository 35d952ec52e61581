"""Schemathesis fuzzing of the whole OpenAPI surface: at least 2,000 generated requests, with the admin key and
with no key. No request may get a 5xx, and without a key every route but health must answer 401."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import as_admin, make_settings
from onnx_factory import affine_model
from stratus.api import create_app

EXAMPLES_PER_OPERATION = 60
MIN_CASES = 2000


def test_fuzzed_requests_never_5xx_and_never_bypass_auth(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # One job slot and a short timeout: generated job requests must not pile work onto the machine.
    app = create_app(make_settings(tmp_path / "home", job_slots=1))
    with TestClient(app, raise_server_exceptions=False) as client:
        as_admin(client)
        admin = dict(client.headers)
        client.post("/api/v1/models/affine/versions", files={"file": ("a.onnx", affine_model())})
        schema = schemathesis.openapi.from_dict(client.get("/openapi.json").json())
        cases = {"with key": 0, "without key": 0}
        failures: list[str] = []
        started = time.monotonic()
        for operation in schema.get_all_operations():
            op = operation.ok()
            public = op.path.startswith("/v2/health/")

            @settings(
                max_examples=EXAMPLES_PER_OPERATION,
                deadline=None,
                database=None,
                derandomize=True,
                suppress_health_check=list(HealthCheck),
            )
            @given(case=op.as_strategy(), with_key=st.booleans())
            def run(case: schemathesis.Case, with_key: bool) -> None:
                kwargs = case.as_transport_kwargs(base_url="http://testserver")
                headers = {k: v for k, v in (kwargs.pop("headers", None) or {}).items() if k.lower() != "authorization"}
                headers.update(admin if with_key else {"Authorization": ""})
                method, url = kwargs.pop("method"), kwargs.pop("url")
                response = client.request(method, url, headers=headers, **_body_only(kwargs))
                cases["with key" if with_key else "without key"] += 1
                if response.status_code >= 500:
                    failures.append(f"{method} {url} -> {response.status_code}: {response.text[:200]}")
                if not with_key and not public and response.status_code not in (401, 413):
                    failures.append(f"no key: {method} {url} -> {response.status_code}")

            run()
        total = sum(cases.values())
        with capsys.disabled():
            print(f"\nschemathesis: {total} generated requests ({cases}) in {time.monotonic() - started:.0f} s")
    assert failures == []
    assert total >= MIN_CASES
    assert cases["without key"] >= 500 and cases["with key"] >= 500


def _body_only(kwargs: dict[str, object]) -> dict[str, object]:
    """Keep what TestClient.request understands from schemathesis' transport arguments (raw bytes go as
    ``content``, as the client wants them)."""
    kept = {k: v for k, v in kwargs.items() if k in {"params", "json", "content", "data", "files"}}
    if isinstance(kept.get("data"), bytes | str):
        kept["content"] = kept.pop("data")
    return kept
