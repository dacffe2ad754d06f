"""Success paths of the outcome writes: response assessments (at a protocol visit, MRD-negative remission,
relapse with antigen escape) and follow-up (HSCT, last contact, death). Each is posted by site A's
coordinator (session) and by site A's system token, stored through the service and read back."""

from __future__ import annotations

from decimal import Decimal

import pytest

from patients.models import FollowUp, OffStudyReason, ResponseAssessment, SubjectStatus
from patients.services import outcome
from tests.api.support import CALLERS, caller_for, post_json, read_back
from tests.factories import days_ago, infused_subject
from trials.models import Visit

pytestmark = pytest.mark.django_db

RESPONSES, FOLLOW_UPS = "/api/v1/responses/", "/api/v1/follow-ups/"
RESPONSE_DEFAULTS = {"visit": None, "marrow_blasts_pct": None, "mrd_flow_pct": None, "mrd_sensitivity_pct": None,
                     "bcr_abl1_is_pct": None, "extramedullary_status": "not_assessed", "cns_status": "unknown",
                     "antigen_status": None}  # a blank choice is null


@pytest.fixture(params=CALLERS)
def caller(request, world):
    return caller_for(world, request.param)


@pytest.fixture
def subject(world):
    """Site A's subject, infused five days ago (day 0 = days_ago(5))."""
    return infused_subject(trial=world.trial, site=world.site_a, coordinator=world.coordinator,
                           investigator=world.investigator)


# --- responses --------------------------------------------------------------------------------------


def test_records_an_mrd_negative_remission_at_a_protocol_visit(world, caller, subject):
    # Protocol design data (a data manager's admin entry): an early marrow at day 3, window -1/+1.
    visit = Visit.objects.create(trial=world.trial, code="D3", name="Day 3 marrow", target_day=3,
                                 window_before_days=1, window_after_days=1)
    payload = {"subject": subject.code, "visit": "D3", "assessed_on": str(days_ago(2)), "category": "cr_mrd_neg",
               "marrow_blasts_pct": "0.50", "mrd_flow_pct": "0.001000", "mrd_sensitivity_pct": "0.000100",
               "extramedullary_status": "none", "cns_status": "CNS1"}
    response = post_json(caller.client, RESPONSES, payload)
    assert response.status_code == 201, response.json()
    created = response.json()
    on_study = {"study_day": 3, "course_number": 1, "course_day": 3}  # day 0 was five days ago
    assert created == {**RESPONSE_DEFAULTS, **payload, **on_study, "id": created["id"]}
    stored = ResponseAssessment.objects.get(pk=created["id"])
    assert (stored.subject_id, stored.visit_id, stored.assessed_on, stored.category) == (
        subject.pk, visit.pk, days_ago(2), "cr_mrd_neg")
    assert (stored.marrow_blasts_pct, stored.mrd_flow_pct, stored.recorded_by) == (
        Decimal("0.5"), Decimal("0.001"), caller.user)
    assert read_back(caller.client, RESPONSES, stored.pk) == created


def test_records_a_relapse_with_antigen_escape_after_remission(world, caller, subject):
    remission = post_json(caller.client, RESPONSES, {"subject": subject.code, "assessed_on": str(days_ago(3)),
                                                     "category": "cr", "marrow_blasts_pct": "1.00"})
    assert remission.status_code == 201, remission.json()
    relapse = post_json(caller.client, RESPONSES, {"subject": subject.code, "assessed_on": str(days_ago(1)),
                                                   "category": "relapse", "marrow_blasts_pct": "22.00",
                                                   "antigen_status": "negative"})
    assert relapse.status_code == 201, relapse.json()
    body = relapse.json()
    assert (body["category"], body["antigen_status"], body["marrow_blasts_pct"], body["visit"]) == (
        "relapse", "negative", "22.00", None)
    stored = ResponseAssessment.objects.get(pk=body["id"])
    assert (stored.category, stored.antigen_status, stored.marrow_blasts_pct, stored.recorded_by) == (
        "relapse", "negative", Decimal("22"), caller.user)
    assert read_back(caller.client, RESPONSES, stored.pk) == body
    rows = caller.client.get(RESPONSES, {"subject": subject.pk}).json()["results"]
    assert [(r["id"], r["category"]) for r in rows] == [(remission.json()["id"], "cr"), (body["id"], "relapse")]
    assert caller.client.get(RESPONSES, {"category": "relapse"}).json()["count"] == 1


# --- follow-up --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "detail"), [("last_contact", "Seen in clinic, well"),
                                              ("allo_hsct", "Consolidative haplo-HSCT")])
