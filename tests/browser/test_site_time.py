"""In the admin, a Beijing site's coordinator types a local time and sees it back on the site's clock,
labelled with the site's time zone (stored as UTC: 04:00 in Beijing is 20:00 UTC the day before)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import Page, expect

from patients.models import ConcomitantMedication
from tests.browser.conftest import TIMEOUT_MS
from tests.browser.test_enrolment_flow import log_in, success, ui_date
from tests.factories import days_ago, infused_subject

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("restore_catalogue"),
    pytest.mark.filterwarnings("ignore:No directory at:UserWarning"),
]

LABEL = "Asia/Shanghai, UTC+08:00"


@pytest.fixture
def beijing_page(browser: Any) -> Iterator[Page]:
    """A page in a browser whose clock is in Beijing, like the site coordinator's."""
    context = browser.new_context(locale="en-GB", timezone_id="Asia/Shanghai", viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()


def help_of(page: Page, field: str) -> Any:
    return page.locator(f".field-{field} .help:not(.timezonewarning)")


def test_coordinator_enters_a_local_time_and_sees_it_in_site_time(beijing_page: Page, live_server: Any,
                                                                   world: Any) -> None:
    page = beijing_page
    base = live_server.url
    subject = infused_subject(coordinator=world.coordinator, investigator=world.investigator, trial=world.trial,
                              site=world.site_a)
    given_on = days_ago(2)

    log_in(page, base, world.coordinator)
    page.goto(f"{base}/admin/patients/concomitantmedication/add/")
    expect(help_of(page, "given_at")).to_contain_text("Asia/Shanghai")
    expect(page.locator(".timezonewarning")).to_have_count(0)  # the browser's clock and the site's agree
    page.select_option("#id_subject", value=str(subject.pk))
    page.select_option("#id_drug", value="tocilizumab")
    page.fill("#id_dose", "8")
    page.select_option("#id_dose_unit", value="mg/kg")
    page.select_option("#id_route", value="iv")
    page.fill("#id_given_at_0", ui_date(given_on))
    page.fill("#id_given_at_1", "04:00")
    page.click("input[name=_save]")
    expect(success(page)).to_contain_text("was added successfully")

    medication = ConcomitantMedication.objects.get(subject=subject)
    assert medication.given_at == dt.datetime.combine(given_on, dt.time(4), tzinfo=ZoneInfo("Asia/Shanghai"))
    assert medication.given_at.astimezone(dt.UTC).hour == 20  # the day before, in UTC

    expect(page.locator("th.column-given_at_site_time")).to_contain_text("Given at (site time)")
    cell = page.locator("td.field-given_at_site_time")
    expect(cell).to_have_text(f"{given_on:%Y-%m-%d} 04:00 (UTC+08:00)")  # the site's offset from UTC

    page.goto(f"{base}/admin/patients/concomitantmedication/{medication.pk}/change/")
    expect(page.locator("p.site-time-zone")).to_contain_text(LABEL)
    expect(page.locator("#id_given_at_0")).to_have_value(ui_date(given_on))
    expect(page.locator("#id_given_at_1")).to_have_value("04:00:00")
    expect(help_of(page, "given_at")).to_contain_text(f"Site time: {LABEL}.")
