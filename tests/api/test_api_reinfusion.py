"""A second CAR-T course through the API: its lymphodepletion (with the doses in the same request), its
infusion, and records after it counted from the course's own day 0 (course day) as well as from the first
infusion (study day)."""

from __future__ import annotations

import datetime as dt

import pytest

from assays.models import LabDraw
from patients.models import LymphodepletionCourse, LymphodepletionDose, SubjectStatus
from tests.api.support import CALLERS, caller_for, post_json, post_results, result_row
from tests.factories import at, days_ago, reinfusable_subject, reinfuse
from trials.models import Visit

pytestmark = pytest.mark.django_db

COURSES, INFUSIONS, RESPONSES = "/api/v1/lymphodepletion-courses/", "/api/v1/infusions/", "/api/v1/responses/"
FIRST_DAY0, SECOND_DAY0 = days_ago(14), days_ago(8)


@pytest.fixture(params=CALLERS)
def caller(request, world):
    return caller_for(world, request.param)


@pytest.fixture
def relapsed(world):
    """Site A's subject infused 14 days ago, with a second lot released for a re-infusion."""
    return reinfusable_subject(trial=world.trial, site=world.site_a, coordinator=world.coordinator,
                               investigator=world.investigator, day0=FIRST_DAY0, lot_released_on=days_ago(12))


def doses_of(regimen, day0: dt.date, mg: dict[str, str]) -> list[dict[str, str]]:
    return [{"agent": agent.pk, "given_on": str(day0 + dt.timedelta(days=day)), "administered_mg": mg[agent.agent]}
            for agent in regimen.agents.order_by("pk") for day in agent.days]


PLANNED = {"fludarabine": "54.5", "cyclophosphamide": "454.5"}  # 1.818 m² (170 cm, 70 kg)


def second_course(caller, subject) -> dict:
    regimen = subject.trial.regimens.get()
    response = post_json(caller.client, COURSES, {"subject": subject.code, "regimen": regimen.pk,
                                                  "planned_infusion_on": str(SECOND_DAY0),
                                                  "doses": doses_of(regimen, SECOND_DAY0, PLANNED)})
    assert response.status_code == 201, response.json()
    return response.json()


def test_a_second_course_is_opened_with_its_doses_and_infused(world, caller, relapsed):
    course = second_course(caller, relapsed)
    assert course["course_number"] == 2
    assert sorted((d["day"], d["administered_mg"]) for d in course["doses"]) == sorted(
        (day, mg) for day in (-5, -4, -3) for mg in PLANNED.values())
    relapsed.refresh_from_db()
    assert relapsed.status == SubjectStatus.LYMPHODEPLETED

    infusion = post_json(caller.client, INFUSIONS, {
        "subject": relapsed.code, "lot": relapsed.lots.get(lot_number="LOT-R2").pk,
        "dose_level": relapsed.trial.dose_levels.get().pk, "cells_per_kg": "1000000",
        "infused_at": at(SECOND_DAY0).isoformat()})
    assert infusion.status_code == 201, infusion.json()
    body = infusion.json()
    assert (body["course_number"], body["fraction_number"], body["study_day"], body["course_day"]) == (2, 1, 6, 0)
    listed = caller.client.get(INFUSIONS, {"subject": relapsed.pk}).json()["results"]
    assert [(r["course_number"], r["study_day"], r["course_day"]) for r in listed] == [(1, 0, 0), (2, 6, 0)]


def test_a_course_whose_doses_break_a_rule_is_not_opened(world, caller, relapsed):
    regimen = relapsed.trial.regimens.get()
    doses = doses_of(regimen, SECOND_DAY0, PLANNED)
    doses[4]["given_on"] = str(SECOND_DAY0 - dt.timedelta(days=7))  # day -7 is not in the regimen
    response = post_json(caller.client, COURSES, {"subject": relapsed.code, "regimen": regimen.pk,
                                                  "planned_infusion_on": str(SECOND_DAY0), "doses": doses})
    assert response.status_code == 400, response.json()
    assert response.json()["code"] == "day_not_in_regimen"
    assert list(response.json()["field_errors"]) == ["doses[4].given_on"]
    assert not LymphodepletionCourse.objects.filter(subject=relapsed, course_number=2).exists()
    assert not LymphodepletionDose.objects.filter(course__subject=relapsed, course__course_number=2).exists()
    relapsed.refresh_from_db()
    assert relapsed.status == SubjectStatus.FOLLOW_UP


