"""The CSV export of the audit trail: filters, columns, one row per changed field, and its own record."""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest
from django.db import DatabaseError, transaction
from django.urls import reverse

from audit.export import COLUMNS
from audit.models import AuditExport
from tests.audit.conftest import entries_for, screen
from tests.factories import TODAY, UserFactory, days_ago

pytestmark = pytest.mark.django_db

EXPORT = "admin:audit_export"


def export(client: Any, **params: Any) -> list[dict[str, str]]:
    response = client.get(reverse(EXPORT), params)
    assert response.status_code == 200, response.content[:500]
    assert response["Content-Type"].startswith("text/csv")
    assert response["Content-Disposition"].startswith('attachment; filename="audit-trail-')
    reader = csv.reader(io.StringIO(b"".join(response.streaming_content).decode()))
    header, *rows = list(reader)
    assert header == COLUMNS
    return [dict(zip(header, row, strict=True)) for row in rows]


@pytest.fixture
def both_sites(world: Any, amended: Any) -> dict[str, Any]:
    """The amended site-A subject, and a site-B subject screened by coordinator B."""
    return {"a": amended, "b": screen(world, site=world.site_b, by=world.coordinator_b)}


def test_export_has_one_row_per_changed_field(world, login, both_sites):
    rows = export(login(world.data_manager), table="patients.Subject")
    amended = both_sites["a"]
    update = [r for r in rows if r["record id"] == str(amended.pk) and r["action"] == "update"]
    assert {(r["field"], r["old value"], r["new value"]) for r in update} == {
        ("marrow_blasts_pct", "35.00", "42.50"), ("prior_lines", "2", "3")}
    assert len({r["event id"] for r in update}) == 1
    first = update[0]
    assert first["event id"].startswith("patients.SubjectEvent:")
    assert first["timestamp UTC"].startswith(TODAY.isoformat()) and first["timestamp UTC"].endswith("Z")
    assert (first["table"], first["user"], first["service account"]) == ("patients.Subject", "coord_a", "")
    assert first["reason"] == "Source document says 42.5%, 3 lines"
    assert (first["request method"], first["request id"], first["site"]) == ("POST", "amend-1", "SA")
    assert first["url"] == f"/admin/patients/subject/{amended.pk}/change/"
    inserted = {r["field"]: r["new value"] for r in rows if r["record id"] == str(amended.pk)
                and r["action"] == "insert"}
    assert inserted["code"] == amended.code and inserted["marrow_blasts_pct"] == "35.00"


def test_export_filters_by_site(world, login, both_sites):
    rows = export(login(world.data_manager), site=world.site_a.pk)
    assert rows and {r["site"] for r in rows} == {"SA"}
    assert str(both_sites["b"].pk) not in {r["record id"] for r in rows if r["table"] == "patients.Subject"}
    assert {r["site"] for r in export(login(world.data_manager), site=world.site_b.pk)} == {"SB"}


def test_export_filters_by_user(world, login, both_sites):
    rows = export(login(world.data_manager), user=world.coordinator_b.pk)
    assert rows and {r["user"] for r in rows} == {"coord_b"}
    assert (str(both_sites["b"].pk), "insert") in {(r["record id"], r["action"]) for r in rows
                                                   if r["table"] == "patients.Subject"}


def test_export_filters_by_table(world, login, both_sites):
    rows = export(login(world.data_manager), table="patients.SubjectTransition")
    assert len({r["event id"] for r in rows}) == 2  # each subject's screening transition
    assert {r["table"] for r in rows} == {"patients.SubjectTransition"}


def test_export_filters_by_date_range(world, login, both_sites):
    dm = login(world.data_manager)
    assert export(dm, date_from=TODAY.isoformat(), date_to=TODAY.isoformat())
    assert export(dm, date_from=days_ago(-1).isoformat()) == []  # from tomorrow
    assert export(dm, date_to=days_ago(1).isoformat()) == []  # until yesterday
    response = dm.get(reverse(EXPORT), {"date_from": TODAY.isoformat(), "date_to": days_ago(1).isoformat()})
    assert response.status_code == 400 and "before the start date" in response.content.decode()


def test_export_lists_every_entry_of_the_scope_oldest_first(world, login, both_sites):
    rows = export(login(world.data_manager))
    entries = entries_for(world.data_manager)
    assert list(dict.fromkeys(r["event id"] for r in rows)) == [e.slug for e in entries]
    assert {"trials.DoseLevel", "patients.Subject", "patients.Consent"} - {r["table"] for r in rows} == {
        "patients.Consent"}  # design records for the data manager; nobody consented yet


def test_export_is_recorded_and_append_only(world, login, both_sites):
    export(login(world.data_manager), site=world.site_a.pk, table="patients.Subject")
    record = AuditExport.objects.get()
    assert record.exported_by == world.data_manager
    assert record.filters == {"date_from": None, "date_to": None, "site": "SA", "user": None,
                              "table": "patients.Subject", "subject": None}
    with pytest.raises(DatabaseError), transaction.atomic():
        AuditExport.objects.filter(pk=record.pk).update(format="xml")
    with pytest.raises(DatabaseError), transaction.atomic():
        AuditExport.objects.filter(pk=record.pk).delete()

    root = UserFactory(username="root", is_superuser=True)
    [event] = entries_for(root, table="audit.AuditExport")
    assert (event.action, event.username, event.reason) == ("insert", "dm", "Audit trail export")
    assert event.url == reverse(EXPORT)
    assert {c.field for c in event.changes} >= {"exported_by_id", "filters", "format"}
    assert entries_for(world.data_manager, table="audit.AuditExport") == []  # no trial: superusers only


def test_subject_export_covers_the_subject_and_its_records_in_scope_only(world, login, both_sites, monitor_b):
    a = both_sites["a"]
    rows = export(login(world.monitor), subject=a.pk)
    assert {(r["table"], r["site"]) for r in rows} == {("patients.Subject", "SA"),
                                                       ("patients.SubjectTransition", "SA")}
    assert str(a.pk) in {r["record id"] for r in rows if r["table"] == "patients.Subject"}
    assert AuditExport.objects.get().filters["subject"] == a.code
    assert login(monitor_b).get(reverse(EXPORT), {"subject": a.pk}).status_code == 400
    assert AuditExport.objects.count() == 1  # a refused export is not recorded as one
