"""Every write takes a related record by its natural code as well as by its id: product and collection
of a lot, regimen of a course, agent of a dose, lot and dose level of an infusion, visit of a response,
cohort at enrolment and criteria of an eligibility assessment. Codes resolve in the subject's trial;
an unknown code and another site's record are the same 400 ``does_not_exist`` on that field."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

import pytest

from patients.models import EligibilityAssessment, Infusion, LymphodepletionCourse, ProductLot, ResponseAssessment
from patients.services import outcome
from tests.api.support import api_client, post_json
from tests.factories import (
    MembershipFactory,
    TrialSiteFactory,
    apheresed_subject,
    at,
    build_trial,
    consented,
    days_ago,
    eligible_subject,
    infused_subject,
    lymphodepleted_subject,
    released_lot,
)
from trials.models import DoseLevel, Visit

pytestmark = pytest.mark.django_db


def _clinical(world, site=None):
    return {"trial": world.trial, "site": site or world.site_a, "coordinator": world.coordinator,
            "investigator": world.investigator}


def _refused(response, field):
    assert response.status_code == 400, response.json()
    body = response.json()
    assert body["code"] == "invalid"
    assert list(body["field_errors"]) == [field]
    return body["field_errors"][field][0]


def test_registers_a_lot_by_product_code_and_collection_id(world):
    subject = apheresed_subject(**_clinical(world))
    response = post_json(api_client(world.coordinator), "/api/v1/lots/", {
        "subject": subject.code, "product": "HCART19", "lot_number": "LOT-BY-CODE", "source": "autologous",
        "collection": f"AP-{subject.code}"})
    assert response.status_code == 201, response.json()
    assert (response.json()["product"], response.json()["collection"]) == ("HCART19", f"AP-{subject.code}")
    lot = ProductLot.objects.get(lot_number="LOT-BY-CODE")
    assert (lot.product.code, lot.collection.collection_id) == ("HCART19", f"AP-{subject.code}")


def test_another_sites_collection_is_refused_like_an_unknown_one(world):
    subject = apheresed_subject(**_clinical(world))
    other = apheresed_subject(trial=world.trial, site=world.site_b, coordinator=world.coordinator_b,
                              investigator=world.investigator_b)
    client = api_client(world.coordinator)
    body = {"subject": subject.code, "product": "HCART19", "lot_number": "LOT-X", "source": "autologous"}
    foreign = post_json(client, "/api/v1/lots/", {**body, "collection": f"AP-{other.code}"})
    unknown = post_json(client, "/api/v1/lots/", {**body, "collection": "AP-NO-SUCH"})
    assert _refused(foreign, "collection") == f"No apheresis collection AP-{other.code} here."
    assert _refused(unknown, "collection") == "No apheresis collection AP-NO-SUCH here."
    by_id = post_json(client, "/api/v1/lots/", {**body, "collection": other.collections.get().pk})
    assert _refused(by_id, "collection") == f"No apheresis collection {other.collections.get().pk} here."
    assert not ProductLot.objects.filter(lot_number="LOT-X").exists()


def test_unknown_product_code_is_refused_on_its_field(world):
    subject = apheresed_subject(**_clinical(world))
    response = post_json(api_client(world.coordinator), "/api/v1/lots/", {
        "subject": subject.code, "product": "NOPE", "lot_number": "LOT-Y", "source": "autologous"})
    assert _refused(response, "product") == "No product NOPE here."


def test_starts_a_course_by_regimen_code_and_records_doses_by_agent_code(world):
    subject = apheresed_subject(**_clinical(world))
    released_lot(subject=subject, coordinator=world.coordinator)
    client = api_client(world.coordinator)
    day0 = days_ago(5)
    response = post_json(client, "/api/v1/lymphodepletion-courses/", {
        "subject": subject.code, "regimen": "FC", "planned_infusion_on": str(day0)})
    assert response.status_code == 201, response.json()
    course = LymphodepletionCourse.objects.get(pk=response.json()["id"])
    assert course.regimen.code == "FC"
    dose = post_json(client, f"/api/v1/lymphodepletion-courses/{course.pk}/doses/", {
        "agent": "fludarabine", "given_on": str(day0 - dt.timedelta(days=5)), "administered_mg": "54.5"})
    assert dose.status_code == 201, dose.json()
    assert dose.json()["agent"] == "fludarabine"
    assert course.doses.get().agent.agent == "fludarabine"
    unknown = post_json(client, f"/api/v1/lymphodepletion-courses/{course.pk}/doses/", {
        "agent": "bendamustine", "given_on": str(day0 - dt.timedelta(days=5)), "administered_mg": "50"})
    assert _refused(unknown, "agent") == "No regimen agent bendamustine here."


def test_unknown_regimen_code_is_refused_on_its_field(world):
    subject = apheresed_subject(**_clinical(world))
    response = post_json(api_client(world.coordinator), "/api/v1/lymphodepletion-courses/", {
        "subject": subject.code, "regimen": "BENDA", "planned_infusion_on": str(days_ago(5))})
    assert _refused(response, "regimen") == "No lymphodepletion regimen BENDA here."


def test_records_an_infusion_by_lot_number_and_dose_level_code(world):
    day0 = days_ago(5)
    subject = lymphodepleted_subject(**_clinical(world), day0=day0)
    lot = subject.lots.get()
    response = post_json(api_client(world.coordinator), "/api/v1/infusions/", {
        "subject": subject.code, "lot": lot.lot_number, "dose_level": "DL1", "infused_at": at(day0).isoformat(),
        "cells_per_kg": "1000000"})
    assert response.status_code == 201, response.json()
    assert (response.json()["lot"], response.json()["dose_level"]) == (lot.lot_number, "DL1")
    infusion = Infusion.objects.get(pk=response.json()["id"])
    assert (infusion.lot_id, infusion.dose_level.code) == (lot.pk, "DL1")


def test_a_dose_level_code_resolves_in_the_subjects_trial(world):
    """The coordinator also works on a second trial with its own DL1: the subject's trial decides."""
    second = build_trial(code="SECOND")
    TrialSiteFactory(trial=second, site=world.site_a)
    MembershipFactory(user=world.coordinator, trial=second, site=world.site_a, role="coordinator")
    DoseLevel.objects.filter(trial=second).update(cells_per_kg=Decimal(5_000_000))
    day0 = days_ago(5)
    subject = lymphodepleted_subject(**_clinical(world), day0=day0)
    response = post_json(api_client(world.coordinator), "/api/v1/infusions/", {
        "subject": subject.code, "lot": subject.lots.get().lot_number, "dose_level": "DL1",
        "infused_at": at(day0).isoformat(), "cells_per_kg": "1000000"})
    assert response.status_code == 201, response.json()
    assert Infusion.objects.get(pk=response.json()["id"]).dose_level.trial_id == world.trial.pk