def test_doses_of_an_open_course_are_recorded_in_one_request_all_or_nothing(world, caller, relapsed):
    regimen = relapsed.trial.regimens.get()
    course = post_json(caller.client, COURSES, {"subject": relapsed.code, "regimen": regimen.pk,
                                                "planned_infusion_on": str(SECOND_DAY0)}).json()
    url = f"{COURSES}{course['id']}/doses/"
    doses = doses_of(regimen, SECOND_DAY0, PLANNED)
    empty = post_json(caller.client, url, [])
    assert (empty.status_code, empty.json()["code"], list(empty.json()["field_errors"])) == (400, "no_doses", ["doses"])
    unknown_agent = post_json(caller.client, url, [{**doses[0], "agent": "busulfan"}])
    assert unknown_agent.status_code == 400 and "agent" in str(unknown_agent.json()["field_errors"])
    refused = post_json(caller.client, url, [*doses[:-1], {**doses[-1], "administered_mg": "900.0"}])
    assert refused.status_code == 400, refused.json()
    assert (refused.json()["code"], list(refused.json()["field_errors"])) == (
        "dose_deviation_needs_reason", ["doses[5].deviation_reason"])
    assert not LymphodepletionDose.objects.filter(course_id=course["id"]).exists()

    recorded = post_json(caller.client, url, doses)
    assert recorded.status_code == 201, recorded.json()
    assert len(recorded.json()) == 6
    assert LymphodepletionDose.objects.filter(course_id=course["id"]).count() == 6
    relapsed.refresh_from_db()
    assert relapsed.status == SubjectStatus.LYMPHODEPLETED
    again = post_json(caller.client, url, doses[:1])
    assert again.status_code == 409 and again.json()["code"] == "dose_already_recorded"


def reinfused(world, subject) -> None:
    reinfuse(subject, by=world.coordinator, day0=SECOND_DAY0)


def test_a_visit_after_the_second_infusion_is_counted_from_that_course(world, caller, relapsed):
    visit = Visit.objects.create(trial=world.trial, code="D7", name="Day 7", target_day=7, window_before_days=1,
                                 window_after_days=1)
    reinfused(world, relapsed)
    on = SECOND_DAY0 + dt.timedelta(days=7)  # study day 13: outside D7 if counted from the first infusion
    response = post_json(caller.client, RESPONSES, {"subject": relapsed.code, "visit": visit.pk,
                                                    "assessed_on": str(on), "category": "nr"})
    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["study_day"], body["course_number"], body["course_day"]) == (13, 2, 7)

    late = post_json(caller.client, RESPONSES, {"subject": relapsed.code, "visit": visit.pk,
                                                "assessed_on": str(on - dt.timedelta(days=3)), "category": "nr"})
    assert late.status_code == 400
    assert late.json()["code"] == "outside_visit_window"
    assert "day 4 of course 2" in late.json()["field_errors"]["assessed_on"][0]


def test_lab_draws_after_a_reinfusion_know_their_course_and_visit(world, lab, relapsed):
    Visit.objects.create(trial=world.trial, code="D3", name="Day 3 labs", target_day=3, window_before_days=0,
                         window_after_days=0)
    reinfused(world, relapsed)
    drawn = {"C1-D3": FIRST_DAY0 + dt.timedelta(3), "C2-D3": SECOND_DAY0 + dt.timedelta(3),
             "C2-D4": SECOND_DAY0 + dt.timedelta(4)}
    rows = [result_row(relapsed, n, accession_number=accession, collected_at=at(day).isoformat())
            for n, (accession, day) in enumerate(drawn.items(), start=1)]
    response = post_results(lab, {"results": rows})
    assert response.status_code == 201, response.json()
    visits = dict(LabDraw.objects.filter(subject=relapsed).values_list("accession_number", "visit__code"))
    assert visits == {"C1-D3": "D3", "C2-D3": "D3", "C2-D4": None}
    draws = lab.get("/api/v1/lab-draws/", {"page_size": 50}).json()["results"]
    assert sorted((d["accession_number"], d["visit"], d["study_day"], d["course_number"], d["course_day"])
                  for d in draws) == [("C1-D3", "D3", 3, 1, 3), ("C2-D3", "D3", 9, 2, 3), ("C2-D4", None, 10, 2, 4)]
    results = lab.get("/api/v1/results/", {"page_size": 50}).json()["results"]
    assert sorted((r["source_ref"], r["course_number"], r["course_day"]) for r in results) == [
        ("LIS-1", 1, 3), ("LIS-2", 2, 3), ("LIS-3", 2, 4)]
