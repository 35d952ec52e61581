"""The whole path from a browser (#17): sign in, upload the digits dataset, train a CNN and watch its progress bar
and loss curve move while it runs, open the version and its confusion matrix, compress it and see the scatter
plot, deploy it behind an endpoint with a 90/10 split against the compressed version, predict from the try-it
panel (a dataset row and a drawn digit), and find those requests on the endpoint's charts and the usage page.
Every page is checked by ui.conftest.check_page (console errors, failed requests, axe-core) and screenshotted.
Names are this test's own (c2-...) on the shared console server."""

from __future__ import annotations

import io
import itertools
import re
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import numpy as np
from playwright.sync_api import Page, expect

from conftest import LiveServer, scaled
from ui.conftest import check_page, sign_in_http

DATASET, MODEL, ENDPOINT = "c2-digits", "c2-cnn", "c2-digits-ep"
#: Predictions sent from the try-it panel: dataset rows, then one drawn digit.
ROWS = 4


def digits_npz(folder: Path) -> Path:
    from sklearn.datasets import load_digits  # the training extra, as the server's training child uses it

    bunch = load_digits()
    buffer = io.BytesIO()
    np.savez(buffer, X=bunch.images.astype(np.float64), y=bunch.target)
    path = folder / "digits.npz"
    path.write_bytes(buffer.getvalue())
    return path


def number(page: Page, selector: str, attribute: str) -> float:
    return float(page.locator(selector).get_attribute(attribute) or 0)


def test_the_whole_path_in_a_browser(
    signed_in: Callable[..., Page], console_server: LiveServer, tmp_path: Path
) -> None:
    page = signed_in("admin")
    stages: list[tuple[str, float]] = [("start", time.monotonic())]
    timeout = scaled(60) * 1000
    #: A job's whole run: on a machine shared with other work, training and compression children take minutes.
    job_timeout = scaled(200) * 1000

    # Upload the digits dataset (an NPZ of 8x8 images), see its profile.
    page.goto("/ui/datasets")
    check_page(page, "path-datasets")
    page.fill("#upload-name", DATASET)
    page.set_input_files("#upload-file", str(digits_npz(tmp_path)))
    page.get_by_role("button", name="Upload").click()
    page.wait_for_url(f"**/ui/datasets/{DATASET}", timeout=timeout)
    expect(page.locator("svg[aria-label^='Rows per class']")).to_have_count(1)
    check_page(page, "path-dataset")

    stages.append(("dataset", time.monotonic()))
    # Start a CNN; the job page follows its events: the bar and the curve move while it runs.
    page.select_option("#train-model", "cnn")
    page.fill("#train-name", MODEL)
    page.fill("#train-epochs", "6")
    page.fill("#train-batch", "16")
    page.get_by_role("button", name="Start training").click()
    page.wait_for_url(re.compile(r".*/ui/jobs/[0-9a-f]{32}$"), timeout=timeout)
    job_url = page.url
    page.wait_for_function(
        "() => +document.getElementById('job-progress').value >= 1"
        " && +document.getElementById('job-curves').dataset.points >= 1",
        timeout=job_timeout,  # the child starts (torch) before the first epoch
    )
    seen_bar, seen_points = number(page, "#job-progress", "value"), number(page, "#job-curves", "data-points")
    total = number(page, "#job-progress", "max")
    assert seen_bar < total, "the job finished before the page saw it run: no movement to see"
    page.wait_for_function(
        f"() => +document.getElementById('job-progress').value > {seen_bar}"
        f" && +document.getElementById('job-curves').dataset.points > {seen_points}",
        timeout=timeout,
    )
    assert page.locator("#job-curves canvas").count() == 1  # uPlot drew the curves
    # At the end the stream closes and the page reloads with the version the job registered.
    version_link = page.get_by_role("link", name=f"{MODEL} v1")
    expect(version_link).to_be_visible(timeout=job_timeout)
    assert page.url == job_url
    assert number(page, "#job-progress", "value") == number(page, "#job-progress", "max") == 6
    check_page(page, "path-training-job")

    stages.append(("training", time.monotonic()))
    # The version: its confusion matrix as a heat map and per-class figures.
    version_link.click()
    page.wait_for_url(f"**/ui/models/{MODEL}/versions/1")
    expect(page.locator("svg[aria-label^='Confusion matrix']")).to_have_count(1)
    assert page.locator("svg[aria-label^='Confusion matrix'] rect").count() == 100  # 10 x 10 classes
    check_page(page, "path-version")

    stages.append(("version", time.monotonic()))
    # Compress it (short timings) and see the accuracy-vs-speed scatter plot when the run ends.
    page.uncheck("input[name=methods][value=quantize-dynamic]")  # one variant (fp16): the run stays short
    page.fill("#compress-timing", "0.1")
    page.get_by_role("button", name="Start compression").click()
    page.wait_for_url(re.compile(r".*/ui/compression/[0-9a-f]{32}$"), timeout=timeout)
    expect(page.locator("#compression-scatter canvas")).to_have_count(1, timeout=job_timeout)
    rows = page.locator("#variants-title ~ table tbody tr")
    assert rows.count() == 2  # the parent and its fp16 variant
    check_page(page, "path-compression")

    stages.append(("compression", time.monotonic()))
    # The model: the variant in its lineage graph; compare v1 with v2, only what differs.
    page.goto(f"/ui/models/{MODEL}")
    assert page.locator("svg[aria-label^='Lineage'] a").count() == 5  # dataset, 2 jobs, 2 versions (linked)
    check_page(page, "path-model")
    page.goto(f"/ui/models/{MODEL}/compare?v=1&v=2&diff=1")
    assert page.locator("tr.differs").count() >= 3
    assert page.locator("table.compare tbody tr:not(.differs)").count() == 0
    check_page(page, "path-compare")

    stages.append(("model pages", time.monotonic()))
    # Deploy: 90% to v1, 10% to the compressed v2.
    page.goto(f"/ui/models?q={MODEL}")
    assert page.get_by_role("link", name=MODEL, exact=True).count() == 1
    check_page(page, "path-models")
    page.goto("/ui/endpoints")
    check_page(page, "path-endpoints")
    page.fill("#endpoint-name", ENDPOINT)
    for i, (version, weight) in enumerate(((1, 90), (2, 10))):
        page.fill(f"#create-model-{i}", MODEL)
        page.fill(f"#create-version-{i}", str(version))
        page.fill(f"#create-weight-{i}", str(weight))
    page.get_by_role("button", name="Create").click()
    page.wait_for_url(f"**/ui/endpoints/{ENDPOINT}", timeout=timeout)
    deadline = scaled(60)
    for _ in range(int(deadline)):
        if page.locator("dl.facts dd").first.inner_text().startswith("ready"):
            break
        page.wait_for_timeout(1000)
        page.reload()
    shares = page.locator("#targets-title ~ table tbody td:nth-child(3)").all_inner_texts()
    assert shares == ["90%", "10%"], shares

    stages.append(("deploy", time.monotonic()))
    # Predict from the try-it panel: dataset rows, then a drawn stroke.
    answer = page.locator(".tryit-answer")
    for _ in range(ROWS):
        page.get_by_role("button", name="Fill from a dataset row").click()
        expect(answer).to_contain_text("press Predict")
        page.get_by_role("button", name="Predict").click()
        expect(answer.locator(".tryit-label")).to_contain_text("Predicted class:")
    page.get_by_role("button", name="Clear").click()
    pad = page.locator("canvas.tryit-pad").bounding_box()
    assert pad is not None
    page.mouse.move(pad["x"] + 112, pad["y"] + 30)
    page.mouse.down()
    page.mouse.move(pad["x"] + 112, pad["y"] + 200, steps=8)
    page.mouse.up()
    page.get_by_role("button", name="Predict").click()
    expect(answer).to_contain_text(f"Served by {ENDPOINT} version")

    stages.append(("predictions", time.monotonic()))
    # The requests on the usage page (metered by model), then on the endpoint's charts (10 s intervals).
    sent = ROWS + 1
    for _ in range(int(scaled(30))):
        page.goto("/ui/usage?by=model&days=1")
        if page.locator("td", has_text=MODEL).count():
            break
        page.wait_for_timeout(1000)
    assert page.locator("td", has_text=MODEL).count() >= 1
    check_page(page, "path-usage")
    page.goto(f"/ui/endpoints/{ENDPOINT}")
    page.wait_for_function(
        f"() => +document.querySelector('.endpoint-requests').textContent >= {sent}", timeout=scaled(40) * 1000
    )
    assert page.locator("#chart-traffic canvas").count() == 1
    check_page(page, "path-endpoint")
    stages.append(("usage and charts", time.monotonic()))
    took = [f"{name} {at - before:.1f}" for (_, before), (name, at) in itertools.pairwise(stages)]
    print("stages (s):", ", ".join(took))