def test_another_sites_lot_number_is_refused_like_an_unknown_one(world):
    day0 = days_ago(5)
    subject = lymphodepleted_subject(**_clinical(world), day0=day0)
    other = apheresed_subject(trial=world.trial, site=world.site_b, coordinator=world.coordinator_b,
                              investigator=world.investigator_b)
    other_lot = released_lot(subject=other, coordinator=world.coordinator_b)
    client = api_client(world.coordinator)
    body = {"subject": subject.code, "dose_level": "DL1", "infused_at": at(day0).isoformat(),
            "cells_per_kg": "1000000"}
    foreign = _refused(post_json(client, "/api/v1/infusions/", {**body, "lot": other_lot.lot_number}), "lot")
    unknown = _refused(post_json(client, "/api/v1/infusions/", {**body, "lot": "LOT-NO-SUCH"}), "lot")
    assert foreign.replace(other_lot.lot_number, "?") == unknown.replace("LOT-NO-SUCH", "?")
    assert not Infusion.objects.exists()


def test_unknown_dose_level_code_is_refused_on_its_field(world):
    day0 = days_ago(5)
    subject = lymphodepleted_subject(**_clinical(world), day0=day0)
    response = post_json(api_client(world.coordinator), "/api/v1/infusions/", {
        "subject": subject.code, "lot": subject.lots.get().lot_number, "dose_level": "DL9",
        "infused_at": at(day0).isoformat(), "cells_per_kg": "1000000"})
    assert _refused(response, "dose_level") == "No dose level DL9 here."


def test_a_code_field_refuses_a_value_that_is_neither_code_nor_id(world):
    subject = apheresed_subject(**_clinical(world))
    response = post_json(api_client(world.coordinator), "/api/v1/lots/", {
        "subject": subject.code, "product": ["HCART19"], "lot_number": "LOT-Z", "source": "autologous"})
    assert _refused(response, "product") == "Give a code or an id, not list."


