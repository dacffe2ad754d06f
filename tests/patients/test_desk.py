"""The coordinator's desk: the visit-state rule, the visit calendar (site dates, expected assays), next actions,
the subject page's state and buttons, the per-site visits page and the lab results pages."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from assays.calendar import subject_calendar, visits_to_chase
from assays.services import ResultIn, ingest_results
from config.errors import StateConflict
from config.reads import shared, shared_reads
from locking.models import Level
from locking.services import lock_scope
from patients.desk import next_actions
from patients.models import AdverseEvent, ResponseAssessment, Subject
from patients.services import outcome, safety
from patients.timeline import DONE, DUE, MISSED, OVERDUE, UPCOMING, VisitDates, visit_state
from tests.desk_support import infused_on
from tests.factories import (
    apheresed_subject,
    days_ago,
    enrolled_subject,
    lymphodepleted_subject,
)
from trials.models import Visit

pytestmark = pytest.mark.django_db

D = dt.date(2026, 3, 10)
WINDOW = VisitDates(target=D, earliest=D - dt.timedelta(days=2), latest=D + dt.timedelta(days=3))


# --- the visit-state rule ------------------------------------------------------------------------


@pytest.mark.parametrize(("today", "done", "passed", "state"), [
    (WINDOW.earliest - dt.timedelta(days=1), False, False, UPCOMING),  # the day before the window opens
    (WINDOW.earliest, False, False, DUE),  # the window's first day
    (WINDOW.latest, False, False, DUE),  # its last day
    (WINDOW.latest + dt.timedelta(days=1), False, False, OVERDUE),  # the day after it closed
    (WINDOW.latest + dt.timedelta(days=1), False, True, MISSED),  # closed, and the next visit's window opened
    (WINDOW.earliest - dt.timedelta(days=5), True, False, DONE),  # recorded (early) counts as done
    (WINDOW.latest + dt.timedelta(days=30), True, True, DONE),
])
def test_visit_state(today: dt.date, done: bool, passed: bool, state: str) -> None:
    assert visit_state(WINDOW, today=today, done=done, passed=passed) == state


def d28(world: Any, **kwargs: Any) -> Visit:
    values = {"code": "D28", "name": "Day 28 response", "target_day": 28, "window_before_days": 2,
              "window_after_days": 2, "expected_assays": ["CRP", "CAR_QPCR"], **kwargs}
    return Visit.objects.create(trial=world.trial, **values)


def infused(world: Any, day0: dt.date) -> Subject:
    return infused_on(world, day0)


def state_of(subject: Subject, code: str, now: dt.datetime) -> Any:
    return next(v for v in subject_calendar(subject, now=now) if v.visit.code == code)


def test_window_closes_at_the_sites_midnight_not_utcs(world: Any) -> None:
    """Auckland is UTC+13 in its summer: at 12:00 UTC on the window's last day it is already the next day there."""
    world.site_a.time_zone = "Pacific/Auckland"
    world.site_a.save()
    day0 = dt.date(2025, 12, 1)
    d28(world)
    subject = infused(world, day0)
    last = day0 + dt.timedelta(days=30)
    assert state_of(subject, "D28", dt.datetime.combine(last, dt.time(10, 30), tzinfo=dt.UTC)).state == DUE
    assert state_of(subject, "D28", dt.datetime.combine(last, dt.time(11, 30), tzinfo=dt.UTC)).state == OVERDUE
    first = day0 + dt.timedelta(days=26)  # the day the window opens, from 11:00 UTC the day before in Auckland
    eve = dt.datetime.combine(first - dt.timedelta(days=1), dt.time(10, 30), tzinfo=dt.UTC)
    assert state_of(subject, "D28", eve).state == UPCOMING
    assert state_of(subject, "D28", eve + dt.timedelta(hours=1)).state == DUE


def test_calendar_marks_a_missed_visit_and_gives_site_dates(world: Any) -> None:
    day0 = days_ago(40)
    Visit.objects.create(trial=world.trial, code="D14", name="Day 14", target_day=14, window_before_days=1,
                         window_after_days=1)
    d28(world)
    subject = infused(world, day0)
    calendar = {v.visit.code: v for v in subject_calendar(subject)}
    assert calendar["D14"].state == MISSED  # nothing recorded, and D28's window has opened since
    assert calendar["D28"].state == OVERDUE
    assert calendar["D28"].dates == VisitDates(day0 + dt.timedelta(days=28), day0 + dt.timedelta(days=26),
                                               day0 + dt.timedelta(days=30))
    assert calendar["D28"].missing == ("CRP", "CAR_QPCR")


def test_a_lab_draw_in_the_window_makes_the_visit_done_and_flags_the_missing_assay(world: Any) -> None:
    day0 = days_ago(28)
    d28(world)
    subject = infused(world, day0)
    ingest_results(rows=[ResultIn(source_ref="LIS-1", subject=subject.code, accession_number="ACC-1", specimen="serum",
                                  collected_at=dt.datetime.combine(days_ago(0), dt.time(0, 5), tzinfo=dt.UTC),
                                  analyte="CRP", value="12", unit="mg/L")], by=world.coordinator)
    visit = state_of(subject, "D28", dt.datetime.now(dt.UTC))
    assert (visit.state, visit.missing) == (DONE, ("CAR_QPCR",))


