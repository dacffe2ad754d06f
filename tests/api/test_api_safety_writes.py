"""Success paths of the safety writes: adverse events (CTCAE, CRS, ICANS) and the CRS and ICANS assessments
whose ASTCT grades the service derives. Each is posted by site A's coordinator (session) and by site A's
system token; the derived grade, the event's episode grade and ``recorded_by`` are checked in the response
and the database, and the event is read back by detail and list."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from patients.models import AdverseEvent, ConcomitantMedication, CrsAssessment, IcansAssessment
from patients.services import safety
from tests.api.support import CALLERS, caller_for, post_json, read_back
from tests.factories import at, days_ago, infused_subject

pytestmark = pytest.mark.django_db

EVENTS = "/api/v1/adverse-events/"
ASTCT = "ASTCT 2019"


@pytest.fixture(params=CALLERS)
def caller(request, world):
    return caller_for(world, request.param)


@pytest.fixture
def subject(world):
    """Site A's subject, infused five days ago (adult: age 30 at consent, so ICANS is graded by ICE)."""
    return infused_subject(trial=world.trial, site=world.site_a, coordinator=world.coordinator,
                           investigator=world.investigator)


def _event_body(subject, **fields):
    return {"subject": subject.code, "onset_on": str(days_ago(2)), "related_to_product": "probable",
            "related_to_lymphodepletion": "unlikely", **fields}


def _astct_event(world, subject, category, term):
    return safety.record_adverse_event(subject=subject, by=world.coordinator, data=safety.EventInput(
        category=category, term=term, onset_on=days_ago(2), related_to_product="probable",
        related_to_lymphodepletion="unlikely"))


def _event_grade(client, event_pk):
    return read_back(client, EVENTS, event_pk)["grade"]


# --- adverse events ---------------------------------------------------------------------------------


def test_records_a_serious_ctcae_event_with_its_report_due_time(world, caller, subject):
    aware = at(days_ago(2), 8)
    response = post_json(caller.client, EVENTS, _event_body(
        subject, category="ctcae", term="Febrile neutropenia", meddra_code="10016288", grade=3, serious=True,
        sae_hospitalisation=True, site_aware_at=aware.isoformat(), action_taken="dose_not_changed"))
    assert response.status_code == 201, response.json()
    created = response.json()
    assert {k: created[k] for k in ("subject", "category", "term", "meddra_code", "grade", "grade_scale", "serious",
                                    "sae_hospitalisation", "sae_death", "outcome", "action_taken", "onset_on")} == {
        "subject": subject.code, "category": "ctcae", "term": "Febrile neutropenia", "meddra_code": "10016288",
        "grade": 3, "grade_scale": "CTCAE v5.0", "serious": True, "sae_hospitalisation": True, "sae_death": False,
        "outcome": "not_recovered", "action_taken": "dose_not_changed", "onset_on": str(days_ago(2))}
    # The trial's default expedited-report window is 24 hours from the site's awareness.
    assert dt.datetime.fromisoformat(created["report_due_at"]) == aware + dt.timedelta(hours=24)
    event = AdverseEvent.objects.get(pk=created["id"])
    assert (event.subject_id, event.term, event.grade, event.grade_scale, event.recorded_by) == (
        subject.pk, "Febrile neutropenia", 3, "CTCAE v5.0", caller.user)
    assert (event.site_aware_at, event.report_due_at) == (aware, aware + dt.timedelta(hours=24))
    assert (event.related_to_product, event.related_to_lymphodepletion) == ("probable", "unlikely")
    assert read_back(caller.client, EVENTS, event.pk) == created


@pytest.mark.parametrize(("category", "term"), [("crs", "Cytokine release syndrome"),
                                                ("icans", "Immune effector cell-associated neurotoxicity")])
