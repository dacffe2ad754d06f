"""Corrections of saved records: a reason is required, the entry rules still apply, and the audit row
keeps old value, new value, who and why — through the service, the API and the admin alike."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from pghistory.models import Events

from config.errors import RuleViolation
from patients.models import AdverseEvent, Subject
from patients.services import amendments, safety
from tests.admin_forms import change_form_data
from tests.api.support import api_client, caller_for
from tests.factories import consented, days_ago

pytestmark = pytest.mark.django_db


def _event(world: Any, **overrides: Any) -> AdverseEvent:
    subject = consented(trial=world.trial, site=world.site_a, coordinator=world.coordinator, on=days_ago(20))
    values = {"category": "ctcae", "term": "Febrile neutropenia", "onset_on": days_ago(10), "grade": 3,
              "related_to_product": "possible", "related_to_lymphodepletion": "probable", **overrides}
    return safety.record_adverse_event(subject=subject, data=safety.EventInput(**values), by=world.coordinator)


def _updates(record: Any) -> list[Any]:
    return list(Events.objects.tracks(record).filter(pgh_label="update").order_by("pgh_created_at"))


# --- the service ------------------------------------------------------------------------------------


def test_a_correction_with_a_reason_is_saved_and_audited_with_old_and_new_values(world):
    event = _event(world)
    amendments.amend_record(record=event, changes={"resolved_on": days_ago(3)}, reason="Discharge letter received",
                            by=world.coordinator)
    event.refresh_from_db()
    assert event.resolved_on == days_ago(3)
    [update] = _updates(event)
    assert update.pgh_diff["resolved_on"] == [None, days_ago(3).isoformat()]
    assert update.pgh_context["reason"] == "Discharge letter received"


def test_a_correction_without_a_reason_is_refused_and_changes_nothing(world):
    event = _event(world)
    with pytest.raises(RuleViolation) as refused:
        amendments.amend_record(record=event, changes={"term": "Sepsis"}, reason="  ", by=world.coordinator)
    assert (refused.value.code, refused.value.field) == ("reason_required", "reason_for_change")
    event.refresh_from_db()
    assert event.term == "Febrile neutropenia" and _updates(event) == []


def test_a_correction_that_breaks_the_entry_rule_is_refused(world):
    event = _event(world)
    with pytest.raises(RuleViolation) as refused:
        amendments.amend_record(record=event, changes={"resolved_on": days_ago(12)}, reason="typo",
                                by=world.coordinator)
    assert (refused.value.code, refused.value.field) == ("resolved_before_onset", "resolved_on")
    event.refresh_from_db()
    assert event.resolved_on is None


def test_a_field_that_drove_a_calculation_is_not_amendable(world):
    event = _event(world)
    with pytest.raises(RuleViolation) as refused:
        amendments.amend_record(record=event, changes={"category": "crs"}, reason="wrong form", by=world.coordinator)
    assert (refused.value.code, refused.value.field) == ("not_amendable", "category")


def test_the_derived_grade_of_a_crs_event_is_not_amendable(world):
    event = _event(world, category="crs", term="Cytokine release syndrome", grade=None)
    with pytest.raises(RuleViolation) as refused:
        amendments.amend_record(record=event, changes={"grade": 2}, reason="clinician's view", by=world.coordinator)
    assert refused.value.code == "grade_is_derived"


def test_an_unchanged_value_needs_no_reason_and_writes_nothing(world):
    event = _event(world)
    amendments.amend_record(record=event, changes={"term": "Febrile neutropenia"}, reason="", by=world.coordinator)
    assert _updates(event) == []


def test_monitors_cannot_amend(world):
    event = _event(world)
    with pytest.raises(Exception) as refused:
        amendments.amend_record(record=event, changes={"term": "Sepsis"}, reason="x", by=world.monitor)
    assert getattr(refused.value, "http_status", None) == 403


def test_a_serious_correction_sets_the_report_due_time(world):
    event = _event(world)
    aware = dt.datetime.combine(days_ago(9), dt.time(9), tzinfo=dt.UTC)
    amendments.amend_record(record=event, changes={"serious": True, "sae_hospitalisation": True,
                                                   "site_aware_at": aware}, reason="Admitted", by=world.coordinator)
    event.refresh_from_db()
    assert event.report_due_at == aware + dt.timedelta(hours=world.trial.sae_report_hours)


# --- the API: PATCH with reason_for_change ------------------------------------------------------------


@pytest.mark.parametrize("kind", ["coordinator", "token"])
def test_api_patch_corrects_with_a_reason_and_the_audit_names_the_caller(world, kind):
    event = _event(world)
    caller = caller_for(world, kind)
    response = caller.client.patch(f"/api/v1/adverse-events/{event.pk}/",
                                   {"outcome": "recovered", "resolved_on": days_ago(2).isoformat(),
                                    "reason_for_change": "Source: clinic note"}, format="json")
    assert response.status_code == 200, response.json()
    assert response.json()["outcome"] == "recovered"
    [update] = _updates(event)
    context = update.pgh_context
    assert context["reason"] == "Source: clinic note"
    assert context["user"] == caller.user.pk
    assert context["source"] == "api" and context["method"] == "PATCH"
    assert response["X-Request-ID"] == context["request_id"]
    if kind == "token":
        assert context["service_account"] == "Site A system"


def test_api_patch_without_a_reason_is_400_on_reason_for_change(world):
    event = _event(world)
    response = api_client(world.coordinator).patch(f"/api/v1/adverse-events/{event.pk}/", {"term": "Sepsis"},
                                                   format="json")
    assert response.status_code == 400
    assert response.json()["code"] == "reason_required"
    assert "reason_for_change" in response.json()["field_errors"]
    event.refresh_from_db()
    assert event.term == "Febrile neutropenia"


def test_api_patch_of_a_field_that_is_not_amendable_names_the_field(world):
    event = _event(world)
    response = api_client(world.coordinator).patch(f"/api/v1/adverse-events/{event.pk}/",
                                                   {"subject": "X", "reason_for_change": "x"}, format="json")
    assert response.status_code == 400
    assert response.json()["code"] == "not_amendable" and "subject" in response.json()["field_errors"]


def test_api_patch_of_another_sites_record_is_404(world):
    event = _event(world)
    response = api_client(world.coordinator_b).patch(f"/api/v1/adverse-events/{event.pk}/",
                                                     {"term": "Sepsis", "reason_for_change": "x"}, format="json")
    assert response.status_code == 404


def test_api_patch_of_the_subject_needs_a_reason(world):
    subject = consented(trial=world.trial, site=world.site_a, coordinator=world.coordinator, on=days_ago(20))
    client = api_client(world.coordinator)
    refused = client.patch(f"/api/v1/subjects/{subject.code}/", {"prior_lines": 4}, format="json")
    assert refused.status_code == 400 and refused.json()["code"] == "reason_required"
    accepted = client.patch(f"/api/v1/subjects/{subject.code}/", {"prior_lines": 4, "reason_for_change": "Chart"},
                            format="json")
    assert accepted.status_code == 200, accepted.json()
    assert Subject.objects.get(pk=subject.pk).prior_lines == 4
    [update] = [u for u in _updates(subject) if "prior_lines" in (u.pgh_diff or {})]
    assert update.pgh_diff["prior_lines"][1] == 4
    assert update.pgh_context["reason"] == "Chart"


def test_records_without_amendable_fields_take_no_patch(world):
    response = api_client(world.coordinator).patch("/api/v1/infusions/1/", {"reason_for_change": "x"},
                                                   format="json")
    assert response.status_code == 405


# --- the admin: the change form asks for the reason ---------------------------------------------------


def test_admin_correction_without_a_reason_shows_the_error_on_reason_for_change(world, login):
    event = _event(world)
    client = login(world.coordinator)
    url = f"/admin/patients/adverseevent/{event.pk}/change/"
    page = client.get(url)
    assert page.status_code == 200
    response = client.post(url, change_form_data(page, term="Sepsis"))
    assert response.status_code == 200
    assert "reason_for_change" in response.context["adminform"].form.errors
    event.refresh_from_db()
    assert event.term == "Febrile neutropenia"


def test_admin_correction_with_a_reason_is_saved_and_audited(world, login):
    event = _event(world)
    client = login(world.coordinator)
    url = f"/admin/patients/adverseevent/{event.pk}/change/"
    page = client.get(url)
    response = client.post(url, change_form_data(page, term="Sepsis", reason_for_change="Culture positive"))
    assert response.status_code == 302, response.context["adminform"].form.errors
    event.refresh_from_db()
    assert event.term == "Sepsis"
    [update] = _updates(event)
    assert update.pgh_diff["term"] == ["Febrile neutropenia", "Sepsis"]
    assert update.pgh_context["reason"] == "Culture positive"
    assert update.pgh_context["user"] == world.coordinator.pk
    assert update.pgh_context["source"] == "admin"


def test_admin_correction_breaking_a_rule_shows_the_error_on_its_field(world, login):
    event = _event(world)
    client = login(world.coordinator)
    url = f"/admin/patients/adverseevent/{event.pk}/change/"
    page = client.get(url)
    response = client.post(url, change_form_data(page, resolved_on=days_ago(12).isoformat(),
                                                 reason_for_change="typo"))
    assert response.status_code == 200
    assert "resolved_on" in response.context["adminform"].form.errors


def test_admin_shows_saved_non_amendable_fields_read_only(world, login):
    event = _event(world)
    page = login(world.coordinator).get(f"/admin/patients/adverseevent/{event.pk}/change/")
    form = page.context["adminform"].form
    assert "category" not in form.fields and "subject" not in form.fields
    assert "term" in form.fields and "reason_for_change" in form.fields


def test_a_medication_correction_is_checked_by_the_entry_rule(world):
    from decimal import Decimal

    subject = consented(trial=world.trial, site=world.site_a, coordinator=world.coordinator, on=days_ago(20))
    given = dt.datetime.combine(days_ago(5), dt.time(9), tzinfo=dt.UTC)
    medication = safety.record_medication(subject=subject, drug="tocilizumab", dose=Decimal("8"), dose_unit="mg/kg",
                                          route="iv", given_at=given, by=world.coordinator)
    with pytest.raises(RuleViolation) as refused:
        amendments.amend_record(record=medication, changes={"given_at": given - dt.timedelta(days=30)},
                                reason="typo", by=world.coordinator)
    assert refused.value.field == "given_at"
    medication.refresh_from_db()
    assert medication.given_at == given


def test_a_bridging_correction_cannot_end_before_it_starts(world):
    from patients.services import treatment
    from tests.factories import apheresed_subject

    subject = apheresed_subject(trial=world.trial, site=world.site_a, coordinator=world.coordinator,
                                investigator=world.investigator)
    bridging = treatment.record_bridging(subject=subject, regimen="Vincristine/dexamethasone",
                                         started_on=days_ago(3), by=world.coordinator)
    with pytest.raises(RuleViolation) as refused:
        amendments.amend_record(record=bridging, changes={"ended_on": days_ago(4)}, reason="Chart",
                                by=world.coordinator)
    assert (refused.value.code, refused.value.field) == ("ends_before_start", "ended_on")
