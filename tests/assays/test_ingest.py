"""Result ingestion through the API: all-or-nothing batches, idempotency, conflicts and corrections."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from django.db import DatabaseError, IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from assays.models import Analyte, AnalyteUnit, LabDraw, ReferenceRange, Result
from tests.factories import consented, days_ago
from trials.services import issue_service_account

pytestmark = pytest.mark.django_db


@pytest.fixture
def catalogue(db):
    crp = Analyte.objects.get_or_create(code="CRP", defaults={"name": "C reactive protein", "loinc": "1988-5",
                                                              "canonical_unit": "mg/L", "lloq": 0.5})[0]
    AnalyteUnit.objects.get_or_create(analyte=crp, unit="mg/L", defaults={"factor": 1})
    AnalyteUnit.objects.get_or_create(analyte=crp, unit="mg/dL", defaults={"factor": 10})
    ReferenceRange.objects.get_or_create(analyte=crp, defaults={"low": None, "high": 5})
    il6 = Analyte.objects.get_or_create(code="IL6", defaults={"name": "Interleukin 6", "canonical_unit": "pg/mL",
                                                              "lloq": 1.5, "uloq": 5000})[0]
    AnalyteUnit.objects.get_or_create(analyte=il6, unit="pg/mL", defaults={"factor": 1})
    return {"CRP": crp, "IL6": il6}


@pytest.fixture
def versioned(db):
    """The catalogue's version row, which migration assays.0005 creates (a transactional test's flush
    empties every table, so a reused test database may have lost it)."""
    with connection.cursor() as cursor:
        cursor.execute("INSERT INTO assays_catalogueversion (version) SELECT nextval('assays_catalogue_version') "
                       "WHERE NOT EXISTS (SELECT 1 FROM assays_catalogueversion)")


@pytest.fixture
def lab(world):
    _account, token = issue_service_account(trial=world.trial, sites=[world.site_a], name="Lab A",
                                            by=world.data_manager)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


def row(subject, n: int, **overrides):
    base = {"source_ref": f"LIS-{n}", "subject": subject.code, "accession_number": "ACC-1", "specimen": "serum",
            "collected_at": dt.datetime.combine(days_ago(2), dt.time(8), tzinfo=dt.UTC).isoformat(),
            "analyte": "CRP", "value": "12.5", "unit": "mg/L"}
    return {**base, **overrides}


def post(client, body):
    return client.post("/api/v1/results/", data=json.dumps(body), content_type="application/json")


def test_batch_stores_normalised_values_and_reposting_stores_nothing(world, catalogue, lab):
    subject = consented(trial=world.trial, site=world.site_a, coordinator=world.coordinator)
    batch = {"results": [row(subject, 1), row(subject, 2, value="1.2", unit="mg/dL"),
                         row(subject, 3, analyte="IL6", value="<LLOQ", unit="pg/mL")]}
    first = post(lab, batch)
    assert first.status_code == 201, first.json()
    assert first.json() == {"created": 3, "unchanged": 0, "corrected": 0}
    stored = {r.source_ref: r for r in Result.objects.all()}
    assert stored["LIS-2"].value == pytest.approx(12.0) and stored["LIS-2"].unit_text == "mg/dL"
    assert stored["LIS-1"].flag == "H"
    assert stored["LIS-3"].censored == "<" and stored["LIS-3"].value == pytest.approx(1.5)
    assert LabDraw.objects.count() == 1
    again = post(lab, batch)
    assert again.status_code == 200 and again.json()["unchanged"] == 3
    assert Result.objects.count() == 3


def test_rejected_batch_lists_every_failing_row_and_stores_nothing(world, catalogue, lab):
    subject = consented(trial=world.trial, site=world.site_a, coordinator=world.coordinator)
    other = consented(trial=world.trial, site=world.site_b, coordinator=world.coordinator_b)
    future = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).isoformat()
    batch = {"results": [row(subject, 1), row(subject, 2, unit="furlong"), row(subject, 3, value="high"),
                         row(other, 4), row(subject, 5, analyte="NOPE"), row(subject, 6, collected_at=future),
                         row(subject, 1, accession_number="ACC-2"),
                         row(subject, 8, collected_at="2000-01-01T08:00:00+00:00", accession_number="ACC-3")]}
    response = post(lab, batch)
    assert response.status_code == 400
    codes = {(e["index"], e["code"]) for e in response.json()["rows"]}
    assert codes == {(1, "unknown_unit"), (2, "invalid_value"), (3, "unknown_subject"), (4, "unknown_analyte"),
                     (5, "time_in_future"), (6, "duplicate_in_batch"), (7, "before_consent")}
    assert "results[1].unit" in response.json()["field_errors"]
    assert not Result.objects.exists() and not LabDraw.objects.exists()


def test_changed_value_conflicts_unless_sent_as_a_correction(world, catalogue, lab):
    subject = consented(trial=world.trial, site=world.site_a, coordinator=world.coordinator)
    assert post(lab, row(subject, 1)).status_code == 201
    conflict = post(lab, row(subject, 1, value="99"))
    assert conflict.status_code == 409 and conflict.json()["rows"][0]["code"] == "conflicting_result"
    corrected = post(lab, row(subject, 1, value="99", correction_reason="Transcription error"))
    assert corrected.status_code == 201 and corrected.json()["corrected"] == 1
    old, new = Result.objects.order_by("pk")
    assert (old.value_text, old.superseded) == ("12.5", True)
    assert (new.value_text, new.superseded, new.status) == ("99", False, "corrected")


def test_malformed_body_is_a_400_with_the_path(world, catalogue, lab):
    response = post(lab, {"results": [{"source_ref": 5}]})
    assert response.status_code == 400
    assert response.json()["code"] == "invalid"
    assert list(response.json()["field_errors"]) == ["results[0].source_ref"]


@pytest.mark.parametrize("rows", [2, 20])
def test_batch_ingestion_queries_do_not_grow_with_rows(world, catalogue, lab, rows, django_assert_max_num_queries):
    subject = consented(trial=world.trial, site=world.site_a, coordinator=world.coordinator)
    batch = {"results": [row(subject, n, accession_number=f"ACC-{n % 3}") for n in range(rows)]}
    with django_assert_max_num_queries(20):
        assert post(lab, batch).status_code == 201


def test_every_ingested_and_superseded_result_is_in_the_audit_trail(world, catalogue, lab):
    from django.apps import apps

    from audit.selectors import AuditFilters, AuditScope, list_audit_entries

    events = apps.get_model("assays", "ResultEvent")
    subject = consented(trial=world.trial, site=world.site_a, coordinator=world.coordinator)
    first = post(lab, {"results": [row(subject, 1), row(subject, 2)]})
    assert first.status_code == 201
    correction = post(lab, row(subject, 1, value="13", correction_reason="Re-run"))
    assert correction.status_code == 201
    trail = list(list_audit_entries(scope=AuditScope(everything=True), filters=AuditFilters(table="assays.Result")))
    inserts = [e for e in trail if e.action == "insert"]
    values = sorted((c.field, c.new) for e in inserts for c in e.changes if c.field in ("source_ref", "value_text"))
    assert values == [("source_ref", "LIS-1"), ("source_ref", "LIS-1"), ("source_ref", "LIS-2"),
                      ("value_text", "12.5"), ("value_text", "12.5"), ("value_text", "13")]
    assert all(not any(c.field == "superseded" and c.new == "true" for c in e.changes) for e in inserts)
    assert sorted(e.request_id for e in inserts) == sorted([first["X-Request-ID"]] * 2 + [correction["X-Request-ID"]])
    assert {e.service_account for e in inserts} == {"Lab A"}
    [update] = [e for e in trail if e.action == "update"]
    assert [(c.field, c.old, c.new) for c in update.changes] == [("superseded", "false", "true")]
    assert update.reason == "Re-run" and update.request_id == correction["X-Request-ID"]
    # The inserts are the rows themselves: the event table keeps the row-by-row updates only.
    assert list(events.objects.values_list("pgh_label", "source_ref", "superseded")) == [("update", "LIS-1", True)]


def test_a_stored_result_is_never_rewritten_or_deleted(world, catalogue, lab):
    subject = consented(trial=world.trial, site=world.site_a, coordinator=world.coordinator)
    assert post(lab, row(subject, 1)).status_code == 201
    result = Result.objects.get()
    for change in ({"value": 99.0}, {"value_text": "99"}, {"recorded_at": dt.datetime.now(dt.UTC)},
                   {"audit_context": None}):
        with pytest.raises(DatabaseError, match="Cannot update"), transaction.atomic():
            Result.objects.filter(pk=result.pk).update(**change)
    with pytest.raises(DatabaseError, match="Cannot delete"), transaction.atomic():
        Result.objects.filter(pk=result.pk).delete()
    Result.objects.filter(pk=result.pk).update(superseded=True)  # superseding is the one change allowed
    with pytest.raises(DatabaseError, match="Cannot update"), transaction.atomic():
        Result.objects.filter(pk=result.pk).update(superseded=False)
    assert Result.objects.get().value == 12.5


def test_a_result_must_name_its_draws_subject_and_site(world, catalogue, lab):
    subject = consented(trial=world.trial, site=world.site_a, coordinator=world.coordinator)
    other = consented(trial=world.trial, site=world.site_a, coordinator=world.coordinator)
    assert post(lab, row(subject, 1)).status_code == 201
    result = Result.objects.get()
    fields = {f.attname: getattr(result, f.attname) for f in Result._meta.concrete_fields if f.attname != "id"}
    # Checked at the end of each statement (assays.0007), not at a commit the test never makes.
    for wrong in ({"subject_id": other.pk}, {"site_id": world.site_b.pk}):
        with pytest.raises(IntegrityError), transaction.atomic():
            Result.objects.create(**{**fields, "source_ref": "LIS-2", **wrong})
    with pytest.raises(IntegrityError), transaction.atomic():
        LabDraw.objects.filter(pk=result.draw_id).update(subject_id=other.pk)


def test_the_cached_catalogue_is_reloaded_when_it_changes(world, versioned, catalogue, lab):
    subject = consented(trial=world.trial, site=world.site_a, coordinator=world.coordinator)
    refused = post(lab, row(subject, 1, analyte="IL6", unit="fg/mL", value="20000"))
    assert refused.status_code == 400
    assert refused.json()["rows"][0]["code"] in ("unknown_unit", "unit_not_convertible")
    AnalyteUnit.objects.create(analyte=catalogue["IL6"], unit="fg/mL", factor=0.001)  # e.g. in the admin
    assert post(lab, row(subject, 1, analyte="IL6", unit="fg/mL", value="20000")).status_code == 201
    assert Result.objects.get(source_ref="LIS-1").value == pytest.approx(20.0)
    with connection.cursor() as cursor:  # any writer, even raw SQL, bumps the catalogue's version
        cursor.execute("UPDATE assays_analyteunit SET factor = 0.0001 WHERE unit = 'fg/mL'")
    assert post(lab, row(subject, 2, analyte="IL6", unit="fg/mL", value="20000")).status_code == 201
    assert Result.objects.get(source_ref="LIS-2").value == pytest.approx(2.0)


def test_what_an_analyte_and_unit_give_is_kept_only_while_the_catalogue_is_current(world, versioned, catalogue,
                                                                                    lab):
    """Each (analyte, unit) pair sent is resolved once per catalogue version (its unit factor or refusal, its
    accepted texts): every row of the pair gets the same answer, and a change to the catalogue is seen at once."""
    subject = consented(trial=world.trial, site=world.site_a, coordinator=world.coordinator)
    pair = [row(subject, n, analyte="IL6", unit="fg/mL", value=value) for n, value in ((1, "20000"), (2, "30000"))]
    refused = post(lab, {"results": pair})
    assert refused.status_code == 400
    assert [(r["index"], r["code"]) for r in refused.json()["rows"]] == [(0, "unknown_unit"), (1, "unknown_unit")]
    AnalyteUnit.objects.create(analyte=catalogue["IL6"], unit="fg/mL", factor=0.001)
    assert post(lab, {"results": pair}).status_code == 201
    assert sorted(Result.objects.filter(unit_text="fg/mL").values_list("value", flat=True)) == [20.0, 30.0]
    text = row(subject, 3, analyte="IL6", unit="pg/mL", value="Not detected")
    refused = post(lab, text)
    assert refused.status_code == 400 and refused.json()["rows"][0]["code"] == "invalid_value"
    Analyte.objects.filter(pk=catalogue["IL6"].pk).update(qualitative_values=["not detected"])
    assert post(lab, text).status_code == 201
    assert Result.objects.values_list("value_text", "value").get(source_ref="LIS-3") == ("Not detected", None)


def test_a_single_post_reads_token_user_and_memberships_at_once_and_the_catalogue_once(world, versioned,
                                                                                          catalogue, lab):
    subject = consented(trial=world.trial, site=world.site_a, coordinator=world.coordinator)
    assert post(lab, row(subject, 1)).status_code == 201  # the draw exists from now on
    with CaptureQueriesContext(connection) as queries:
        assert post(lab, row(subject, 2)).status_code == 201
    sqls = [q["sql"] for q in queries.captured_queries]
    token = [sql for sql in sqls if "trials_serviceaccount" in sql]
    assert len(token) == 1 and "trials_membership" in token[0] and "axes_accessattempt" in token[0]
    assert not [sql for sql in sqls if "trials_membership" in sql and sql not in token]
    assert not [sql for sql in sqls if "assays_analyteunit" in sql]  # the catalogue is this process's copy
    assert not [sql for sql in sqls if "ON CONFLICT" in sql]  # no upsert of the draw: it exists
