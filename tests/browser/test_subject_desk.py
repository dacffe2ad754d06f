"""The subject page as the coordinator's desk, in a real browser: from enrolment to the day-28 response with only
the page's buttons; a missed visit on the calendar; a frozen subject's forms read-only before anyone types.

Screenshots of the subject page and the lab plot page at 1,366 px are saved under var/test-artifacts/."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from playwright.sync_api import Page, expect

from assays.services import ResultIn, ingest_results
from locking.models import Level
from locking.services import lock_scope
from patients.models import AdverseEvent, ResponseAssessment, Subject, SubjectStatus
from patients.services import safety, treatment
from tests.browser.test_enrolment_flow import log_in, ui_date
from tests.desk_support import day, enrolled_before, infused_on
from tests.factories import days_ago
from trials.models import Visit

pytestmark = [
    pytest.mark.browser,
    pytest.mark.django_db(transaction=True),
    pytest.mark.usefixtures("restore_catalogue"),
    pytest.mark.filterwarnings("ignore:No directory at:UserWarning"),
]

ARTIFACTS = Path(settings.BASE_DIR) / "var" / "test-artifacts"
WIDE = {"width": 1366, "height": 900}


def screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.set_viewport_size(WIDE)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


def visits(world: Any) -> None:
    Visit.objects.create(trial=world.trial, code="D14", name="Day 14", target_day=14, window_before_days=1,
                         window_after_days=1, expected_assays=["CAR_QPCR"])
    Visit.objects.create(trial=world.trial, code="D28", name="Day 28 response", target_day=28, window_before_days=3,
                         window_after_days=3, expected_assays=["CRP", "CAR_QPCR"])


class Desk:
    """The subject page and its buttons."""

    def __init__(self, page: Page, base: str, subject: Subject) -> None:
        self.page, self.url = page, f"{base}/admin/patients/subject/{subject.pk}/change/"

    def press(self, action: str) -> None:
        self.page.goto(self.url)
        self.page.locator(f"a.next-action[data-action='{action}']").click()

    def save(self, name: str = "_save") -> None:
        self.page.click(f"input[name={name}]")
        expect(self.page.locator("ul.messagelist li.success")).to_be_visible()


def test_coordinator_takes_a_subject_from_enrolment_to_the_day_28_response(page: Page, live_server: Any,
                                                                           world: Any) -> None:
    visits(world)
    day0 = days_ago(28)
    subject = enrolled_before(world, day0)
    log_in(page, live_server.url, world.coordinator)
    desk = Desk(page, live_server.url, subject)

    desk.press("collection")
    page.fill("#id_collection_id", "AP-0001")
    page.fill("#id_collected_on", ui_date(day(day0, -50)))
    desk.save()

    desk.press("lot")
    expect(page.locator("#id_subject option:checked")).to_contain_text(subject.code)
    page.fill("#id_lot_number", "LOT-0001")
    desk.save()

    desk.press("lot-release")
    page.fill("#id_release_date", ui_date(day(day0, -40)))
    page.fill("#id_viability_pct", "92")
    page.fill("#id_car_positive_pct", "41")
    page.fill("#id_total_viable_car_cells", "210000000")
    page.select_option("#id_qc_pass", value="true")
    desk.save()

    desk.press("lymphodepletion")
    page.fill("#id_planned_infusion_on", ui_date(day0))
    desk.save()

    course = subject.ld_courses.get()
    for n, dose in enumerate(treatment.course_plan(course)):
        if n == 0:
            desk.press("doses")
        page.select_option(f"select[name$='-{n}-agent']", value=str(dose.agent.pk))
        page.fill(f"input[name$='-{n}-given_on']", ui_date(dose.planned_on))
        page.fill(f"input[name$='-{n}-administered_mg']", str(dose.planned_mg))
        desk.save("_continue")
    assert Subject.objects.get(pk=subject.pk).status == SubjectStatus.LYMPHODEPLETED

    desk.press("infusion")
    page.fill("#id_cells_per_kg", "1000000")
    page.fill("#id_infused_at_0", ui_date(day0))
    page.fill("#id_infused_at_1", "10:00")
    desk.save()

    desk.press("response-D28")
    expect(page.locator("#id_visit option:checked")).to_contain_text("D28")
    page.fill("#id_assessed_on", ui_date(days_ago(0)))
    page.select_option("#id_category", value=ResponseAssessment.Category.CR)
    page.fill("#id_marrow_blasts_pct", "1")
    desk.save()

    response = ResponseAssessment.objects.get(subject=subject)
    assert (response.visit.code, response.category) == ("D28", "cr")
    page.goto(desk.url)
    expect(page.locator(".field-status .readonly")).to_have_text("Follow-up")
    expect(page.locator("tr[data-visit='D28'][data-course='1'] .visit-state")).to_have_text("done")
    expect(page.locator("a.next-action[data-action='response-D28']")).to_have_count(0)
    expect(page.locator("#course a", has_text="Response")).to_have_count(1)
    screenshot(page, "subject-page-1366.png")

    ingest_results(by=world.coordinator, rows=[
        ResultIn(f"LIS-{n}", subject.code, f"ACC-{n}", specimen, dt.datetime.combine(day(day0, n), dt.time(8),
                                                                                     tzinfo=dt.UTC), code, value, unit)
        for n, (specimen, code, value, unit) in enumerate([
            ("serum", "CRP", "3", "mg/L"), ("pb", "CAR_QPCR", "900", "copies/ug"), ("serum", "CRP", "120", "mg/L"),
            ("pb", "ANC", "0.3", "10*9/L"), ("pb", "CAR_QPCR", "45000", "copies/ug"),
            ("pb", "CAR_QPCR", "8000", "copies/ug")], start=1)])
    safety.record_adverse_event(subject=subject, by=world.coordinator, data=safety.EventInput(
        category=AdverseEvent.Category.CRS, term="Cytokine release syndrome", onset_on=day(day0, 3),
        related_to_product="probable", related_to_lymphodepletion="not_related"))
    page.goto(desk.url)
    page.locator("a.subject-labs").click()
    expect(page.locator("#lab-results")).to_contain_text("HIGH")
    expect(page.locator("#lab-plot")).to_be_visible()
    assert page.locator("#lab-plot").evaluate("img => img.naturalWidth") > 0
    screenshot(page, "lab-plot-1366.png")


def test_visit_calendar_marks_a_missed_visit(page: Page, live_server: Any, world: Any) -> None:
    visits(world)
    subject = infused_on(world, days_ago(40))
    log_in(page, live_server.url, world.coordinator)
    page.goto(f"{live_server.url}/admin/patients/subject/{subject.pk}/change/")
    expect(page.locator("tr[data-visit='D14'] .visit-state")).to_have_text("missed")
    expect(page.locator("tr[data-visit='D14'] .visit-missing")).to_contain_text("CAR_QPCR")
    expect(page.locator("tr[data-visit='D28'] .visit-state")).to_have_text("overdue")
    page.goto(f"{live_server.url}/admin/")
    page.locator("a.visits-due-link").click()
    expect(page.locator(f"#visits-due tr[data-subject='{subject.code}'] .visit-state")).to_have_text("overdue")


def test_frozen_subjects_forms_are_read_only_before_typing(page: Page, live_server: Any, world: Any) -> None:
    subject = infused_on(world, days_ago(10))
    lock_scope(trial=world.trial, site=world.site_a, subject=subject, level=Level.FREEZE,
               reason="Source data verification visit", by=world.data_manager)
    log_in(page, live_server.url, world.coordinator)
    page.goto(f"{live_server.url}/admin/patients/subject/{subject.pk}/change/")
    expect(page.locator("#subject-state .state-lock")).to_contain_text("Source data verification visit")
    expect(page.locator("a.next-action")).to_have_count(0)
    expect(page.locator("#id_diagnosis")).to_have_count(0)  # characteristics shown, not editable

    page.goto(f"{live_server.url}/admin/patients/adverseevent/add/?subject={subject.pk}")
    expect(page.locator(".desk-lock")).to_contain_text("Source data verification visit")
    expect(page.locator("#id_term")).to_be_disabled()
    expect(page.locator("input[name=_save]")).to_have_count(0)

    page.goto(f"{live_server.url}/admin/patients/subject/{subject.pk}/change/")
    page.locator("a.subject-action[data-action='measurement']").click()
    expect(page.locator(".desk-lock")).to_contain_text("Source data verification visit")
    expect(page.locator("#id_weight_kg")).to_be_disabled()
    expect(page.locator("input[name=_save]")).to_have_count(0)
