"""A record's history and a subject's whole history, in the selector and the admin pages."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from django.contrib.auth.models import Group
from django.urls import reverse
from rest_framework.test import APIClient

from assays.models import Analyte, AnalyteUnit
from audit.selectors import FieldChange
from audit.tables import GLOBAL, SUBJECT, TRIAL, audited_tables, table_for
from patients.models import LymphodepletionDose
from patients.services import safety
from tests.admin_forms import change_form_data
from tests.audit.conftest import entries_for, screen
from tests.factories import CohortFactory, UserFactory, at, consented, days_ago, infused_subject
from trials.services import issue_service_account

pytestmark = pytest.mark.django_db


def test_every_tracked_table_is_placed_in_a_trial_site_and_subject():
    kinds = {label: table.kind for label, table in audited_tables().items()}
    for label in ("patients.Subject", "patients.Consent", "patients.LymphodepletionDose", "patients.CrsAssessment",
                  "patients.EligibilityAnswer", "assays.Result", "assays.LabDraw"):
        assert kinds[label] == SUBJECT, label
    for label in ("trials.Trial", "trials.DoseLevel", "trials.RegimenAgent", "trials.Membership"):
        assert kinds[label] == TRIAL, label
    for label in ("trials.Site", "assays.Analyte", "audit.AuditExport"):
        assert kinds[label] == GLOBAL, label


def test_record_history_of_an_amendment_shows_old_and_new_values_reason_and_user(world, login, amended):
    updates = [e for e in entries_for(world.data_manager, table="patients.Subject", record_id=amended.pk)
               if e.action == "update"]
    assert len(updates) == 1
    update = updates[0]
    assert set(update.changes) == {
        FieldChange("marrow_blasts_pct", "marrow blasts pct", "35.00", "42.50"),
        FieldChange("prior_lines", "prior lines of therapy", "2", "3"),
    }
    assert update.reason == "Source document says 42.5%, 3 lines"
    assert (update.username, update.user_full_name) == ("coord_a", world.coordinator.get_full_name())
    assert (update.method, update.request_id) == ("POST", "amend-1")
    assert update.url == f"/admin/patients/subject/{amended.pk}/change/"
    assert (update.site_code, update.subject_code) == ("SA", amended.code)

    response = login(world.data_manager).get(reverse("admin:audit_record_history",
                                                     args=["patients.Subject", amended.pk]))
    assert response.status_code == 200
    html = response.content.decode()
    for text in ("35.00", "42.50", "Source document says 42.5%, 3 lines", "coord_a", "amend-1", "insert", "update"):
        assert text in html, text
    assert [e.action for e in response.context["page"].object_list] == ["insert", "update"]


def test_amendment_through_the_admin_records_user_url_and_reason(world, login):
    subject = screen(world)
    coordinator = login(world.coordinator)
    url = reverse("admin:patients_subject_change", args=[subject.pk])
    data = change_form_data(coordinator.get(url), marrow_blasts_pct="41.00", reason_for_change="Lab re-read")
    assert coordinator.post(url, data).status_code == 302

    response = login(world.monitor).get(reverse("admin:audit_record_history", args=["patients.Subject", subject.pk]))
    update = [e for e in response.context["page"].object_list if e.action == "update"][-1]
    assert update.changes == (FieldChange("marrow_blasts_pct", "marrow blasts pct", "35.00", "41.00"),)
    assert (update.username, update.reason, update.url) == ("coord_a", "Lab re-read", url)
    assert (update.method, update.source) == ("POST", "admin") and update.request_id  # the request middleware's


def test_insert_shows_new_values_only(world, amended):
    insert = entries_for(world.data_manager, table="patients.Subject", record_id=amended.pk)[0]
    assert insert.action == "insert"
    values = {c.field: (c.old, c.new) for c in insert.changes}
    assert values["marrow_blasts_pct"] == (None, "35.00")
    assert values["code"] == (None, amended.code)
    assert "updated_at" not in values and "id" not in values  # bookkeeping, shown as the row's own columns


def test_subject_history_includes_the_records_placed_under_the_subject(world, login):
    subject = infused_subject(coordinator=world.coordinator, investigator=world.investigator, trial=world.trial,
                              site=world.site_a)
    event = safety.record_adverse_event(subject=subject, by=world.coordinator, data=safety.EventInput(
        category="crs", term="Cytokine release syndrome", onset_on=days_ago(4), related_to_product="definite",
        related_to_lymphodepletion="unlikely"))
    crs = safety.record_crs_assessment(event=event, assessed_at=at(days_ago(3)), by=world.coordinator,
                                       components={"max_temp_c": Decimal("39.2")})
    other = screen(world)
    dose = LymphodepletionDose.objects.filter(course__subject=subject).first()

    history = entries_for(world.data_manager, subject_id=subject.pk)
    records = {(e.table, e.record_id) for e in history}
    for table, pk in [("patients.Subject", subject.pk), ("patients.AdverseEvent", event.pk),
                      ("patients.CrsAssessment", crs.pk), ("patients.LymphodepletionDose", dose.pk),
                      ("patients.LymphodepletionCourse", dose.course_id), ("patients.Infusion",
                                                                          subject.infusions.get().pk)]:
        assert (table, str(pk)) in records, table
    assert {e.subject_id for e in history} == {subject.pk}
    assert ("patients.Subject", str(other.pk)) not in records
    assert [e.at for e in history] == sorted(e.at for e in history)

    response = login(world.monitor).get(reverse("admin:audit_subject_history", args=[subject.pk]))
    assert response.status_code == 200
    page = response.context["page"]
    assert page.paginator.count == len(history)
    html = response.content.decode()
    assert "CRS assessment" in html and "Lymphodepletion dose" in html and subject.code in html


def test_change_pages_link_to_the_audit_history_for_auditors_only(world, login, amended):
    url = reverse("admin:patients_subject_change", args=[amended.pk])
    record_history = reverse("admin:audit_record_history", args=["patients.Subject", amended.pk])
    subject_history = reverse("admin:audit_subject_history", args=[amended.pk])
    html = login(world.data_manager).get(url).content.decode()
    assert record_history in html and subject_history in html
    html = login(world.coordinator).get(url).content.decode()
    assert record_history not in html and subject_history not in html

    trial_page = reverse("admin:trials_trial_change", args=[world.trial.pk])
    trial_history = reverse("admin:audit_record_history", args=["trials.Trial", world.trial.pk])
    assert trial_history in login(world.data_manager).get(trial_page).content.decode()
    assert trial_history not in login(world.monitor).get(trial_page).content.decode()  # design: not theirs

    root = UserFactory(username="root", is_superuser=True)
    group = Group.objects.create(name="Auditors")
    for label, pk in [("auth.User", world.coordinator.pk), ("auth.Group", group.pk)]:
        page = login(root).get(reverse(f"admin:auth_{label.split('.')[1].lower()}_change", args=[pk]))
        assert page.status_code == 200
        assert ("audit-history" in page.content.decode()) == (table_for(label) is not None), label  # tracked?


def test_a_change_by_a_service_account_names_the_account(world):
    account, _token = issue_service_account(trial=world.trial, sites=[world.site_a], name="SA LIS",
                                            by=world.data_manager)
    subject = screen(world, by=account.user)
    [insert] = entries_for(world.data_manager, table="patients.Subject", record_id=subject.pk)
    assert (insert.username, insert.service_account) == (account.user.username, "SA LIS")
    assert "SA LIS" in insert.who
    [issued] = entries_for(world.data_manager, table="trials.ServiceAccount")
    values = {c.field: c.new for c in issued.changes}
    assert (values["name"], values["token_hash"]) == ("SA LIS", "(hidden)")  # never shown, even to auditors


def test_assay_results_posted_by_a_laboratory_are_in_the_subject_history(world):
    crp, _ = Analyte.objects.get_or_create(code="CRP", defaults={"name": "C reactive protein",
                                                                 "canonical_unit": "mg/L"})
    AnalyteUnit.objects.get_or_create(analyte=crp, unit="mg/L", defaults={"factor": 1})
    _account, token = issue_service_account(trial=world.trial, sites=[world.site_a], name="Lab A",
                                            by=world.data_manager)
    subject = consented(trial=world.trial, site=world.site_a, coordinator=world.coordinator)
    lab = APIClient()
    lab.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    row = {"source_ref": "LIS-1", "subject": subject.code, "accession_number": "ACC-1", "specimen": "serum",
           "collected_at": at(days_ago(2), 8).isoformat(), "analyte": "CRP", "value": "12.5", "unit": "mg/L"}
    response = lab.post("/api/v1/results/", data=json.dumps({"results": [row]}), content_type="application/json")
    assert response.status_code == 201, response.json()

    results = [e for e in entries_for(world.monitor, subject_id=subject.pk) if e.table == "assays.Result"]
    assert len(results) == 1  # written by a statement-level trigger, read like any other event
    [result] = results
    assert (result.action, result.service_account, result.url) == ("insert", "Lab A", "/api/v1/results/")
    assert (result.method, result.source) == ("POST", "api")
    assert {c.field: c.new for c in result.changes}["value_text"] == "12.5"


def test_a_deleted_design_record_keeps_its_history_with_the_old_values(world, login):
    cohort = CohortFactory(trial=world.trial, code="EXTRA", name="Extra cohort")
    pk = cohort.pk
    cohort.delete()
    entries = entries_for(world.data_manager, table="trials.Cohort", record_id=pk)
    assert [e.action for e in entries] == ["insert", "delete"]
    assert {c.field: (c.old, c.new) for c in entries[1].changes}["code"] == ("EXTRA", None)
    url = reverse("admin:audit_record_history", args=["trials.Cohort", pk])
    assert login(world.data_manager).get(url).status_code == 200
    assert login(world.monitor).get(url).status_code == 404  # design records: data managers only
