"""Under the Content-Security-Policy the admin's scripts still run and the API docs still render: the
browser refuses nothing on these pages (it would say so on the console)."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.browser.test_enrolment_flow import log_in, log_out
from tests.factories import screened

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("restore_catalogue"),
    pytest.mark.filterwarnings("ignore:No directory at:UserWarning"),
]


def refusals(page: Page) -> list[str]:
    """Console messages of the policy refusing something, collected as the page runs."""
    seen: list[str] = []
    page.on("console", lambda message: seen.append(message.text)
            if "Content Security Policy" in message.text else None)
    return seen


def test_admin_pages_work_under_the_policy(page: Page, live_server: Any, world: Any) -> None:
    refused = refusals(page)
    base = live_server.url
    subject = screened(trial=world.trial, site=world.site_a, coordinator=world.coordinator)
    log_in(page, base, world.data_manager)
    page.goto(f"{base}/admin/patients/subject/")
    expect(page.get_by_role("link", name=subject.code)).to_be_visible()
    page.goto(f"{base}/admin/audit/auditevent/")
    expect(page.locator("#audit-entries")).to_be_visible()
    log_out(page)
    log_in(page, base, world.coordinator)
    page.goto(f"{base}/admin/patients/concomitantmedication/add/")
    page.locator(".datetimeshortcuts a", has_text="Today").first.click()  # the admin's date widget is a script
    expect(page.locator(".vDateField").first).not_to_have_value("")
    assert refused == []


def test_api_docs_render_from_this_origin(page: Page, live_server: Any, world: Any) -> None:
    refused = refusals(page)
    outside: list[str] = []
    page.on("request", lambda request: outside.append(request.url)
            if not request.url.startswith(live_server.url) and not request.url.startswith("data:") else None)
    page.goto(f"{live_server.url}/api/docs/")
    expect(page.locator(".opblock-tag").first).to_be_visible()  # Swagger UI drew the operations
    expect(page.locator(".opblock-summary-path", has_text="/api/v1/subjects/").first).to_be_visible()
    assert refused == [] and outside == []