def test_records_an_astct_event_whose_grade_waits_for_assessments(world, caller, subject, category, term):
    response = post_json(caller.client, EVENTS, _event_body(subject, category=category, term=term))
    assert response.status_code == 201, response.json()
    created = response.json()
    assert (created["category"], created["grade"], created["grade_scale"], created["report_due_at"]) == (
        category, 0, ASTCT, None)
    event = AdverseEvent.objects.get(pk=created["id"])
    assert (event.category, event.grade, event.grade_scale, event.recorded_by) == (category, 0, ASTCT, caller.user)
    assert read_back(caller.client, EVENTS, event.pk) == created


# --- CRS --------------------------------------------------------------------------------------------


def test_crs_assessments_derive_the_astct_grade_and_raise_the_event_grade(world, caller, subject):
    event = _astct_event(world, subject, "crs", "Cytokine release syndrome")
    url = f"{EVENTS}{event.pk}/crs-assessments/"
    # ASTCT's own worked example: 39.5 °C, one vasopressor and a low-flow nasal cannula is grade 3.
    first = post_json(caller.client, url, {"assessed_at": at(days_ago(1), 2).isoformat(), "max_temp_c": "39.5",
                                           "hypotension": True, "vasopressors": ["norepinephrine"],
                                           "o2_device": "low_flow_nc", "o2_flow_lpm": "2.0"})
    assert first.status_code == 201, first.json()
    body = first.json()
    assert {k: body[k] for k in ("event", "derived_grade", "algorithm", "flags", "override_grade", "max_temp_c",
                                 "hypotension", "vasopressors", "o2_device", "o2_flow_lpm",
                                 "prior_antipyretic_or_anticytokine")} == {
        "event": event.pk, "derived_grade": 3, "algorithm": ASTCT, "flags": [], "override_grade": None,
        "max_temp_c": "39.5", "hypotension": True, "vasopressors": ["norepinephrine"], "o2_device": "low_flow_nc",
        "o2_flow_lpm": "2.0", "prior_antipyretic_or_anticytokine": False}
    assessment = CrsAssessment.objects.get(pk=body["id"])
    assert (assessment.event_id, assessment.derived_grade, assessment.grade, assessment.recorded_by) == (
        event.pk, 3, 3, caller.user)
    assert (assessment.max_temp_c, assessment.vasopressors, assessment.o2_flow_lpm) == (
        Decimal("39.5"), ["norepinephrine"], Decimal("2.0"))
    event.refresh_from_db()
    assert event.grade == 3
    assert _event_grade(caller.client, event.pk) == 3

    # Fever alone later on is grade 1: the episode keeps its worst grade.
    later = post_json(caller.client, url, {"assessed_at": at(days_ago(1), 8).isoformat(), "max_temp_c": "38.2"})
    assert later.status_code == 201, later.json()
    assert later.json()["derived_grade"] == 1
    event.refresh_from_db()
    assert (event.grade, event.crsassessments.count()) == (3, 2)
    assert _event_grade(caller.client, event.pk) == 3

    # An investigator's override (with its reason) counts instead of the derived grade.
    override = post_json(caller.client, url, {"assessed_at": at(days_ago(1), 12).isoformat(), "max_temp_c": "39.0",
                                              "hypotension": True, "vasopressors": ["norepinephrine"],
                                              "override_grade": 4, "override_reason": "Pressor dose escalating"})
    assert override.status_code == 201, override.json()
    assert (override.json()["derived_grade"], override.json()["override_grade"]) == (3, 4)
    stored = CrsAssessment.objects.get(pk=override.json()["id"])
    assert (stored.derived_grade, stored.override_grade, stored.override_reason) == (3, 4, "Pressor dose escalating")
    event.refresh_from_db()
    assert event.grade == 4
    assert _event_grade(caller.client, event.pk) == 4


