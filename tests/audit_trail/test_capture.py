"""The audit trail is written by PostgreSQL itself: admin, API, management commands and raw SQL are
all recorded, and nobody — the application's role least of all — can rewrite it."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from django.core.management import call_command
from django.db import DatabaseError, connection, transaction
from pghistory.models import Events

from audit.management.commands.create_app_role import audit_tables, grant_app_role
from patients.models import AdverseEvent, Subject
from patients.services.measurements import record_body_measurement
from tests.admin_forms import change_form_data
from tests.api.support import caller_for
from tests.factories import consented, days_ago
from trials.models import Trial

pytestmark = pytest.mark.django_db


def _subject(world):
    return consented(trial=world.trial, site=world.site_a, coordinator=world.coordinator, on=days_ago(20))


def test_an_admin_write_is_recorded_with_user_request_and_reason(world, login):
    subject = _subject(world)
    client = login(world.coordinator)
    url = f"/admin/patients/subject/{subject.pk}/change/"
    page = client.get(url)
    response = client.post(url, change_form_data(page, prior_lines="5", reason_for_change="Referral letter"))
    assert response.status_code == 302
    [event] = [e for e in Events.objects.tracks(subject).filter(pgh_label="update") if "prior_lines" in e.pgh_diff]
    assert event.pgh_diff["prior_lines"][1] == 5
    assert event.pgh_context["user"] == world.coordinator.pk
    assert event.pgh_context["reason"] == "Referral letter"
    assert event.pgh_context["url"] == url and event.pgh_context["method"] == "POST"
    assert event.pgh_context["source"] == "admin" and event.pgh_context["request_id"]


def test_an_api_write_by_a_laboratory_system_names_the_service_account(world):
    subject = _subject(world)
    caller = caller_for(world, "token")
    response = caller.client.post("/api/v1/adverse-events/", {
        "subject": subject.code, "category": "ctcae", "term": "Fatigue", "onset_on": days_ago(3).isoformat(),
        "grade": 1, "related_to_product": "unlikely", "related_to_lymphodepletion": "unlikely"}, format="json")
    assert response.status_code == 201, response.json()
    event = AdverseEvent.objects.get(pk=response.json()["id"])
    [insert] = Events.objects.tracks(event).filter(pgh_label="insert")
    assert insert.pgh_data["term"] == "Fatigue"
    assert insert.pgh_context["user"] == caller.user.pk
    assert insert.pgh_context["service_account"] == "Site A system"
    assert insert.pgh_context["request_id"] == response["X-Request-ID"]


def test_ingested_results_carry_the_request_context(world):
    from tests.api.support import post_results, result_row

    subject = _subject(world)
    caller = caller_for(world, "token")
    response = post_results(caller.client, {"results": [result_row(subject, 1), result_row(subject, 2)]})
    assert response.status_code == 201, response.json()
    # A result's row is its own insert record (assays.models.Result): the trail reads it from there.
    from audit.selectors import AuditFilters, AuditScope, list_audit_entries

    entries = list(list_audit_entries(scope=AuditScope(everything=True),
                                      filters=AuditFilters(table="assays.Result", subject_id=subject.pk)))
    assert [e.action for e in entries] == ["insert", "insert"]
    assert {e.request_id for e in entries} == {response["X-Request-ID"]}
    assert {(e.user_id, e.service_account, e.source) for e in entries} == {(caller.user.pk, "Site A system", "api")}


def test_a_management_command_write_is_recorded_as_such(db):
    call_command("load_demo")
    trial = Trial.objects.get(code="CART19-ALL")
    [insert] = Events.objects.tracks(trial).filter(pgh_label="insert")
    assert insert.pgh_context == {**insert.pgh_context, "source": "command", "command": "load_demo"}


def test_a_raw_sql_write_is_recorded_with_old_and_new_values(world):
    subject = _subject(world)
    with connection.cursor() as cursor:
        cursor.execute("UPDATE patients_subject SET prior_lines = 7 WHERE id = %s", [subject.pk])
    [event] = [e for e in Events.objects.tracks(subject).filter(pgh_label="update") if "prior_lines" in e.pgh_diff]
    assert event.pgh_diff["prior_lines"][1] == 7
    assert event.pgh_context is None  # outside the application: no user, request or reason to record


def test_a_raw_sql_delete_is_recorded_with_the_deleted_values(world):
    subject = _subject(world)
    measurement = record_body_measurement(subject=subject, measured_on=days_ago(5), height_cm=Decimal("170"),
                                          weight_kg=Decimal("65.5"), by=world.coordinator)
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM patients_bodymeasurement WHERE id = %s", [measurement.pk])
    [deleted] = Events.objects.filter(pgh_model="patients.BodyMeasurementEvent", pgh_label="delete",
                                      pgh_obj_id=str(measurement.pk))
    assert float(deleted.pgh_data["weight_kg"]) == 65.5


# --- nobody rewrites the audit trail -------------------------------------------------------------------


def _event_pk(subject: Subject) -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pgh_id FROM patients_subjectevent WHERE pgh_obj_id = %s LIMIT 1", [subject.pk])
        return cursor.fetchone()[0]


@pytest.mark.parametrize("statement", [
    "UPDATE patients_subjectevent SET diagnosis = 'tampered' WHERE pgh_id = %s",
    "DELETE FROM patients_subjectevent WHERE pgh_id = %s",
])
def test_even_the_database_owner_cannot_update_or_delete_audit_rows(world, statement):
    row = _event_pk(_subject(world))
    with pytest.raises(DatabaseError, match="append_only"), transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(statement, [row])
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM patients_subjectevent WHERE pgh_id = %s AND diagnosis <> 'tampered'",
                       [row])
        assert cursor.fetchone()[0] == 1


def test_every_history_table_is_append_only(db):
    with connection.cursor() as cursor:
        cursor.execute("SELECT DISTINCT c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
                       "WHERE t.tgname LIKE 'pgtrigger_append_only%%'")
        protected = {row[0] for row in cursor.fetchall()}
    event_tables = set(audit_tables()) - {"pghistory_context", "audit_auditexport"}
    assert event_tables and event_tables <= protected


@pytest.mark.parametrize("statement", [
    "UPDATE patients_subjectevent SET diagnosis = 'tampered' WHERE pgh_id = %s",
    "DELETE FROM patients_subjectevent WHERE pgh_id = %s",
    "TRUNCATE patients_subjectevent",
    "ALTER TABLE patients_subjectevent DISABLE TRIGGER ALL",
    "DELETE FROM pghistory_context WHERE id IS NOT NULL AND %s > 0",
    # A result's row is its own insert record (assays.models.Result).
    "DELETE FROM assays_result WHERE id IS NOT NULL AND %s > 0",
    "TRUNCATE assays_result",
])
def test_the_application_role_is_refused_by_postgresql(world, statement):
    row = _event_pk(_subject(world))
    role = f"cart_app_{uuid.uuid4().hex[:8]}"
    grant_app_role(role)  # inside the test's transaction: rolled back with it
    with connection.cursor() as cursor:
        cursor.execute(f'SET LOCAL ROLE "{role}"')
        with pytest.raises(DatabaseError, match="permission denied|must be owner"), transaction.atomic():
            cursor.execute(statement, [row] if "%s" in statement else None)
        cursor.execute("UPDATE patients_subject SET prior_lines = 2 WHERE id = (SELECT pgh_obj_id FROM "
                       "patients_subjectevent WHERE pgh_id = %s)", [row])  # clinical data: allowed, and audited
        cursor.execute("SELECT count(*) FROM patients_subjectevent WHERE pgh_obj_id = "
                       "(SELECT pgh_obj_id FROM patients_subjectevent WHERE pgh_id = %s)", [row])
        assert cursor.fetchone()[0] >= 2
        cursor.execute("RESET ROLE")


def test_user_accounts_and_logins_are_audited_without_the_password(world, login):
    from django.contrib.auth import get_user_model

    login(world.monitor)  # the login stamps last_login: an access record
    events = list(Events.objects.tracks(get_user_model().objects.get(pk=world.monitor.pk)).order_by("pgh_created_at"))
    assert events[0].pgh_label == "insert"
    assert any(e.pgh_label == "update" and "last_login" in (e.pgh_diff or {}) for e in events)
    assert all("password" not in e.pgh_data for e in events)


def test_the_application_role_cannot_skip_the_audit_triggers(world):
    subject = _subject(world)
    role = f"cart_app_{uuid.uuid4().hex[:8]}"
    grant_app_role(role)
    with connection.cursor() as cursor:
        cursor.execute("SELECT t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
                       "WHERE c.relname = 'patients_subject' AND t.tgname LIKE 'pgtrigger_update_update_%%'")
        [(trigger,)] = cursor.fetchall()
        cursor.execute(f'SET LOCAL ROLE "{role}"')
        cursor.execute("SELECT set_config('pgtrigger.ignore', %s, true)", ["{" + trigger + "}"])
        cursor.execute("UPDATE patients_subject SET prior_lines = 6 WHERE id = %s", [subject.pk])
        cursor.execute("RESET ROLE")
    assert any(e.pgh_diff.get("prior_lines", [None, None])[1] == 6
               for e in Events.objects.tracks(subject).filter(pgh_label="update"))
