"""The console's own pages in Chromium, one signed-in walk: the overview, usage, the audit log, keys (a key created
and its secret shown once), projects, then sign-out and a `read` key's view. Every page is checked for browser
errors, failed requests and axe-core's serious or critical violations, and saved as a screenshot."""

from __future__ import annotations

from collections.abc import Callable

from playwright.sync_api import Page

from conftest import LiveServer
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
