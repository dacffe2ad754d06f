"""A refused CRS assessment comes back with what the coordinator typed and the reason on the field, before
anything is saved (issue 13: forms that never lose input)."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import Page, expect

from patients.models import CrsAssessment
from patients.services import safety
from tests.browser.test_enrolment_flow import log_in, success, ui_date
from tests.factories import days_ago, infused_subject

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("restore_catalogue"),
    pytest.mark.filterwarnings("ignore:No directory at:UserWarning"),
]

ROW = "#crsassessments-0"


def test_a_refused_crs_assessment_keeps_its_values_and_says_why_on_the_field(page: Page, live_server: Any,
                                                                            world: Any) -> None:
    base = live_server.url
    subject = infused_subject(coordinator=world.coordinator, investigator=world.investigator, trial=world.trial,
                              site=world.site_a)
    event = safety.record_adverse_event(subject=subject, by=world.coordinator, data=safety.EventInput(
        category="crs", term="Cytokine release syndrome", onset_on=days_ago(3), related_to_product="definite",
        related_to_lymphodepletion="unlikely"))

    log_in(page, base, world.coordinator)
    page.goto(f"{base}/admin/patients/adverseevent/{event.pk}/change/")
    page.locator("#crsassessments-group .add-row a").click()
    page.fill(f"{ROW} [name='crsassessments-0-assessed_at_0']", ui_date(days_ago(5)))  # before the onset
    page.fill(f"{ROW} [name='crsassessments-0-assessed_at_1']", "14:30")
    page.fill(f"{ROW} [name='crsassessments-0-max_temp_c']", "39.4")
    page.check(f"{ROW} [name='crsassessments-0-hypotension']")
    page.select_option(f"{ROW} [name='crsassessments-0-o2_device']", value="low_flow_nc")
    page.fill(f"{ROW} [name='crsassessments-0-o2_flow_lpm']", "3")
    page.click("input[name=_continue]")

    expect(page.locator(f"{ROW} .field-assessed_at .errorlist")).to_contain_text(
        f"The event began on {days_ago(3):%d %b %Y}.")
    expect(success(page)).to_have_count(0)
    expect(page.locator(f"{ROW} [name='crsassessments-0-assessed_at_0']")).to_have_value(ui_date(days_ago(5)))
    expect(page.locator(f"{ROW} [name='crsassessments-0-assessed_at_1']")).to_have_value("14:30")
    expect(page.locator(f"{ROW} [name='crsassessments-0-max_temp_c']")).to_have_value("39.4")
    expect(page.locator(f"{ROW} [name='crsassessments-0-hypotension']")).to_be_checked()
    expect(page.locator(f"{ROW} [name='crsassessments-0-o2_device']")).to_have_value("low_flow_nc")
    expect(page.locator(f"{ROW} [name='crsassessments-0-o2_flow_lpm']")).to_have_value("3")
    assert not CrsAssessment.objects.exists()

    # Corrected on the same form, the assessment is saved and graded.
    page.fill(f"{ROW} [name='crsassessments-0-assessed_at_0']", ui_date(days_ago(2)))
    page.click("input[name=_continue]")
    expect(success(page)).to_contain_text("was changed successfully")
    assert CrsAssessment.objects.get(event=event).derived_grade == 2
