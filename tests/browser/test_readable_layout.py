"""At 1,366 × 768 (a ward PC) the subject list, the adverse-event list and the audit trail fit the screen
(no horizontal scroll) and their action buttons never cover the heading; screenshots of them are kept in
``var/test-artifacts/``. The API docs load with every other host blocked (a closed hospital network)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from django.conf import settings
from django.core.management import call_command
from playwright.sync_api import Page, Route, expect

from tests.browser.conftest import TIMEOUT_MS
from tests.browser.test_enrolment_flow import log_in
from tests.factories import UserFactory

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("restore_catalogue"),
    pytest.mark.filterwarnings("ignore:No directory at:UserWarning"),
]

WIDTH, HEIGHT = 1366, 768
ARTIFACTS = Path(settings.BASE_DIR) / "var" / "test-artifacts"
PAGES = {
    "subjects": "/admin/patients/subject/",
    "adverse-events": "/admin/patients/adverseevent/",
    "audit-trail": "/admin/audit/auditevent/",
}


HEADING_TEXT_BOX = """(() => {
  const range = document.createRange();
  range.selectNodeContents(document.querySelector("#content h1"));
  const box = range.getBoundingClientRect();
  return {x: box.x, y: box.y, width: box.width, height: box.height};
})()"""


@pytest.fixture
def ward_page(browser: Any) -> Iterator[Page]:
    context = browser.new_context(locale="en-GB", viewport={"width": WIDTH, "height": HEIGHT})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()


def overlaps(a: dict[str, float], b: dict[str, float]) -> bool:
    return (a["x"] < b["x"] + b["width"] and b["x"] < a["x"] + a["width"]
            and a["y"] < b["y"] + b["height"] and b["y"] < a["y"] + a["height"])


@pytest.mark.parametrize("name", list(PAGES))
def test_lists_and_audit_trail_fit_a_ward_screen(ward_page: Page, live_server: Any, name: str) -> None:
    call_command("load_demo")
    root = UserFactory(username="root", is_superuser=True, is_staff=True)
    page = ward_page
    log_in(page, live_server.url, root)
    page.goto(f"{live_server.url}{PAGES[name]}")
    expect(page.locator("#content h1")).to_be_visible()
    if name == "audit-trail":
        expect(page.locator("#audit-entries .audit-who").first).to_be_visible()  # who / when / why shown
        expect(page.locator("#audit-entries th", has_text="Reason for change")).to_be_visible()
    else:
        expect(page.locator("#result_list tbody tr").first).to_be_visible()
    assert page.evaluate("document.scrollingElement.scrollWidth") <= WIDTH
    heading = page.evaluate(HEADING_TEXT_BOX)  # the heading's words, not its full-width block
    for button in page.locator(".object-tools a").all():
        box = button.bounding_box()
        assert box is None or not overlaps(heading, box), f"{button.inner_text()!r} covers the heading"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}-1366.png"), full_page=True)


def test_api_docs_load_with_other_hosts_blocked(ward_page: Page, live_server: Any) -> None:
    own = urlparse(live_server.url).netloc
    blocked: list[str] = []

    def closed_network(route: Route) -> None:
        url = urlparse(route.request.url)
        if url.scheme in ("http", "https") and url.netloc != own:
            blocked.append(route.request.url)
            route.abort()
        else:
            route.continue_()

    page = ward_page
    page.route("**/*", closed_network)
    page.goto(f"{live_server.url}/api/docs/")
    expect(page.locator(".opblock-tag").first).to_be_visible()  # Swagger UI drew the operations
    assert blocked == []


def test_api_docs_page_references_only_its_own_origin(client: Any) -> None:
    html = client.get("/api/docs/").content.decode()
    script = client.get("/api/docs/", {"script": ""}).content.decode()
    assert "swagger-ui" in html
    for text in (html, script):
        for marker in ("http://", "https://", "//cdn", "unpkg", "jsdelivr", "cdnjs"):
            assert marker not in text.replace('"//"', ""), marker
