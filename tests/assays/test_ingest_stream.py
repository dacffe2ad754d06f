"""A large batch of new results is checked as it is written (assays.services._stream): it must store what
the usual path stores, column for column, and refuse what the usual path refuses, with the same body,
whatever row is refused and wherever it is, leaving nothing behind (no result, no draw)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest

from assays import services
from assays.lab_grading import grade_lab
from assays.models import Analyte, AnalyteUnit, LabDraw, ReferenceRange, Result
from assays.ranges import pick_range
from assays.services import INSERT_MAX_ROWS
from locking.services import lock_scope
from tests.api.support import post_results, result_row
from tests.factories import consented, days_ago

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("restore_catalogue")]

COUNT = INSERT_MAX_ROWS + 30
VALUES = ["12.5", "<LLOQ", ">ULOQ", "<0.5", "3", "0.2", "5", "5.01", " 7 ", "1e1"]


@pytest.fixture(autouse=True)
def catalogue(db):
    """CRP as the migration seeds it (a transactional test's flush empties the catalogue)."""
    crp = Analyte.objects.get_or_create(code="CRP", defaults={"name": "C reactive protein", "loinc": "1988-5",
                                                              "canonical_unit": "mg/L", "lloq": 0.5,
                                                              "uloq": 300})[0]
    AnalyteUnit.objects.get_or_create(analyte=crp, unit="mg/L", defaults={"factor": 1})
    AnalyteUnit.objects.get_or_create(analyte=crp, unit="mg/dL", defaults={"factor": 10})
    ReferenceRange.objects.get_or_create(analyte=crp, defaults={"low": None, "high": 5})


@pytest.fixture
def streamed(monkeypatch):
    """Counts the batches the streamed path tried, and those it wrote."""
    calls = {"tried": 0, "streamed": 0}
    original = services._stream

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls["tried"] += 1
        outcome = original(*args, **kwargs)
        calls["streamed"] += 1
        return outcome

    monkeypatch.setattr(services, "_stream", counting)
    return calls


def rows_of(subject, prefix: str) -> list[dict]:
    return [result_row(subject, n, source_ref=f"{prefix}-{n}", accession_number=f"{prefix}-ACC-{n // 20}",
                       value=VALUES[n % len(VALUES)], unit="mg/dL" if n % 7 == 3 else "mg/L",
                       collected_at=dt.datetime.combine(days_ago(2 + n // 20), dt.time(8), tzinfo=dt.UTC).isoformat())
            for n in range(COUNT)]


def stored(prefix: str) -> list[tuple]:
    """Every column of the stored rows but the ids, the references' prefix and the time of recording."""
    return [(r.source_ref.split("-", 1)[1], r.draw.accession_number.split("-", 1)[1], r.draw.specimen,
             r.draw.collected_at, r.draw.visit_id, r.draw.subject_id, r.subject_id, r.site_id, r.analyte_id,
             r.value_text, r.unit_text, r.value, r.censored, r.flag, r.ctcae_grade, r.status, r.superseded,
             r.correction_reason, r.recorded_by_id, r.audit_context_id is not None)
            for r in Result.objects.filter(source_ref__startswith=f"{prefix}-").select_related("draw").order_by("pk")]


def test_a_streamed_batch_stores_what_the_usual_path_stores(subject, lab, streamed, monkeypatch):
    response = post_results(lab, {"results": rows_of(subject, "S")})
    assert response.status_code == 201 and response.json() == {"created": COUNT, "unchanged": 0, "corrected": 0}
    assert streamed["streamed"] == 1
    monkeypatch.setattr(services, "_may_stream", lambda batch, found: False)
    assert post_results(lab, {"results": rows_of(subject, "U")}).json() == response.json()
    assert streamed["streamed"] == 1
    assert stored("S") == stored("U") and len(stored("S")) == COUNT
    assert {flag for *_, flag, _grade, _s, _ss, _r, _u, _c in stored("S")} == {"H", "N"}


def test_a_repost_of_a_streamed_batch_stores_nothing(subject, lab, streamed):
    rows = rows_of(subject, "S")
    assert post_results(lab, {"results": rows}).status_code == 201
    again = post_results(lab, {"results": rows})  # the COPY meets the unique index: the usual path answers
    assert again.status_code == 200 and again.json() == {"created": 0, "unchanged": COUNT, "corrected": 0}
    assert streamed == {"tried": 2, "streamed": 1} and Result.objects.count() == COUNT


def scenario(lab, subject, prefix: str, kind: str) -> tuple[int, Any, list[tuple]]:
    """Post half of a batch, then the batch as ``kind`` says; the answer to the second post and what is stored."""
    rows = rows_of(subject, prefix)
    assert post_results(lab, {"results": rows[:COUNT // 2]}).status_code == 201
    if kind == "identical":
        rows = rows[:COUNT // 2]
    elif kind == "conflict":
        rows[3]["value"] = "99"
    elif kind == "conflict_late":
        rows[COUNT // 2 - 1]["value"] = "99"
    response = post_results(lab, {"results": rows})
    return response.status_code, json.dumps(response.json()).replace(f"{prefix}-", "P-"), stored(prefix)


@pytest.mark.parametrize("kind", ["identical", "half_new", "conflict", "conflict_late"])
def test_a_batch_meeting_current_results_gives_the_usual_outcome(subject, lab, monkeypatch, kind):
    streamed = scenario(lab, subject, "S", kind)
    monkeypatch.setattr(services, "_may_stream", lambda batch, found: False)
    assert streamed == scenario(lab, subject, "U", kind)
    assert streamed[0] == {"identical": 200, "half_new": 201}.get(kind, 409)


def fault(name: str, row: dict, subject, world) -> None:
    """Make ``row`` one the checks refuse (``name``: which rule)."""
    if name == "unknown_analyte":
        row["analyte"] = "NOPE"
    elif name == "unknown_unit":
        row["unit"] = "furlong"
    elif name == "invalid_value":
        row["value"] = "twelve"
    elif name == "negative":
        row["value"] = "-1"
    elif name == "overflow":
        row["value"], row["unit"] = "1e308", "mg/dL"  # times 10 in the analyte's unit: not finite
    elif name == "duplicate_in_batch":
        row["source_ref"] = "S-5"
    elif name == "too_long":
        row["source_ref"] = "x" * 81
    elif name == "null_character":
        row["value"] = "1\x002"
    elif name == "unknown_specimen":
        row["specimen"] = "sweat"
    elif name == "unknown_status":
        row["status"] = "guessed"
    elif name == "before_consent":
        row["collected_at"] = dt.datetime(2001, 1, 1, 8, tzinfo=dt.UTC).isoformat()
        row["accession_number"] = "OLD-1"
    elif name == "accession_mismatch":
        row["specimen"] = "plasma"  # another specimen for a draw the batch already names
    elif name == "time_in_future":
        row["collected_at"] = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).isoformat()
        row["accession_number"] = "LATER-1"
    elif name == "naive_time":
        row["collected_at"] = "2024-01-01T08:00:00"
    elif name == "unknown_subject":
        row["subject"] = "NOBODY"
    elif name == "correction":
        row["correction_reason"] = "typo"
    else:
        raise AssertionError(name)


FAULTS = ["unknown_analyte", "unknown_unit", "invalid_value", "negative", "overflow", "duplicate_in_batch", "too_long",
          "null_character", "unknown_specimen", "unknown_status", "before_consent", "accession_mismatch",
          "time_in_future", "naive_time", "unknown_subject", "correction"]
NOT_STREAMED = {"time_in_future", "naive_time", "unknown_subject", "correction", "too_long", "null_character"}


@pytest.mark.parametrize("where", [0, COUNT // 2, COUNT - 1], ids=["first", "middle", "last"])
@pytest.mark.parametrize("name", FAULTS)
def test_a_refused_row_gives_the_usual_refusal_and_stores_nothing(world, subject, lab, monkeypatch, streamed, name,
                                                                  where):
    calls = streamed
    rows = rows_of(subject, "S")
    fault(name, rows[where], subject, world)
    if name == "duplicate_in_batch" and where == 0:
        rows[0]["source_ref"] = rows[COUNT - 1]["source_ref"]
    draws = LabDraw.objects.count()
    streamed = post_results(lab, {"results": rows})
    monkeypatch.setattr(services, "_may_stream", lambda batch, found: False)
    usual = post_results(lab, {"results": rows})
    assert (streamed.status_code, streamed.json()) == (usual.status_code, usual.json())
    assert streamed.status_code == 400
    assert not Result.objects.exists() and LabDraw.objects.count() == draws
    # A row planned before the checks (time, subject, correction; a text that does not fit its column, as a new
    # draw's are written first) keeps the batch off the streamed path.
    assert calls["tried"] == (0 if name in NOT_STREAMED else 1) and calls["streamed"] == 0


def test_rows_of_a_frozen_subject_give_the_usual_conflict(world, subject, lab, monkeypatch):
    other = consented(trial=world.trial, site=world.site_a, coordinator=world.coordinator)
    rows = rows_of(subject, "S") + [result_row(other, n, source_ref=f"O-{n}", accession_number="O-ACC")
                                    for n in range(3)]
    lock_scope(trial=world.trial, subject=other, level="freeze", reason="Interim analysis", by=world.data_manager)
    streamed = post_results(lab, {"results": rows})
    monkeypatch.setattr(services, "_may_stream", lambda batch, found: False)
    usual = post_results(lab, {"results": rows})
    assert (streamed.status_code, streamed.json()) == (usual.status_code, usual.json())
    assert streamed.status_code == 409 and {r["code"] for r in streamed.json()["rows"]} == {"data_frozen"}
    assert not Result.objects.exists()


def test_a_streamed_repost_inside_an_idempotent_request_rolls_back_to_its_savepoint(subject, lab, streamed):
    """Under an Idempotency-Key the write runs inside the request's transaction: the COPY that meets the
    unique index rolls back to its savepoint, and the usual path answers within the same transaction."""
    rows = rows_of(subject, "S")

    def post(key: str) -> Any:
        return lab.post("/api/v1/results/", data=json.dumps({"results": rows}), content_type="application/json",
                        HTTP_IDEMPOTENCY_KEY=key)

    first = post("k-1")
    assert first.status_code == 201 and first.json()["created"] == COUNT
    again = post("k-2")
    assert again.status_code == 200 and again.json() == {"created": 0, "unchanged": COUNT, "corrected": 0}
    assert post("k-2").json() == again.json()  # the key's stored answer
    assert streamed == {"tried": 2, "streamed": 1} and Result.objects.count() == COUNT


# ALT around each CTCAE bound for any reference range of the catalogue (ULN 35 to 50): above the ULN, 3x, 5x, 20x.
ALT_VALUES = ["0", "35", "35.000001", "40", "40.0000001", "50", "50.000001", "105", "105.00001", "120", "120.0001",
              "150", "150.00001", "175.1", "200", "250.0001", "700", "800", "1000", "1000.000001", "19999", "20000"]


def test_a_streamed_batch_grades_each_value_as_grade_lab_does(subject, lab, streamed, monkeypatch):
    """The streamed path grades with one grader per reference range (``lab_grader``): each stored grade is
    ``grade_lab``'s for the subject's range, and the usual path stores the same rows."""
    alt = Analyte.objects.get_or_create(code="ALT", defaults={
        "name": "Alanine aminotransferase", "loinc": "1742-6", "canonical_unit": "U/L", "physiological_low": 0,
        "physiological_high": 20_000, "ctcae_term": "alt_increased"})[0]  # as the migration seeds it
    AnalyteUnit.objects.get_or_create(analyte=alt, unit="U/L", defaults={"factor": 1})
    if not alt.ranges.exists():
        ReferenceRange.objects.create(analyte=alt, low=7, high=40)
    rows = rows_of(subject, "G")
    for n, row in enumerate(rows):
        row.update(analyte="ALT", unit="U/L", value=ALT_VALUES[n % len(ALT_VALUES)])
    assert post_results(lab, {"results": rows}).status_code == 201 and streamed["streamed"] == 1
    monkeypatch.setattr(services, "_may_stream", lambda batch, found: False)
    for row in rows:
        row["source_ref"] = "V" + row["source_ref"][1:]
        row["accession_number"] = "V" + row["accession_number"][1:]
    assert post_results(lab, {"results": rows}).status_code == 201 and streamed["streamed"] == 1
    assert stored("G") == stored("V")
    low, high = pick_range([(r.sex, r.age_min_years, r.age_max_years, r.low, r.high) for r in alt.ranges.all()],
                           subject.sex, subject.age_at_consent)
    assert high is not None
    graded = [(r.value, r.ctcae_grade) for r in Result.objects.filter(source_ref__startswith="G-")]
    assert graded and all(grade == grade_lab(term="alt_increased", value=value, lln=low, uln=high)
                          for value, grade in graded)
    assert {grade for _, grade in graded} == {0, 1, 2, 3, 4}
