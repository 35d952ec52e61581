"""The console's own pages in Chromium, one signed-in walk: the overview, usage, the audit log, keys (a key created
and its secret shown once), projects, then sign-out and a `read` key's view; and a version page's explain panel.
Every page is checked for browser errors, failed requests and axe-core's serious or critical violations, and saved
as a screenshot."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from playwright.sync_api import Page, expect
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from conftest import LiveServer, scaled
from ui.conftest import check_page, page_weight


def test_admin_walks_the_console_pages(
    signed_in: Callable[..., Page], console_server: LiveServer, console_keys: Callable[..., str]
) -> None:
    page = signed_in("admin")
    page.on("dialog", lambda dialog: dialog.accept())
    assert page.locator("h1").inner_text() == "Overview"
    assert page.get_by_role("link", name="iris", exact=True).count() == 1
    assert page.locator(".chart canvas").count() == 1  # uPlot drew the traffic chart from the page's data block
    check_page(page, "overview")  # weighed there too: under 300 KB with everything it loads
    weight, _ = page_weight(page)
    assert weight > 20 * 1024  # the weighing saw the page and its scripts (uPlot alone is about 20 KB gzipped)

    # Three predictions with the server's admin key: metered, they show on the usage page at once.
    body = {"inputs": [{"name": "input", "shape": [1, 4], "datatype": "FP32", "data": [5.1, 3.5, 1.4, 0.2]}]}
    for _ in range(3):
        assert console_server.post(f"{console_server.url}/v2/models/iris/infer", json=body).status_code == 200
    page.get_by_role("link", name="Usage").click()
    page.wait_for_url("**/ui/usage")
    assert page.locator("h1").inner_text() == "Usage and cost"
    iris = page.locator("tbody tr", has=page.locator("td", has_text="iris")).first
    assert int(iris.locator("td").nth(1).inner_text()) >= 3
    page.select_option("#by", "key")
    page.get_by_role("button", name="Show").click()
    page.wait_for_url("**/ui/usage?*by=key*")
    check_page(page, "usage")

    page.get_by_role("link", name="Keys").click()
    page.wait_for_url("**/ui/keys")
    page.select_option("#k-scope", "read")
    page.fill("#k-name", "made in the console")
    page.get_by_role("button", name="Create key").click()
    secret = page.locator("#new-secret").input_value()
    assert secret.startswith("stk_")
    assert secret not in page.url
    check_page(page, "keys")
    # Shown once: the list page reloaded has no secret in it.
    page.goto("/ui/keys")
    assert secret not in page.content()
    assert page.locator("text=made in the console").count() == 1

    page.get_by_role("link", name="Projects").click()
    page.fill("#p-name", "console-made")
    page.get_by_role("button", name="Create project").click()
    page.wait_for_url("**/ui/projects")
    assert page.locator("td", has_text="console-made").count() == 1
    check_page(page, "projects")

    page.get_by_role("link", name="Audit log").click()
    page.wait_for_url("**/ui/audit")
    assert page.locator("td", has_text="console POST /ui/keys").count() >= 1
    page.fill("#f-action", "sign-in")
    page.get_by_role("button", name="Filter").click()
    page.wait_for_url("**/ui/audit?*")
    actions = page.locator("tbody td:nth-child(4)").all_inner_texts()
    assert actions and all("sign-in" in a for a in actions)
    check_page(page, "audit")

    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url("**/ui/sign-in")
    check_page(page, "sign-in")

    # The key made above, signed in: a read key sees no admin sections and no action buttons.
    reader = signed_in(key=secret)
    nav = reader.get_by_role("navigation", name="Main").inner_text()
    assert "Keys" not in nav and "Audit log" not in nav and "Usage" in nav
    assert reader.locator("main form[method=post]").count() == 0
    check_page(reader, "overview-read")


def _register_cancer(server: LiveServer) -> tuple[int, list[float]]:
    """A breast-cancer logistic regression (standardized, its scaler folded into the weights) written as an ONNX
    graph that outputs its two logits, registered from outside with its training rows uploaded as its reference
    (the background tabular explanations sample); and a held-out row to explain. Its logit is exactly linear in the
    inputs and stays far from saturation (|logit| < 11 on every row), so kernel SHAP is exact there and the API's
    answer and the page's, two runs with different random coalitions, agree to rounding."""
    from onnx import TensorProto, helper, numpy_helper

    data = load_breast_cancer()
    x, y = data.data, data.target
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.01, max_iter=5000)).fit(x[:300], y[:300])
    scaler, regression = model[0], model[-1]
    weights = regression.coef_[0] / scaler.scale_
    bias = regression.intercept_[0] - float(np.sum(weights * scaler.mean_))
    matrix = np.stack([np.zeros_like(weights), weights], axis=1).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["X", "W", "B"], ["logits"])],
        "cancer",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["batch", 30])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2])],
        [numpy_helper.from_array(matrix, "W"), numpy_helper.from_array(np.array([0, bias], np.float32), "B")],
    )
    onnx = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.ir_version = 8
    answer = server.post(
        f"{server.url}/api/v1/models/explain-cancer/versions", files={"file": ("m.onnx", onnx.SerializeToString())}
    )
    assert answer.status_code == 201, answer.text
    version: int = answer.json()["version"]
    header = ",".join(f'"{n}"' for n in data.feature_names)
    csv = header + "\n" + "\n".join(",".join(map(str, row)) for row in x[:300]) + "\n"
    reference = f"{server.url}/api/v1/models/explain-cancer/versions/{version}/reference"
    answer = server.put(reference, files={"file": ("train.csv", csv.encode())})
    assert answer.status_code == 200, answer.text
    # Row 321: its ten largest attributions have both signs, and no two of its eleven largest are within 0.003.
    return version, [float(v) for v in x[321].astype(np.float32)]


