"""Result ingestion through POST /api/v1/results/ with the seeded analyte catalogue (one object or a batch)."""

from __future__ import annotations

import datetime as dt

import pytest

from assays.models import LabDraw, Result
from assays.services import MAX_BATCH
from patients.models import FollowUp
from patients.services import enrolment, outcome
from tests.api.support import post_results, result_row
from tests.factories import at, consented, days_ago, infused_subject

pytestmark = pytest.mark.django_db


@pytest.fixture
def subject(world):
    """Consented 29 days ago, a 30-year-old woman at site A."""
    return consented(trial=world.trial, site=world.site_a, coordinator=world.coordinator)


def only_result():
    (result,) = Result.objects.select_related("analyte", "draw")
    return result


def test_single_result_is_created_then_reposting_it_changes_nothing(subject, lab):
    first = post_results(lab, result_row(subject, 1))
    assert first.status_code == 201, first.json()
    assert first.json() == {"created": 1, "unchanged": 0, "corrected": 0}
    stored = only_result()
    assert (stored.source_ref, stored.analyte.code, stored.value, stored.superseded) == ("LIS-1", "CRP", 12.5, False)
    assert stored.draw.accession_number == "ACC-1" and stored.subject_id == subject.pk

    again = post_results(lab, result_row(subject, 1))
    assert again.status_code == 200, again.json()
    assert again.json() == {"created": 0, "unchanged": 1, "corrected": 0}
    assert only_result().pk == stored.pk
    assert LabDraw.objects.count() == 1


def test_correction_keeps_the_previous_value_as_superseded(subject, lab):
    assert post_results(lab, result_row(subject, 1, value="12.5")).status_code == 201
    corrected = post_results(lab, result_row(subject, 1, value="21.5", correction_reason="Transposed digits"))
    assert corrected.status_code == 201, corrected.json()
    assert corrected.json() == {"created": 0, "unchanged": 0, "corrected": 1}
    old = Result.objects.get(superseded=True)
    new = Result.objects.get(superseded=False)
    assert (old.value_text, old.value, old.status) == ("12.5", 12.5, "final")
    assert (new.value_text, new.value, new.status, new.correction_reason) == ("21.5", 21.5, "corrected",
                                                                               "Transposed digits")
    assert old.draw_id == new.draw_id
    # The audit trail carries the correction's reason on both the superseding update and the new row
    # (whose insert the trail reads from the row itself).
    from audit.selectors import AuditFilters, AuditScope, list_audit_entries

    def trail(result: Result) -> list:
        filters = AuditFilters(table="assays.Result", record_id=result.pk)
        return list(list_audit_entries(scope=AuditScope(everything=True), filters=filters))

    superseding = [e for e in trail(old) if e.action == "update"]
    [inserted] = trail(new)
    assert inserted.action == "insert" and [e.reason for e in superseding] == ["Transposed digits"]
    assert inserted.reason == "Transposed digits" and inserted.request_id == corrected["X-Request-ID"]
    # The superseded value is still readable through the API.
    listed = lab.get("/api/v1/results/", {"superseded": "true"}).json()["results"]
    assert [(r["id"], r["value_text"]) for r in listed] == [(old.pk, "12.5")]


def test_correction_of_an_unknown_reference_is_refused(subject, lab):
    response = post_results(lab, result_row(subject, 1, correction_reason="Typo"))
    assert response.status_code == 400
    assert response.json()["rows"][0]["code"] == "nothing_to_correct"
    assert "results[0].correction_reason" in response.json()["field_errors"]
    assert not Result.objects.exists() and not LabDraw.objects.exists()


def test_rejected_batch_lists_each_failing_row_and_stores_nothing(world, subject, lab):
    rows = [result_row(subject, 0, accession_number="NEW-0"),
            result_row(subject, 1, accession_number="NEW-1", unit="g/dL"),
            result_row(subject, 2, accession_number="NEW-2", value="positive"),
            result_row(subject, 3, accession_number="NEW-3", specimen="urine", unit="parsecs"),
            result_row(subject, 4, accession_number="NEW-4")]
    response = post_results(lab, {"results": rows})
    assert response.status_code == 400, response.json()
    body = response.json()
    assert body["code"] == "rows_invalid"
    assert sorted((e["index"], e["field"], e["code"]) for e in body["rows"]) == [
        (1, "results[1].unit", "unit_not_convertible"),
        (2, "results[2].value", "invalid_value"),
        (3, "results[3].specimen", "unknown_specimen"),
        (3, "results[3].unit", "unknown_unit"),
    ]
    assert all(e["message"] for e in body["rows"])
    assert set(body["field_errors"]) == {"results[1].unit", "results[2].value", "results[3].specimen",
                                         "results[3].unit"}
    assert not Result.objects.exists()
    assert not LabDraw.objects.exists()  # not even the draws of the valid rows 0 and 4