def test_tocilizumab_given_before_masks_fever_in_the_crs_grade(world, caller, subject):
    event = _astct_event(world, subject, "crs", "Cytokine release syndrome")
    given = post_json(caller.client, "/api/v1/medications/", {
        "subject": subject.code, "adverse_event": event.pk, "drug": "tocilizumab", "dose": "8",
        "dose_unit": "mg/kg", "route": "iv", "given_at": at(days_ago(1), 1).isoformat(), "indication": "CRS"})
    assert given.status_code == 201, given.json()
    medication = ConcomitantMedication.objects.get(pk=given.json()["id"])
    assert (medication.adverse_event_id, medication.drug, medication.dose, medication.recorded_by) == (
        event.pk, "tocilizumab", Decimal("8.000"), caller.user)
    # No fever after tocilizumab; hypotension on fluids alone is grade 2, flagged for review.
    response = post_json(caller.client, f"{EVENTS}{event.pk}/crs-assessments/", {
        "assessed_at": at(days_ago(1), 3).isoformat(), "max_temp_c": "37.2", "hypotension": True})
    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["derived_grade"], body["flags"], body["prior_antipyretic_or_anticytokine"]) == (
        2, ["fever_requirement_met_by_prior_therapy"], True)
    stored = CrsAssessment.objects.get(pk=body["id"])
    assert (stored.derived_grade, stored.prior_antipyretic_or_anticytokine, stored.flags) == (
        2, True, ["fever_requirement_met_by_prior_therapy"])
    assert _event_grade(caller.client, event.pk) == 2


# --- ICANS ------------------------------------------------------------------------------------------

ICE_FIVE = {"orientation_year": True, "orientation_month": True, "orientation_city": False,
            "orientation_hospital": False, "objects_named": 2, "follows_commands": True, "writes_sentence": False,
            "counts_backwards": False}  # 2 + 2 + 1 = 5 of 10
ICE_TEN = {**ICE_FIVE, "orientation_city": True, "orientation_hospital": True, "objects_named": 3,
           "writes_sentence": True, "counts_backwards": True}


def test_icans_assessments_derive_the_grade_from_ice_and_the_worst_domain(world, caller, subject):
    event = _astct_event(world, subject, "icans", "Immune effector cell-associated neurotoxicity")
    url = f"{EVENTS}{event.pk}/icans-assessments/"
    # ICE 5 (3-6) is grade 2.
    first = post_json(caller.client, url, {"assessed_at": at(days_ago(1), 2).isoformat(), **ICE_FIVE})
    assert first.status_code == 201, first.json()
    body = first.json()
    assert {k: body[k] for k in ("event", "ice_score", "derived_grade", "algorithm", "flags", "consciousness",
                                 "seizure", "objects_named", "orientation_city")} == {
        "event": event.pk, "ice_score": 5, "derived_grade": 2, "algorithm": ASTCT, "flags": [],
        "consciousness": "alert", "seizure": "none", "objects_named": 2, "orientation_city": False}
    assessment = IcansAssessment.objects.get(pk=body["id"])
    assert (assessment.ice_score, assessment.derived_grade, assessment.recorded_by) == (5, 2, caller.user)
    event.refresh_from_db()
    assert event.grade == 2
    assert _event_grade(caller.client, event.pk) == 2

    # A normal ICE but a rapidly resolving seizure: the worst domain (seizure) makes it grade 3.
    seizure = post_json(caller.client, url, {"assessed_at": at(days_ago(1), 9).isoformat(), **ICE_TEN,
                                             "seizure": "rapidly_resolving"})
    assert seizure.status_code == 201, seizure.json()
    assert (seizure.json()["ice_score"], seizure.json()["derived_grade"]) == (10, 3)
    stored = IcansAssessment.objects.get(pk=seizure.json()["id"])
    assert (stored.ice_score, stored.seizure, stored.derived_grade) == (10, "rapidly_resolving", 3)
    event.refresh_from_db()
    assert (event.grade, event.icansassessments.count()) == (3, 2)
    assert _event_grade(caller.client, event.pk) == 3