def test_the_explain_panel_draws_the_apis_attributions(
    signed_in: Callable[..., Page], console_server: LiveServer
) -> None:
    """Tabular rows explained from the version page: the bars drawn are the API's largest attributions, in order,
    each on its sign's side of the axis; a text's words carry the API's numbers; a drawn digit gets a heat map; a
    model without background data shows the server's 409 in the panel. axe-core checks the drawn panels."""
    version, row = _register_cancer(console_server)
    path = f"/v2/models/explain-cancer/versions/{version}/explain"
    body = {"inputs": [{"name": "X", "shape": [1, len(row)], "datatype": "FP32", "data": row}]}
    # The API's own answer, with the admin key (this also starts the explanation worker the page will use).
    api = console_server.post(console_server.url + path, params={"output": "logit"}, json=body, timeout=scaled(90))
    assert api.status_code == 200, api.text
    expected = api.json()
    attributions = expected["attributions"][0]
    top = sorted(range(len(attributions)), key=lambda j: -abs(attributions[j]))[:10]

    page = signed_in("admin")
    page.goto(f"/ui/models/explain-cancer/versions/{version}")
    for i, value in enumerate(row):
        page.fill(f"#explain-f{i}", repr(value))
    page.select_option("#explain-output", "logit")
    # Two rows explained together: the row, then it with a larger first feature; the first is compared.
    page.get_by_role("button", name="Add this row").click()
    page.fill("#explain-f0", repr(row[0] * 1.5))
    page.get_by_role("button", name="Add this row").click()
    expect(page.locator(".explain-rows li")).to_have_count(2)
    page.get_by_role("button", name="Explain", exact=True).click()
    expect(page.locator("svg.explain-bars")).to_have_count(2, timeout=scaled(60) * 1000)
    bars = page.locator("svg.explain-bars").first.locator(".explain-bar")
    expect(bars).to_have_count(10)
    drawn = json.loads(
        bars.evaluate_all(
            """(gs) => { const axis = +gs[0].ownerSVGElement.querySelector('line').getAttribute('x1');
            return JSON.stringify(gs.map((g) => { const r = g.querySelector('rect');
              return [g.dataset.feature, +g.dataset.value, +r.getAttribute('x') >= axis - 0.01,
                      +r.getAttribute('x') + +r.getAttribute('width') <= axis + 0.01, r.getAttribute('fill')]; })); }"""
        )
    )
    assert [d[0] for d in drawn] == [expected["feature_names"][j] for j in top]
    for (_, value, right, left, fill), j in zip(drawn, top, strict=True):
        assert value == pytest.approx(attributions[j], rel=1e-3, abs=1e-6)
        # A positive bar starts at the axis and goes right, a negative one ends there; the colours differ.
        assert (right, left, fill) == ((True, False, "#a4161a") if value > 0 else (False, True, "#1f4e79"))
    assert {d[4] for d in drawn} == {"#a4161a", "#1f4e79"}  # the row has bars of both signs
    head = page.locator(".explain-head").first.inner_text()
    assert "logit of class" in head and "base value" in head
    assert f"{expected['base_values'][0]:.4g}"[:4] in head
    check_page(page, "explain-tabular")

    # Text: the words drawn with the API's per-word numbers.
    from explain.test_explain_server import _sentiment_pipeline

    folder = Path(tempfile.mkdtemp(prefix="explain-text-"))
    try:
        _sentiment_pipeline(folder)
        files = [("file", ("pipeline.json", (folder / "pipeline.json").read_bytes()))]
        files += [("files", (name, (folder / name).read_bytes())) for name in ("tokenizer.json", "sentiment.onnx")]
        answer = console_server.post(
            f"{console_server.url}/api/v1/models/explain-sentiment/versions", files=files, data={"format": "pipeline"}
        )
    finally:
        shutil.rmtree(folder)
    assert answer.status_code == 201, answer.text
    page.goto(f"/ui/models/explain-sentiment/versions/{answer.json()['version']}")
    page.fill("#explain-text", "the movie was good\nbad movie")
    page.get_by_role("button", name="Explain", exact=True).click()
    tokens = page.locator(".explain-token")
    expect(tokens).to_have_count(6, timeout=scaled(60) * 1000)
    words = json.loads(
        tokens.evaluate_all("(ts) => JSON.stringify(ts.map((t) => [t.dataset.token, +t.dataset.value]))")
    )
    texts = {
        "inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["the movie was good", "bad movie"]}]
    }
    api = console_server.post(f"{console_server.url}/v2/models/explain-sentiment/explain", json=texts)
    assert api.status_code == 200, api.text
    assert [w for w, _ in words] == [t for tokens in api.json()["tokens"] for t in tokens]
    assert [v for _, v in words] == pytest.approx([a for row in api.json()["attributions"] for a in row])
    signs = {w: v > 0 for w, v in words}
    assert signs["good"] and signs["bad"] and not signs["the"]  # each text's own class word raises it
    check_page(page, "explain-text")

    # An image: a vertical stroke on the explain panel's pad (the sample digits CNN), drawn back as a heat map whose
    # text names its strongest pixels (a blank image, as the pad's old sampling sent, has none).
    page.goto("/ui/models/digits/versions/1")
    pad = page.locator("section.explain canvas.tryit-pad")
    pad.scroll_into_view_if_needed()
    box = pad.bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + 112, box["y"] + 30)
    page.mouse.down()
    page.mouse.move(box["x"] + 112, box["y"] + 200, steps=8)
    page.mouse.up()
    page.get_by_role("button", name="Explain", exact=True).click()
    heat = page.locator("canvas.explain-heat")
    expect(heat).to_have_count(1, timeout=scaled(60) * 1000)
    assert "Strongest pixels: row" in (heat.get_attribute("aria-label") or "")
    check_page(page, "explain-image")

    # No background data: the server's 409 in the panel, the page intact.
    page.goto("/ui/models/iris/versions/1")
    page.get_by_role("button", name="Explain", exact=True).click()
    status = page.locator(".explain-status")
    expect(status).to_contain_text("409", timeout=scaled(30) * 1000)
    assert "no background data" in status.inner_text()
    # The 409 answer itself, and Chromium's console line about it, are what this step expects.
    problems = page.watched.problems  # type: ignore[attr-defined]
    expected_refusal = [p for p in problems if (p.startswith("409 ") and "/explain" in p) or "status of 409" in p]
    assert expected_refusal and [p for p in problems if p not in expected_refusal] == []
    problems.clear()
    check_page(page, "explain-no-background")
