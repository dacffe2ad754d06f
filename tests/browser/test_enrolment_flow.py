"""End to end in the admin: screening, consent, eligibility, a refused early enrolment, the investigator's
confirmation and enrolment, as the coordinator and the investigator of site A click through it."""

from __future__ import annotations

import re
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from patients.models import Subject, SubjectStatus
from tests.factories import PASSWORD, days_ago

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("restore_catalogue"),
    # WhiteNoise warns that STATIC_ROOT (var/static) was never collected; the live server serves static itself.
    pytest.mark.filterwarnings("ignore:No directory at:UserWarning"),
]


def ui_date(day: Any) -> str:
    """A date as a user of the en-GB admin types it (the first DATE_INPUT_FORMAT)."""
    return day.strftime("%d/%m/%Y")


def log_in(page: Page, base: str, user: Any) -> None:
    page.goto(f"{base}/admin/login/")
    page.fill("#id_username", user.username)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    expect(page.locator("#logout-form")).to_be_visible()


def log_out(page: Page) -> None:
    page.locator("#logout-form button").click()
    expect(page.locator("#content h1")).to_have_text("Logged out")


def open_subject(page: Page, base: str, code: str) -> None:
    """From the subject list, the way a user gets there."""
    page.goto(f"{base}/admin/patients/subject/")
    page.get_by_role("link", name=code, exact=True).click()
    expect(page.locator("#content h1")).to_have_text("Change subject")
    expect(page.locator(".field-code .readonly")).to_have_text(code)


def status_of(page: Page) -> Any:
    return page.locator(".field-status .readonly")


def success(page: Page) -> Any:
    return page.locator("ul.messagelist li.success")


def action_link(page: Page, action: str) -> Any:
    return page.locator(f"a.subject-action[data-action='{action}']")


def test_screen_consent_assess_confirm_and_enrol(page: Page, live_server: Any, world: Any) -> None:
    base = live_server.url
    screened_on, consented_on, assessed_on, enrolled_on = days_ago(10), days_ago(9), days_ago(8), days_ago(7)

    # 1. The coordinator screens a new subject at site A.
    log_in(page, base, world.coordinator)
    page.goto(f"{base}/admin/patients/subject/")
    page.get_by_role("link", name="Add subject").click()
    expect(page.locator("#content h1")).to_have_text("Add subject")
    page.select_option("#id_trial", label=str(world.trial))
    page.select_option("#id_site", value=str(world.site_a.pk))
    expect(page.locator("#id_site option:checked")).to_contain_text("SA")
    page.locator("#id_screened_on").press_sequentially(ui_date(screened_on))
    page.select_option("#id_sex", value=Subject.Sex.FEMALE)
    page.select_option("#id_diagnosis", value="b_all")
    page.click("input[name=_save]")
    expect(success(page)).to_contain_text("was added successfully")
    code = re.search(r"\bSA-\d{4}\b", success(page).inner_text()).group(0)
    assert code == "SA-0001"
    success(page).get_by_role("link", name=code).click()
    expect(page.locator(".field-code .readonly")).to_have_text(code)
    pk = re.search(r"/admin/patients/subject/(\d+)/change/", page.url).group(1)
    expect(status_of(page)).to_have_text("Screening")

    # 2. Informed consent.
    action_link(page, "consent").click()
    expect(page.locator("#content h1")).to_have_text(f"Record informed consent: {code}")
    page.fill("#id_version", "v3.0 2024-05-01")
    page.locator("#id_consented_on").press_sequentially(ui_date(consented_on))
    page.fill("#id_age_at_consent", "34")
    page.click("input[name=_save]")
    expect(success(page)).to_have_text(f"Record informed consent for {code}: saved.")
    expect(page.locator("#subject-course")).to_contain_text("v3.0 2024-05-01")

    # 3. Eligibility checklist: every inclusion criterion met, no exclusion criterion present.
    action_link(page, "eligibility").click()
    page.locator("#id_assessed_on").press_sequentially(ui_date(assessed_on))
    rows = page.locator("div.form-row[class*='field-criterion_']")
    expect(rows).to_have_count(3)
    for i in range(rows.count()):
        row = rows.nth(i)
        answer = "Met: yes" if row.get_by_label("Met: yes").count() else "Present: no"
        row.get_by_label(answer).check()
    page.click("input[name=_save]")
    expect(success(page)).to_have_text(f"Assess eligibility for {code}: saved.")
    assessments = page.locator("#eligibility-assessments tbody tr")
    expect(assessments).to_have_count(1)
    expect(assessments.first).to_contain_text("Eligible")
    expect(status_of(page)).to_have_text("Screening")

    # 4. Enrolment before the investigator confirmed eligibility: not offered, and refused if forced.
    expect(action_link(page, "eligibility")).to_be_visible()
    expect(action_link(page, "enrol")).to_have_count(0)
    page.goto(f"{base}/admin/patients/subject/{pk}/action/enrol/")
    page.select_option("#id_cohort", label="ADULT Adult")
    page.locator("#id_enrolled_on").press_sequentially(ui_date(enrolled_on))
    page.click("input[name=_save]")
    expect(page.locator(".errornote")).to_contain_text("eligibility has not been confirmed")
    expect(page.locator("#content-main > p").first).to_contain_text("Screening")
    assert Subject.objects.get(code=code).status == SubjectStatus.SCREENING
    open_subject(page, base, code)
    expect(status_of(page)).to_have_text("Screening")
    log_out(page)

    # 5. The investigator confirms the assessment.
    log_in(page, base, world.investigator)
    open_subject(page, base, code)
    page.get_by_role("button", name="Confirm eligibility (investigator)").click()
    expect(success(page)).to_have_text(f"Eligibility confirmed: {code} is eligible.")
    expect(status_of(page)).to_have_text("Eligible")
    expect(page.locator("#eligibility-assessments tbody tr").first).to_contain_text(f"by {world.investigator}")
    log_out(page)

    # 6. The coordinator enrols the now eligible subject through the offered action.
    log_in(page, base, world.coordinator)
    open_subject(page, base, code)
    enrol = action_link(page, "enrol")
    expect(enrol).to_have_text("Enrol subject")
    enrol.click()
    page.select_option("#id_cohort", label="ADULT Adult")
    page.locator("#id_enrolled_on").press_sequentially(ui_date(enrolled_on))
    page.get_by_role("button", name="Enrol", exact=True).click()
    expect(success(page)).to_have_text(f"Enrol subject for {code}: saved.")
    expect(status_of(page)).to_have_text("Enrolled")
    expect(page.locator(".field-cohort .readonly")).to_have_text("ADULT Adult")
    expect(page.locator("td.field-status_change")).to_have_text(
            ["→ Screening", "Screening → Eligible", "Eligible → Enrolled"])

    subject = Subject.objects.get(code=code)
    assert subject.status == SubjectStatus.ENROLLED == "enrolled"
    assert subject.enrolled_on == enrolled_on
    assert [t.to_status for t in subject.transitions.order_by("recorded_at", "pk")] == [
        "screening", "eligible", "enrolled"]