def test_records_follow_up_that_keeps_the_subject_on_study(world, caller, subject, kind, detail):
    response = post_json(caller.client, FOLLOW_UPS, {"subject": subject.code, "kind": kind,
                                                     "event_on": str(days_ago(1)), "detail": detail})
    assert response.status_code == 201, response.json()
    created = response.json()
    assert created == {"id": created["id"], "subject": subject.code, "kind": kind, "event_on": str(days_ago(1)),
                       "cause_of_death": "", "cause_of_death_unknown": False, "detail": detail, "study_day": 4,
                       "course_number": 1, "course_day": 4}
    stored = FollowUp.objects.get(pk=created["id"])
    assert (stored.subject_id, stored.kind, stored.event_on, stored.detail, stored.recorded_by) == (
        subject.pk, kind, days_ago(1), detail, caller.user)
    subject.refresh_from_db()
    assert subject.status == SubjectStatus.FOLLOW_UP
    assert read_back(caller.client, FOLLOW_UPS, stored.pk) == created


def test_recording_a_death_takes_the_subject_off_study(world, caller, subject):
    response = post_json(caller.client, FOLLOW_UPS, {"subject": subject.code, "kind": "death",
                                                     "event_on": str(days_ago(1)), "cause_of_death": "Sepsis"})
    assert response.status_code == 201, response.json()
    created = response.json()
    assert (created["kind"], created["cause_of_death"], created["event_on"]) == ("death", "Sepsis", str(days_ago(1)))
    stored = FollowUp.objects.get(pk=created["id"])
    assert (stored.kind, stored.cause_of_death, stored.recorded_by) == ("death", "Sepsis", caller.user)
    subject.refresh_from_db()
    assert (subject.status, subject.off_study_on, subject.off_study_reason, subject.off_study_detail) == (
        SubjectStatus.OFF_STUDY, days_ago(1), OffStudyReason.DEATH, "Sepsis")
    transition = subject.transitions.order_by("-recorded_at", "-pk").first()
    assert (transition.to_status, transition.recorded_by) == (SubjectStatus.OFF_STUDY, caller.user)
    assert read_back(caller.client, FOLLOW_UPS, stored.pk) == created
    assert caller.client.get(f"/api/v1/subjects/{subject.code}/").json()["status"] == "off_study"


def test_another_sites_response_is_neither_listed_nor_readable(world, caller, subject):
    # The contract suite has no response rows to scope (see test_response_assessments_list_is_scoped).
    own = outcome.record_response(subject=subject, assessed_on=days_ago(1), category="nr", by=world.coordinator)
    other_subject = infused_subject(trial=world.trial, site=world.site_b, coordinator=world.coordinator_b,
                                    investigator=world.investigator_b)
    other = outcome.record_response(subject=other_subject, assessed_on=days_ago(1), category="nr",
                                    by=world.coordinator_b)
    assert [row["id"] for row in caller.client.get(RESPONSES).json()["results"]] == [own.pk]
    assert read_back(caller.client, RESPONSES, own.pk)["subject"] == subject.code
    refused = caller.client.get(f"{RESPONSES}{other.pk}/")
    assert refused.status_code == 404 and refused.json()["code"] == "not_found"


def test_recording_a_death_of_unknown_cause(world, caller, subject):
    response = post_json(caller.client, FOLLOW_UPS, {"subject": subject.code, "kind": "death",
                                                     "event_on": str(days_ago(1)), "cause_of_death_unknown": True})
    assert response.status_code == 201, response.json()
    created = response.json()
    assert (created["cause_of_death"], created["cause_of_death_unknown"]) == ("", True)
    subject.refresh_from_db()
    assert (subject.status, subject.off_study_reason, subject.off_study_detail) == (
        SubjectStatus.OFF_STUDY, OffStudyReason.DEATH, "Cause unknown")
    assert read_back(caller.client, FOLLOW_UPS, created["id"]) == created


@pytest.mark.parametrize(("body", "code", "field"), [
    ({"cause_of_death": ""}, "cause_required", "cause_of_death"),
    ({"cause_of_death": "Sepsis", "cause_of_death_unknown": True}, "cause_given_and_unknown", "cause_of_death"),
])
def test_death_cause_refusals(world, subject, body, code, field):
    client = caller_for(world, "coordinator").client
    response = post_json(client, FOLLOW_UPS, {"subject": subject.code, "kind": "death",
                                              "event_on": str(days_ago(1)), **body})
    assert response.status_code == 400, response.json()
    assert response.json()["code"] == code and field in response.json()["field_errors"]
    assert not FollowUp.objects.filter(subject=subject).exists()
    subject.refresh_from_db()
    assert subject.status == SubjectStatus.FOLLOW_UP