def test_a_read_key_sees_the_pages_without_actions(
    signed_in: Callable[..., Page], console_keys: Callable[..., str]
) -> None:
    """A read key's session: the model page and its try-it section render, with no form that changes anything."""
    reader = signed_in(key=console_keys("read"))
    for path in ("/ui/models/digits", "/ui/models/digits/versions/1", "/ui/datasets", "/ui/endpoints", "/ui/jobs"):
        reader.goto(path)
        assert reader.locator("form.api-form, form.tryit-form").count() == 0, path
    check_page(reader, "path-read-jobs")


def test_the_pages_keep_to_the_session_s_project_and_scope(
    console_server: LiveServer, console_keys: Callable[..., str]
) -> None:
    """Over HTTP (no browser): another project's session finds none of the default project's models, datasets or
    jobs; a read session is refused an action sent through the bridge anyway (403), which changes nothing."""
    other, csrf = sign_in_http(console_server, console_keys("read", "c2-elsewhere"))
    with closing(other):
        assert other.get("/ui/models/digits").status_code == 404
        listed = other.get("/ui/models")
        assert listed.status_code == 200 and "/ui/models/digits" not in listed.text
        assert other.get("/ui/models/digits/versions/1").status_code == 404
        assert other.get("/ui/endpoints").status_code == 200
    reader, csrf = sign_in_http(console_server, console_keys("read"))
    with closing(reader):
        assert reader.get("/ui/models/digits").status_code == 200
        refused = reader.put(
            "/ui/bridge/api/v1/models/digits/aliases/c2-read", json={"version": 1}, headers={"x-csrf-token": csrf}
        )
        assert refused.status_code == 403, refused.text
        assert (
            console_server.get(f"{console_server.url}/api/v1/models/digits/aliases").json()["aliases"].get("c2-read")
            is None
        )