def test_same_reference_twice_in_one_batch_is_refused(subject, lab):
    rows = [result_row(subject, 1), result_row(subject, 1, value="13")]
    response = post_results(lab, {"results": rows})
    assert response.status_code == 400
    assert [(e["index"], e["field"], e["code"]) for e in response.json()["rows"]] == [
        (1, "results[1].source_ref", "duplicate_in_batch")]
    assert not Result.objects.exists() and not LabDraw.objects.exists()


def test_collection_after_death_is_refused(world, lab):
    subject = infused_subject(trial=world.trial, site=world.site_a, coordinator=world.coordinator,
                              investigator=world.investigator, day0=days_ago(10))
    outcome.record_follow_up(subject=subject, kind=FollowUp.Kind.DEATH, event_on=days_ago(3),
                             cause_of_death="Sepsis", by=world.coordinator)
    before = result_row(subject, 1, accession_number="ACC-B", collected_at=at(days_ago(4)).isoformat())
    after = result_row(subject, 2, accession_number="ACC-A", collected_at=at(days_ago(2)).isoformat())
    refused = post_results(lab, {"results": [before, after]})
    assert refused.status_code == 400
    assert [(e["index"], e["field"], e["code"]) for e in refused.json()["rows"]] == [
        (1, "results[1].collected_at", "after_death")]
    assert not Result.objects.exists() and not LabDraw.objects.exists()
    assert post_results(lab, before).status_code == 201  # up to the day of death is fine


def test_collection_after_withdrawal_of_consent_is_refused(world, subject, lab):
    enrolment.withdraw_consent(subject=subject, withdrawn_on=days_ago(10), reason="Moved away",
                               by=world.coordinator)
    response = post_results(lab, result_row(subject, 1, collected_at=at(days_ago(2)).isoformat()))
    assert response.status_code == 400
    assert response.json()["rows"][0]["code"] == "after_withdrawal"
    assert "results[0].collected_at" in response.json()["field_errors"]
    assert not Result.objects.exists() and not LabDraw.objects.exists()
    assert post_results(lab, result_row(subject, 2, collected_at=at(days_ago(12)).isoformat())).status_code == 201


def test_each_row_of_a_subject_and_time_is_judged_by_that_subject(world, subject, lab):
    """Rows share a site's local date of a collection time, not its verdict: every row of a withdrawn subject's
    draw is refused, each with its own index, while another subject's row at the same time is not."""
    other = consented(trial=world.trial, site=world.site_a, coordinator=world.coordinator)
    enrolment.withdraw_consent(subject=subject, withdrawn_on=days_ago(10), reason="Moved away", by=world.coordinator)
    when = at(days_ago(2)).isoformat()
    rows = [result_row(subject, 1, collected_at=when), result_row(other, 2, accession_number="ACC-2",
                                                                  collected_at=when),
            result_row(subject, 3, collected_at=when, analyte="IL6", unit="pg/mL")]
    response = post_results(lab, {"results": rows})
    assert response.status_code == 400
    assert [(e["index"], e["code"]) for e in response.json()["rows"]] == [(0, "after_withdrawal"),
                                                                          (2, "after_withdrawal")]
    assert post_results(lab, {"results": rows[1:2]}).status_code == 201