def test_a_response_at_the_visit_makes_it_done(world: Any) -> None:
    visit = d28(world, expected_assays=[])
    subject = infused(world, days_ago(28))
    outcome.record_response(subject=subject, assessed_on=days_ago(0), category=ResponseAssessment.Category.NR,
                            visit=visit, by=world.coordinator)
    assert state_of(subject, "D28", dt.datetime.now(dt.UTC)).state == DONE


# --- next actions --------------------------------------------------------------------------------


def keys(subject: Subject) -> list[str]:
    return [a.key for a in next_actions(subject)]


def test_next_actions_follow_the_course(world: Any) -> None:
    people = {"coordinator": world.coordinator, "investigator": world.investigator, "trial": world.trial,
              "site": world.site_a}
    enrolled = enrolled_subject(**people)
    assert keys(enrolled)[:1] == ["collection"]
    assert not {"lot", "lymphodepletion", "infusion", "follow-up"} & set(keys(enrolled))
    apheresed = apheresed_subject(**people)
    assert "lot" in keys(apheresed) and "infusion" not in keys(apheresed)
    ready = lymphodepleted_subject(**people, day0=days_ago(1))
    infusion = next(a for a in next_actions(ready) if a.key == "infusion")
    assert infusion.initial == {"subject": ready.pk, "lot": ready.lots.get().pk,
                                "dose_level": world.trial.dose_levels.get().pk, "fraction_number": 1,
                                "planned_fractions": 1}
    assert "lymphodepletion" not in keys(ready)


def test_next_actions_after_infusion_offer_safety_follow_up_and_the_due_response(world: Any) -> None:
    visit = d28(world)
    subject = infused(world, days_ago(28))
    found = {a.key: a for a in next_actions(subject)}
    assert {"adverse-event", "crs", "icans", "follow-up", "response-D28"} <= set(found)
    assert found["response-D28"].initial == {"subject": subject.pk, "visit": visit.pk}
    assert "infusion" not in found and "collection" in found  # a second collection is allowed in follow-up
    outcome.record_response(subject=subject, assessed_on=days_ago(0), category=ResponseAssessment.Category.NR,
                            visit=visit, by=world.coordinator)
    assert "response-D28" not in keys(subject)


def test_an_open_crs_event_offers_its_assessment(world: Any) -> None:
    subject = infused(world, days_ago(5))
    event = safety.record_adverse_event(subject=subject, by=world.coordinator, data=safety.EventInput(
        category=AdverseEvent.Category.CRS, term="Cytokine release syndrome", onset_on=days_ago(3),
        related_to_product="probable", related_to_lymphodepletion="not_related"))
    found = {a.key: a for a in next_actions(subject)}
    assert found["crs-assessment"].object_id == event.pk


def test_a_frozen_subject_has_no_next_action(world: Any) -> None:
    subject = infused(world, days_ago(5))
    lock_scope(trial=world.trial, site=world.site_a, subject=subject, level=Level.FREEZE, reason="SDV visit",
               by=world.data_manager)
    assert next_actions(subject) == []


def reads_of(queries: CaptureQueriesContext, table: str) -> int:
    return sum(f'FROM "{table}"' in q["sql"] for q in queries.captured_queries)


def test_next_actions_read_the_subjects_consents_timeline_and_lock_once(world: Any) -> None:
    """Every rule the desk asks reads the consents, day 0s and lock; between them they read each once."""
    subject = infused(world, days_ago(28))
    d28(world)
    with CaptureQueriesContext(connection) as queries:
        found = keys(subject)
    assert {"adverse-event", "crs", "follow-up", "response-D28"} <= set(found)
    assert reads_of(queries, "patients_consent") == 1
    assert reads_of(queries, "locking_lock") == 1
    day0_reads = [q for q in queries.captured_queries if '"patients_infusion"."fraction_number" = 1' in q["sql"]]
    assert len(day0_reads) == 1


def test_shared_reads_end_with_the_desk_so_a_rule_guarding_a_write_reads_afresh(world: Any) -> None:
    """The desk offers a follow-up; a death recorded afterwards is seen by the next check (no stale answer)."""
    subject = infused(world, days_ago(5))
    assert "follow-up" in keys(subject) and "adverse-event" in keys(subject)
    outcome.record_follow_up(subject=subject, kind="death", event_on=days_ago(0), cause_of_death="Sepsis",
                             by=world.coordinator)
    subject.refresh_from_db()
    assert "follow-up" not in keys(subject)
    with pytest.raises(StateConflict):  # outside the desk, the rule reads the new state
        outcome.check_follow_up(subject=subject, kind="last_contact", event_on=days_ago(0), cause_of_death="")


