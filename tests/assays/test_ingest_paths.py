"""The two ways ingestion writes, with real transactions: one INSERT that is its own transaction (a small
post whose draws exist) and COPY inside a transaction (larger batches, new draws, corrections). Awkward
texts round-trip through both, a NUL is refused, and every row carries its request's audit context."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from assays.models import Analyte, AnalyteUnit, ReferenceRange, Result
from assays.services import INSERT_MAX_ROWS
from audit.selectors import AuditFilters, AuditScope, list_audit_entries
from locking.services import lock_scope
from tests.api.support import post_results, result_row

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("restore_catalogue")]

# Texts that COPY's text format must escape (tab, newline, carriage return, backslash, a literal \N that is
# not NULL, a backslash before a digit as in an octal escape) and text outside ASCII.
# The literal text \u0000 (a backslash, not a NUL) is sent in JSON as \\u0000, which holds a NUL's escape: the API
# then leaves the batch's texts to be checked row by row, and they are stored.
AWKWARD = ["tab\there", "new\nline", "carriage\rreturn", "back\\slash", "\\N", "\\011", "trailing\\", "Zürich·血液",
           "'quoted'", "end\\.", "\t\n\\", "\\u0000"]


def awkward_rows(subject, count: int) -> list[dict]:
    """``count`` rows whose source references and accession numbers hold the awkward texts."""
    return [result_row(subject, n, source_ref=f"{AWKWARD[n % len(AWKWARD)]}#{n}",
                       accession_number=f"{AWKWARD[n % len(AWKWARD)]}"[:30] + f"/{n // 20}")
            for n in range(count)]


@pytest.fixture(autouse=True)
def catalogue(db):
    """CRP as the migration seeds it (a transactional test's flush empties the catalogue)."""
    crp = Analyte.objects.get_or_create(code="CRP", defaults={"name": "C reactive protein", "loinc": "1988-5",
                                                              "canonical_unit": "mg/L", "lloq": 0.5})[0]
    AnalyteUnit.objects.get_or_create(analyte=crp, unit="mg/L", defaults={"factor": 1})
    ReferenceRange.objects.get_or_create(analyte=crp, defaults={"low": None, "high": 5})


@pytest.mark.parametrize("count", [len(AWKWARD), INSERT_MAX_ROWS + 20], ids=["insert", "copy"])
def test_awkward_texts_are_stored_exactly_as_sent(subject, lab, count):
    rows = awkward_rows(subject, count)
    response = post_results(lab, {"results": rows})
    assert response.status_code == 201, response.json()
    stored = {r.source_ref: r for r in Result.objects.select_related("draw")}
    assert sorted(stored) == sorted(row["source_ref"] for row in rows)
    for row in rows:
        assert stored[row["source_ref"]].draw.accession_number == row["accession_number"]
        assert (stored[row["source_ref"]].value_text, stored[row["source_ref"]].value) == ("12.5", 12.5)
    again = post_results(lab, {"results": rows})  # each reference is found again: nothing is stored twice
    assert again.status_code == 200 and again.json()["unchanged"] == count


@pytest.mark.parametrize("count", [2, INSERT_MAX_ROWS + 20], ids=["insert", "copy"])
def test_a_nul_in_any_row_refuses_the_batch(subject, lab, count):
    rows = awkward_rows(subject, count)
    rows[-1]["source_ref"] = "nul\x00inside"
    response = post_results(lab, {"results": rows})
    assert response.status_code == 400
    assert {(e["index"], e["code"]) for e in response.json()["rows"]} == {(count - 1, "null_character")}
    assert not Result.objects.exists()


@pytest.mark.parametrize("count", [2, INSERT_MAX_ROWS + 20], ids=["insert", "copy"])
@pytest.mark.parametrize(("name", "limit"), [("source_ref", 80), ("subject", 40), ("accession_number", 40),
                                             ("specimen", 6), ("value", 40), ("unit", 30)])
def test_a_text_longer_than_its_column_in_a_batch_of_texts_is_refused_on_its_row(subject, lab, count, name, limit):
    rows = awkward_rows(subject, count)
    rows[count // 2][name] = "9" * (limit + 1)
    response = post_results(lab, {"results": rows})
    assert response.status_code == 400
    assert response.json()["field_errors"] == {f"results[{count // 2}].{name}": [f"At most {limit} characters."]}
    assert {(e["index"], e["code"]) for e in response.json()["rows"]} == {(count // 2, "too_long")}
    assert not Result.objects.exists()


def test_a_batch_of_numbers_is_stored_as_sent_and_its_long_text_refused_on_its_row(subject, lab):
    """Values sent as JSON numbers take the decoder's other path (each row made in Python, its texts then tested
    before the batch may be streamed): stored as Python writes the number, and a text too long refused."""
    count = INSERT_MAX_ROWS + 20
    rows = [result_row(subject, n, value=[12.5, 7, 1e-7][n % 3], accession_number=f"NUM-{n // 20}")
            for n in range(count)]
    refused = [dict(row) for row in rows]
    refused[count - 1]["accession_number"] = "A" * 41
    response = post_results(lab, {"results": refused})
    assert response.status_code == 400
    assert {(e["index"], e["code"]) for e in response.json()["rows"]} == {(count - 1, "too_long")}
    assert not Result.objects.exists()
    assert post_results(lab, {"results": rows}).status_code == 201
    assert {r.value_text for r in Result.objects.all()} == {"1e-07", "12.5", "7"}


def test_a_small_post_to_an_existing_draw_is_one_write_statement_with_its_audit_context(subject, lab):
    assert post_results(lab, result_row(subject, 1)).status_code == 201  # the draw exists from now on
    with CaptureQueriesContext(connection) as queries:
        response = post_results(lab, {"results": [result_row(subject, 2), result_row(subject, 3, value="7")]})
    assert response.status_code == 201, response.json()
    writes = [q["sql"] for q in queries.captured_queries if not q["sql"].lstrip().upper().startswith("SELECT")
              or "INSERT" in q["sql"]]
    assert len(writes) == 1 and "INSERT INTO assays_result" in writes[0] and "_pgh_attach_context" in writes[0]
    assert not [q for q in queries.captured_queries if "locking_lock" in q["sql"] and "assays_" not in q["sql"]]
    trail = list(list_audit_entries(scope=AuditScope(everything=True), filters=AuditFilters(table="assays.Result")))
    inserted = {e.record_id: e for e in trail if e.action == "insert"}
    new = Result.objects.filter(source_ref__in=["LIS-2", "LIS-3"])
    assert {inserted[str(r.pk)].request_id for r in new} == {response["X-Request-ID"]}
    assert {inserted[str(r.pk)].service_account for r in new} == {"Lab A"}
    assert all(dt.datetime.now(dt.UTC) - r.recorded_at < dt.timedelta(minutes=5) for r in new)


def test_the_subjects_read_carries_the_lock_that_refuses_the_row(world, subject, lab):
    assert post_results(lab, result_row(subject, 1)).status_code == 201
    lock_scope(trial=world.trial, subject=subject, level="freeze", reason="Interim analysis", by=world.data_manager)
    response = post_results(lab, result_row(subject, 2))
    assert response.status_code == 409
    [row] = response.json()["rows"]
    assert row["code"] == "data_frozen" and "Interim analysis" in row["message"]
    assert Result.objects.count() == 1
    # A database lock of the site outranks the subject's freeze, as check_writable ranks them.
    lock_scope(trial=world.trial, site=world.site_a, level="lock", reason="Final analysis", by=world.data_manager)
    [row] = post_results(lab, result_row(subject, 2)).json()["rows"]
    assert row["code"] == "data_locked" and "Final analysis" in row["message"]


def test_a_correction_supersedes_by_copy_with_the_reason_in_the_trail(subject, lab):
    rows = [result_row(subject, n, accession_number=f"ACC-{n // 20}") for n in range(INSERT_MAX_ROWS + 10)]
    assert post_results(lab, {"results": rows}).status_code == 201
    fixed = [{**row, "value": "13", "correction_reason": "Re-run\tafter calibration"} for row in rows]
    response = post_results(lab, {"results": fixed})
    assert response.status_code == 201 and response.json()["corrected"] == len(rows)
    current = Result.objects.filter(superseded=False)
    assert {(r.value, r.correction_reason, r.status) for r in current} == {(13.0, "Re-run\tafter calibration",
                                                                             "corrected")}
    trail = list(list_audit_entries(scope=AuditScope(everything=True), filters=AuditFilters(table="assays.Result")))
    assert {e.reason for e in trail if e.action == "update"} == {"Re-run\tafter calibration"}
    assert {e.request_id for e in trail if e.action == "insert" and e.record_id in {str(r.pk) for r in current}} == {
        response["X-Request-ID"]}