@pytest.mark.parametrize(("overrides", "code", "field"), [
    ({"unit": "g/dL"}, "unit_not_convertible", "unit"),  # g/dL is a catalogue unit (HGB), not CRP's
    ({"unit": "furlongs"}, "unknown_unit", "unit"),
    ({"unit": ""}, "unit_required", "unit"),  # a number needs its unit
    ({"value": "positive"}, "invalid_value", "value"),  # qualitative text for a numeric analyte
    ({"value": "NaN"}, "invalid_value", "value"),
    ({"analyte": "NOPE"}, "unknown_analyte", "analyte"),
    ({"collected_at": "2020-01-01T08:00:00"}, "naive_time", "collected_at"),
])
def test_single_result_refusals(subject, lab, overrides, code, field):
    response = post_results(lab, result_row(subject, 1, **overrides))
    assert response.status_code == 400, response.json()
    body = response.json()
    assert body["code"] == "rows_invalid"
    assert [(e["code"], e["field"]) for e in body["rows"]] == [(code, f"results[0].{field}")]
    assert list(body["field_errors"]) == [f"results[0].{field}"]
    assert not Result.objects.exists() and not LabDraw.objects.exists()


@pytest.mark.parametrize(("analyte", "value", "unit", "specimen", "stored", "censored"), [
    ("CRP", "<LLOQ", "mg/L", "serum", 0.3, "<"),  # seeded CRP LLOQ 0.3 mg/L
    ("CRP", ">ULOQ", "mg/L", "serum", 350.0, ">"),
    ("CRP", "<0.5", "mg/dL", "serum", 5.0, "<"),
    ("CRP", "1.2", "mg/dL", "serum", 12.0, ""),  # mg/dL -> mg/L x10
    ("HGB", "9.5", "g/dL", "pb", 95.0, ""),  # g/dL -> g/L x10
    ("ANC", "400", "/uL", "pb", 0.4, ""),  # /uL -> 10^9/L x0.001
])
def test_values_are_normalised_to_the_canonical_unit(subject, lab, analyte, value, unit, specimen, stored,
                                                     censored):
    response = post_results(lab, result_row(subject, 1, analyte=analyte, value=value, unit=unit,
                                            specimen=specimen))
    assert response.status_code == 201, response.json()
    result = only_result()
    assert result.value == pytest.approx(stored)
    assert result.censored == censored
    assert (result.value_text, result.unit_text) == (value, unit)  # as sent


@pytest.mark.parametrize(("analyte", "value", "unit", "flag", "grade"), [
    ("ANC", "0.4", "10*9/L", "L", 4),
    ("ANC", "1.2", "10*9/L", "L", 2),
    ("ANC", "3.0", "10*9/L", "N", 0),
    ("HGB", "9.5", "g/dL", "L", 2),  # 95 g/L in an adult woman (120-155)
    ("CRP", "12.5", "mg/L", "H", None),  # no CTCAE term
])
def test_reference_flag_and_ctcae_grade(subject, lab, analyte, value, unit, flag, grade):
    response = post_results(lab, result_row(subject, 1, analyte=analyte, value=value, unit=unit, specimen="pb"))
    assert response.status_code == 201, response.json()
    result = only_result()
    assert (result.flag, result.ctcae_grade) == (flag, grade)
    listed = lab.get(f"/api/v1/results/{result.pk}/").json()
    assert (listed["flag"], listed["ctcae_grade"]) == (flag, grade)


def test_batch_over_ten_thousand_rows_is_refused(subject, lab):
    row = result_row(subject, 0)
    rows = [{**row, "source_ref": f"LIS-{n}"} for n in range(MAX_BATCH + 1)]
    response = post_results(lab, {"results": rows})
    assert response.status_code == 400
    assert response.json()["code"] == "batch_too_large"
    assert "results" in response.json()["field_errors"]
    assert not Result.objects.exists() and not LabDraw.objects.exists()


def test_malformed_single_body_names_the_field(subject, lab):
    response = post_results(lab, {**result_row(subject, 1), "value": None})
    assert response.status_code == 400
    assert response.json()["code"] == "invalid" and list(response.json()["field_errors"]) == ["value"]
    response = post_results(lab, {**result_row(subject, 1), "extra": 1})
    assert response.status_code == 400 and response.json()["code"] == "invalid"
    assert not Result.objects.exists()


def test_future_collection_time_is_refused(subject, lab):
    future = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=2)).isoformat()
    response = post_results(lab, result_row(subject, 1, collected_at=future))
    assert response.status_code == 400 and response.json()["rows"][0]["code"] == "time_in_future"
    assert not Result.objects.exists()