def test_records_a_response_by_visit_code(world):
    subject = infused_subject(**_clinical(world))
    Visit.objects.create(trial=world.trial, code="D3", name="Day 3", target_day=3, window_before_days=1,
                         window_after_days=1)
    client = api_client(world.coordinator)
    response = post_json(client, "/api/v1/responses/", {"subject": subject.code, "visit": "D3",
                                                        "assessed_on": str(days_ago(2)), "category": "cr",
                                                        "marrow_blasts_pct": "1.00"})
    assert response.status_code == 201, response.json()
    assert ResponseAssessment.objects.get(pk=response.json()["id"]).visit.code == "D3"
    unknown = post_json(client, "/api/v1/responses/", {"subject": subject.code, "visit": "D99",
                                                       "assessed_on": str(days_ago(2)), "category": "cr"})
    assert _refused(unknown, "visit") == "No visit D99 here."


def test_assesses_eligibility_by_criterion_codes(world):
    subject = consented(trial=world.trial, site=world.site_a, coordinator=world.coordinator)
    response = post_json(api_client(world.coordinator), f"/api/v1/subjects/{subject.code}/eligibility/", {
        "assessed_on": str(days_ago(25)), "answers": {"I1": True, "I2": True, "E1": False}})
    assert response.status_code == 200, response.json()
    assessment = EligibilityAssessment.objects.get(subject=subject)
    assert assessment.eligible is True
    assert {a.criterion.code: a.met for a in assessment.answers.select_related("criterion")} == {
        "I1": True, "I2": True, "E1": False}


def test_eligibility_mixes_codes_and_ids_but_refuses_unknown_codes(world):
    subject = consented(trial=world.trial, site=world.site_a, coordinator=world.coordinator)
    i2 = world.trial.criteria.get(kind="inclusion", number=2)
    client = api_client(world.coordinator)
    url = f"/api/v1/subjects/{subject.code}/eligibility/"
    mixed = post_json(client, url, {"assessed_on": str(days_ago(25)),
                                    "answers": {"I1": True, str(i2.pk): True, "E1": False}})
    assert mixed.status_code == 200, mixed.json()
    unknown = post_json(client, url, {"assessed_on": str(days_ago(25)), "answers": {"I1": True, "I9": True}})
    assert unknown.status_code == 400
    assert (unknown.json()["code"], list(unknown.json()["field_errors"])) == ("unknown_criterion", ["answers"])
    twice = post_json(client, url, {"assessed_on": str(days_ago(25)),
                                    "answers": {"I1": True, "I2": True, str(i2.pk): True, "E1": False}})
    assert twice.status_code == 400
    assert twice.json()["code"] == "duplicate_criterion"
    assert subject.eligibility_assessments.count() == 1


def test_enrols_into_a_cohort_by_id_as_well_as_by_code(world):
    subject = eligible_subject(**_clinical(world))
    cohort = world.trial.cohorts.get(code="PED")
    response = post_json(api_client(world.coordinator), f"/api/v1/subjects/{subject.code}/enrol/", {
        "cohort": str(cohort.pk), "enrolled_on": str(days_ago(1))})
    assert response.status_code == 200, response.json()
    assert (response.json()["status"], response.json()["cohort"]) == ("enrolled", "PED")


def test_corrects_a_response_visit_by_code(world):
    """A correction (PATCH) resolves codes in the saved record's subject's trial."""
    subject = infused_subject(**_clinical(world))
    Visit.objects.create(trial=world.trial, code="D3", name="Day 3", target_day=3, window_before_days=1,
                         window_after_days=1)
    response = outcome.record_response(subject=subject, assessed_on=days_ago(2), category="cr",
                                       marrow_blasts_pct=Decimal("1"), by=world.coordinator)
    client = api_client(world.coordinator)
    url = f"/api/v1/responses/{response.pk}/"
    unknown = client.patch(url, {"visit": "D99", "reason_for_change": "Visit was missed"}, format="json")
    assert _refused(unknown, "visit") == "No visit D99 here."
    corrected = client.patch(url, {"visit": "D3", "reason_for_change": "Visit was missed"}, format="json")
    assert corrected.status_code == 200, corrected.json()
    assert corrected.json()["visit"] == "D3"
    response.refresh_from_db()
    assert response.visit.code == "D3"