def test_shared_reads_scope() -> None:
    calls: list[int] = []

    def read() -> int:
        calls.append(1)
        return len(calls)

    assert (shared("k", read), shared("k", read)) == (1, 2)  # outside: every call reads
    with shared_reads():
        assert (shared("k", read), shared("k", read)) == (3, 3)
        with shared_reads():  # a nested scope joins the outer one
            assert shared("k", read) == 3
        assert shared("other", read) == 4
    assert shared("k", read) == 5  # the answers end with the scope


# --- the admin pages -----------------------------------------------------------------------------


def test_subject_page_shows_state_buttons_calendar_and_linked_course(world: Any, login: Any) -> None:
    d28(world)
    subject = infused(world, days_ago(28))
    page = login(world.coordinator).get(reverse("admin:patients_subject_change", args=[subject.pk]))
    html = page.content.decode()
    assert page.status_code == 200
    assert 'data-action="response-D28"' in html
    assert f"/admin/patients/responseassessment/add/?subject={subject.pk}&amp;visit=" in html
    assert "0 open data queries" in html and "Open for data entry" in html
    assert 'class="visit-due" data-visit="D28"' in html
    infusion = subject.infusions.get()
    assert reverse("admin:patients_infusion_change", args=[infusion.pk]) in html


def test_frozen_subject_forms_are_read_only_with_the_reason(world: Any, login: Any) -> None:
    subject = infused(world, days_ago(5))
    lock_scope(trial=world.trial, site=world.site_a, subject=subject, level=Level.FREEZE, reason="Source data review",
               by=world.data_manager)
    client = login(world.coordinator)
    html = client.get(reverse("admin:patients_subject_change", args=[subject.pk])).content.decode()
    assert "Source data review" in html and "next-action" not in html
    add = client.get(f"{reverse('admin:patients_adverseevent_add')}?subject={subject.pk}").content.decode()
    assert "Source data review" in add and 'name="term"' in add and "disabled" in add
    assert 'name="_save"' not in add
    form = client.get(reverse("admin:patients_subject_action", args=[subject.pk, "measurement"])).content.decode()
    assert "Source data review" in form and 'name="_save"' not in form


def visits_page_queries(client: Any) -> tuple[int, str]:
    url = reverse("admin:patients_subject_visits_due")
    client.get(url)  # warm the session and content-type caches
    with CaptureQueriesContext(connection) as queries:
        page = client.get(url)
    return len(queries), page.content.decode()


def test_visits_page_queries_are_the_same_for_1_and_10_subjects(world: Any, login: Any) -> None:
    d28(world)
    infused(world, days_ago(28))
    client = login(world.coordinator)
    one, html = visits_page_queries(client)
    assert html.count('data-subject="SA-') == 1
    for _ in range(9):
        infused(world, days_ago(28))
    ten, html = visits_page_queries(client)
    assert html.count('data-subject="SA-') == 10
    assert ten == one


def test_visits_page_is_scoped_to_the_users_sites(world: Any) -> None:
    d28(world)
    infused(world, days_ago(28))
    assert [v.subject.code for v in visits_to_chase(user=world.coordinator)] == ["SA-0001"]
    assert visits_to_chase(user=world.coordinator_b) == []


def test_lab_results_table_and_plots(world: Any, login: Any) -> None:
    subject = infused(world, days_ago(10))
    safety.record_adverse_event(subject=subject, by=world.coordinator, data=safety.EventInput(
        category=AdverseEvent.Category.CRS, term="Cytokine release syndrome", onset_on=days_ago(8),
        related_to_product="probable", related_to_lymphodepletion="not_related"))
    rows = [ResultIn(source_ref=f"LIS-{n}", subject=subject.code, accession_number=f"ACC-{n}",
                     specimen="serum" if code == "CRP" else "pb",
                     collected_at=dt.datetime.combine(days_ago(9 - n), dt.time(8), tzinfo=dt.UTC), analyte=code,
                     value=value, unit=unit)
            for n, (code, value, unit) in enumerate([("CRP", "85", "mg/L"), ("CAR_QPCR", "12000", "{copies}/ug"),
                                                     ("ANC", "0.3", "10*9/L")])]
    ingest_results(rows=rows, by=world.coordinator)
    client = login(world.coordinator)
    html = client.get(reverse("admin:patients_subject_labs", args=[subject.pk])).content.decode()
    assert "ACC-0" in html and "HIGH" in html and "G4" in html
    png = client.get(reverse("admin:patients_subject_lab_plot", args=[subject.pk, "png"]))
    assert png["Content-Type"] == "image/png" and png.content.startswith(b"\x89PNG")
    svg = client.get(reverse("admin:patients_subject_lab_plot", args=[subject.pk, "svg"]))
    assert svg["Content-Type"] == "image/svg+xml" and b"<svg" in svg.content
    other = login(world.coordinator_b)
    assert other.get(reverse("admin:patients_subject_labs", args=[subject.pk])).status_code == 404
    assert other.get(reverse("admin:patients_subject_lab_plot", args=[subject.pk, "png"])).status_code == 404
