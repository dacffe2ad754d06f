"""Success paths of the treatment writes: a lymphodepletion course and its doses, and CAR-T infusions given
whole or split into fractions. Each is posted by site A's coordinator (session) and by site A's system
token, stored through the service (values, status, ``recorded_by``) and read back by detail and list."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from patients.models import Infusion, LymphodepletionCourse, LymphodepletionDose, SubjectStatus
from patients.services import treatment
from tests.api.support import CALLERS, caller_for, post_json, read_back
from tests.factories import apheresed_subject, at, days_ago, lymphodepleted_subject, released_lot

pytestmark = pytest.mark.django_db

COURSES, INFUSIONS = "/api/v1/lymphodepletion-courses/", "/api/v1/infusions/"
# 170 cm and 70 kg (the factories' measurement): Mosteller sqrt(170 × 70 / 3600) = 1.818 m²,
# so fludarabine 30 mg/m² is 54.5 mg and cyclophosphamide 250 mg/m² is 454.5 mg a day.
PLANNED_MG = {"fludarabine": "54.5", "cyclophosphamide": "454.5"}


@pytest.fixture(params=CALLERS)
def caller(request, world):
    return caller_for(world, request.param)


def ready_for_lymphodepletion(world):
    subject = apheresed_subject(trial=world.trial, site=world.site_a, coordinator=world.coordinator,
                                investigator=world.investigator)
    released_lot(subject=subject, coordinator=world.coordinator)
    return subject


def ready_for_infusion(world, day0):
    return lymphodepleted_subject(trial=world.trial, site=world.site_a, coordinator=world.coordinator,
                                  investigator=world.investigator, day0=day0)


# --- lymphodepletion ------------------------------------------------------------------------------


def test_starts_a_lymphodepletion_course(world, caller):
    subject = ready_for_lymphodepletion(world)
    regimen = world.trial.regimens.get()
    response = post_json(caller.client, COURSES, {"subject": subject.code, "regimen": "FC",
                                                  "planned_infusion_on": str(days_ago(5))})
    assert response.status_code == 201, response.json()
    created = response.json()
    assert created == {"id": created["id"], "subject": subject.code, "course_number": 1, "regimen": "FC",
                       "planned_infusion_on": str(days_ago(5)), "bsa_formula": "mosteller", "bsa_m2": "1.818",
                       "measurement": subject.measurements.get().pk, "doses": [], "plan": created["plan"]}
    assert [(p["agent"], p["day"], p["planned_on"], p["planned_mg"]) for p in created["plan"]] == [
        (agent, day, str(days_ago(5 - day)), PLANNED_MG[agent])
        for day in (-5, -4, -3) for agent in ("cyclophosphamide", "fludarabine")]
    course = LymphodepletionCourse.objects.get(pk=created["id"])
    assert (course.subject_id, course.course_number, course.regimen_id, course.planned_infusion_on) == (
        subject.pk, 1, regimen.pk, days_ago(5))
    assert (course.bsa_formula, course.bsa_m2, course.recorded_by) == ("mosteller", Decimal("1.818"), caller.user)
    assert read_back(caller.client, COURSES, course.pk) == created
    subject.refresh_from_db()
    assert subject.status == SubjectStatus.APHERESED  # a course without doses changes nothing yet


def test_course_stores_the_requested_bsa_formula(world):
    subject = ready_for_lymphodepletion(world)
    client, _user = caller_for(world, "coordinator")
    response = post_json(client, COURSES, {"subject": subject.code, "regimen": world.trial.regimens.get().pk,
                                           "planned_infusion_on": str(days_ago(5)), "bsa_formula": "dubois"})
    assert response.status_code == 201, response.json()
    # DuBois: 0.007184 × 70^0.425 × 170^0.725 = 1.810 m² (Mosteller gives 1.818).
    assert (response.json()["bsa_formula"], response.json()["bsa_m2"]) == ("dubois", "1.810")
    course = LymphodepletionCourse.objects.get(pk=response.json()["id"])
    assert (course.bsa_formula, course.bsa_m2) == ("dubois", Decimal("1.810"))


def test_records_every_dose_and_the_last_completes_lymphodepletion(world, caller):
    subject = ready_for_lymphodepletion(world)
    regimen = world.trial.regimens.get()
    day0 = days_ago(5)
    course = treatment.start_lymphodepletion(subject=subject, regimen=regimen, planned_infusion_on=day0,
                                             by=world.coordinator)
    url = f"{COURSES}{course.pk}/doses/"
    plan = sorted(((day, agent) for agent in regimen.agents.all() for day in agent.days),
                  key=lambda item: (item[0], item[1].agent))
    posted = []
    for n, (day, agent) in enumerate(plan):
        planned = PLANNED_MG[agent.agent]
        # Day -5 fludarabine is rounded up to a whole vial: 60.0 mg is outside 54.5 ± 10%, so it carries a reason.
        deviates = (agent.agent, day) == ("fludarabine", -5)
        administered, reason = ("60.0", "Rounded up to a whole vial") if deviates else (planned, "")
        given_on = day0 + dt.timedelta(days=day)
        response = post_json(caller.client, url, {"agent": agent.agent, "given_on": str(given_on),
                                                  "administered_mg": administered, "deviation_reason": reason})
        assert response.status_code == 201, response.json()
        body = response.json()
        assert body == {"id": body["id"], "agent": agent.agent, "day": day, "given_on": str(given_on),
                        "planned_mg": planned, "administered_mg": administered, "deviation_reason": reason}
        dose = LymphodepletionDose.objects.get(pk=body["id"])
        assert (dose.course_id, dose.agent_id, dose.day, dose.given_on) == (course.pk, agent.pk, day, given_on)
        assert (dose.planned_mg, dose.administered_mg, dose.recorded_by) == (Decimal(planned), Decimal(administered),
                                                                             caller.user)
        subject.refresh_from_db()
        last = n == len(plan) - 1
        assert subject.status == (SubjectStatus.LYMPHODEPLETED if last else SubjectStatus.APHERESED)
        posted.append(body)
    assert len(posted) == 6 and posted[0]["agent"] != posted[1]["agent"]  # Flu and Cy on each of days -5..-3
    assert [d["deviation_reason"] != "" for d in posted] == [False, True, False, False, False, False]
    assert posted[0]["day"] == -5 and posted[-1]["day"] == -3
    transition = subject.transitions.order_by("-recorded_at", "-pk").first()
    assert (transition.to_status, transition.effective_on, transition.recorded_by) == (
        SubjectStatus.LYMPHODEPLETED, day0 - dt.timedelta(days=3), caller.user)
    detail = read_back(caller.client, COURSES, course.pk)
    assert sorted(detail["doses"], key=lambda d: d["id"]) == sorted(posted, key=lambda d: d["id"])
    assert detail["bsa_m2"] == "1.818"


# --- infusion -------------------------------------------------------------------------------------


def _infusion(subject, *, infused_at, cells_per_kg, fraction=None, planned=None):
    body = {"subject": subject.code, "lot": subject.lots.get().pk, "dose_level": subject.trial.dose_levels.get().pk,
            "infused_at": infused_at.isoformat(), "cells_per_kg": cells_per_kg}
    if fraction is not None:
        body |= {"fraction_number": fraction, "planned_fractions": planned}
    return body


def _check_stored(body, *, user, infused_at):
    infusion = Infusion.objects.get(pk=body["id"])
    assert dt.datetime.fromisoformat(body["infused_at"]) == infused_at == infusion.infused_at
    assert str(infusion.infused_on) == body["infused_on"]
    assert (infusion.cells_per_kg, infusion.weight_kg, infusion.total_cells) == (
        Decimal(body["cells_per_kg"]), Decimal("70.0"), Decimal(body["cells_per_kg"]) * 70)
    assert (infusion.fraction_number, infusion.planned_fractions, infusion.recorded_by) == (
        body["fraction_number"], body["planned_fractions"], user)
    return infusion


def test_records_a_single_infusion(world, caller):
    day0 = days_ago(5)  # lymphodepletion ended on day -3, within the 2-7 day window
    subject = ready_for_infusion(world, day0)
    response = post_json(caller.client, INFUSIONS, _infusion(subject, infused_at=at(day0), cells_per_kg="1000000"))
    assert response.status_code == 201, response.json()
    created = response.json()
    expected = {"id": created["id"], "subject": subject.code, "lot": subject.lots.get().lot_number,
                "dose_level": "DL1", "course_number": 1, "fraction_number": 1,
                "planned_fractions": 1, "infused_at": created["infused_at"], "infused_on": str(day0),
                "cells_per_kg": "1000000", "weight_kg": "70.0", "total_cells": "70000000"}
    assert {k: v for k, v in created.items() if k not in ("study_day", "course_day")} == expected
    _check_stored(created, user=caller.user, infused_at=at(day0))
    subject.refresh_from_db()
    assert subject.status == SubjectStatus.FOLLOW_UP  # one planned fraction: infused, then follow-up
    assert list(subject.transitions.order_by("recorded_at", "pk").values_list("to_status", flat=True))[-2:] == [
        SubjectStatus.INFUSED, SubjectStatus.FOLLOW_UP]
    assert read_back(caller.client, INFUSIONS, created["id"]) == {**expected, "study_day": 0, "course_day": 0}


def test_records_a_split_dose_fraction_by_fraction(world, caller):
    day0 = days_ago(5)
    subject = ready_for_infusion(world, day0)
    first = post_json(caller.client, INFUSIONS, _infusion(subject, infused_at=at(day0), cells_per_kg="600000",
                                                          fraction=1, planned=2))
    assert first.status_code == 201, first.json()
    assert (first.json()["fraction_number"], first.json()["planned_fractions"]) == (1, 2)
    assert (first.json()["total_cells"], first.json()["infused_on"]) == ("42000000", str(day0))
    _check_stored(first.json(), user=caller.user, infused_at=at(day0))
    subject.refresh_from_db()
    assert subject.status == SubjectStatus.INFUSED  # one fraction still to come

    second = post_json(caller.client, INFUSIONS, _infusion(subject, infused_at=at(day0 + dt.timedelta(days=1), 9),
                                                           cells_per_kg="400000", fraction=2, planned=2))
    assert second.status_code == 201, second.json()
    assert (second.json()["fraction_number"], second.json()["course_number"]) == (2, 1)
    assert (second.json()["total_cells"], second.json()["infused_on"]) == ("28000000", str(day0 + dt.timedelta(1)))
    _check_stored(second.json(), user=caller.user, infused_at=at(day0 + dt.timedelta(days=1), 9))
    subject.refresh_from_db()
    assert subject.status == SubjectStatus.FOLLOW_UP
    assert sum(subject.infusions.values_list("cells_per_kg", flat=True)) == Decimal(1_000_000)

    rows = caller.client.get(INFUSIONS, {"subject": subject.pk}).json()["results"]
    assert [(r["id"], r["fraction_number"], r["study_day"]) for r in rows] == [
        (first.json()["id"], 1, 0), (second.json()["id"], 2, 1)]  # day 0 is the first fraction
    assert read_back(caller.client, INFUSIONS, second.json()["id"])["study_day"] == 1


def test_infusion_created_body_reports_its_study_day(world):
    day0 = days_ago(5)
    subject = ready_for_infusion(world, day0)
    client, _user = caller_for(world, "coordinator")
    response = post_json(client, INFUSIONS, _infusion(subject, infused_at=at(day0), cells_per_kg="1000000"))
    assert response.status_code == 201, response.json()
    assert response.json()["study_day"] == 0
