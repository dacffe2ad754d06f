"""A change to signed data marks the signature invalid, however it is written (service, API, raw SQL)."""

from __future__ import annotations

from decimal import Decimal

import pytest
from django.db import DatabaseError, connection, transaction

from assays.models import LabDraw
from patients.services import enrolment, safety
from signatures.models import Signature
from signatures.selectors import verify_signature
from tests.api.support import api_client, post_results, result_row
from tests.factories import at, consented, days_ago
from tests.signatures.conftest import record_event, reload, sign

pytestmark = pytest.mark.django_db


def sql(statement: str, params: list | None = None) -> None:
    with connection.cursor() as cursor:
        cursor.execute(statement, params or [])


def test_recording_an_adverse_event_through_the_service_invalidates_the_casebook_signature(world, subject):
    signature = sign(world, subject)
    event = record_event(world, subject, term="Hypokalaemia", grade=2)
    signature = reload(signature)
    assert not signature.is_valid
    assert signature.invalidated_at >= signature.signed_at
    assert signature.invalidated_reason == f"patients.AdverseEvent #{event.pk} inserted"
    assert not verify_signature(signature).matches


def test_a_change_through_the_api_invalidates_the_casebook_signature(world, subject):
    signature = sign(world, subject)
    response = api_client(world.coordinator).post("/api/v1/medications/", {
        "subject": subject.code, "drug": "tocilizumab", "dose": "8", "dose_unit": "mg/kg", "route": "iv",
        "given_at": at(days_ago(1)).isoformat()}, format="json")
    assert response.status_code == 201, response.json()
    signature = reload(signature)
    assert not signature.is_valid
    assert signature.invalidated_reason == f"patients.ConcomitantMedication #{response.json()['id']} inserted"


def test_a_raw_sql_update_invalidates_and_verification_reports_the_mismatch(world, subject):
    signature = sign(world, subject)
    assert verify_signature(signature).matches
    sql("UPDATE patients_adverseevent SET grade = 4 WHERE subject_id = %s", [subject.pk])
    signature = reload(signature)
    event = subject.adverse_events.get()
    assert signature.invalidated_reason == f"patients.AdverseEvent #{event.pk} updated"
    check = verify_signature(signature)
    assert not check.matches and check.current_hash != check.stored_hash == signature.content_hash


def test_a_raw_sql_delete_invalidates(world, subject):
    signature = sign(world, subject)
    safety.record_medication(subject=subject, drug="paracetamol", dose=Decimal("1"), dose_unit="g", route="oral",
                             given_at=at(days_ago(2)), by=world.coordinator)
    signature_after = sign(world, subject)  # signs the casebook with the medication in it
    sql("DELETE FROM patients_concomitantmedication WHERE subject_id = %s", [subject.pk])
    assert not reload(signature).is_valid
    assert reload(signature_after).invalidated_reason.endswith("deleted")


def test_a_change_of_the_subject_row_invalidates_the_casebook(world, subject):
    signature = sign(world, subject)
    enrolment.amend_subject(subject=subject, changes={"prior_lines": 3}, reason="Source document", by=world.coordinator)
    assert reload(signature).invalidated_reason == f"patients.Subject #{subject.pk} updated"


def test_an_update_that_changes_only_updated_at_invalidates_nothing(world, subject):
    signature = sign(world, subject)
    sql("UPDATE patients_adverseevent SET updated_at = now() + interval '1 hour' WHERE subject_id = %s", [subject.pk])
    sql("UPDATE patients_subject SET updated_at = now() + interval '1 hour' WHERE id = %s", [subject.pk])
    signature = reload(signature)
    assert signature.is_valid
    assert verify_signature(signature).matches


def test_a_change_of_another_record_leaves_a_form_signature_valid(world, subject):
    event = subject.adverse_events.get()
    form_signature = sign(world, subject, record=event)
    casebook_signature = sign(world, subject)
    other_event = record_event(world, subject, term="Nausea", grade=1)
    sql("UPDATE patients_adverseevent SET grade = 2 WHERE id = %s", [other_event.pk])
    assert reload(form_signature).is_valid
    assert verify_signature(reload(form_signature)).matches
    assert not reload(casebook_signature).is_valid


def test_a_change_of_the_signed_record_invalidates_its_form_signature(world, subject):
    event = subject.adverse_events.get()
    form_signature = sign(world, subject, record=event)
    sql("UPDATE patients_adverseevent SET term = 'Febrile neutropaenia' WHERE id = %s", [event.pk])
    assert reload(form_signature).invalidated_reason == f"patients.AdverseEvent #{event.pk} updated"


def test_a_new_part_of_a_signed_form_invalidates_the_form_signature(world, subject):
    event = record_event(world, subject, category="crs", term="Cytokine release syndrome", grade=None,
                         related_to_product="definite")
    form_signature = sign(world, subject, record=event)
    assessment = safety.record_crs_assessment(event=event, assessed_at=at(days_ago(2)), by=world.coordinator,
                                              components={"max_temp_c": Decimal("39.2")})
    assert not reload(form_signature).is_valid
    # Both the new assessment and the event's derived grade changed: the reason names the first change.
    assert reload(form_signature).invalidated_reason in (
        f"patients.CrsAssessment #{assessment.pk} inserted", f"patients.AdverseEvent #{event.pk} updated")


def test_another_subjects_change_leaves_the_signature_valid(world, subject):
    signature = sign(world, subject)
    other = consented(trial=world.trial, site=world.site_a, coordinator=world.coordinator)
    record_event(world, other)
    sql("UPDATE patients_subject SET prior_lines = 7 WHERE id = %s", [other.pk])
    assert reload(signature).is_valid


@pytest.mark.parametrize("signed_first", [True, False], ids=["signed-first", "signed-last"])
def test_a_statement_changing_signed_and_unsigned_subjects_invalidates_the_signed_ones(world, subject, lab,
                                                                                       signed_first):
    """The trigger's test for a valid signature covers every subject the statement changed, not one of them."""
    other = consented(trial=world.trial, site=world.site_a, coordinator=world.coordinator)
    signed, unsigned = (subject, other) if signed_first else (other, subject)
    for s in (subject, other):  # the draws exist: only the results' statement changes both subjects
        assert post_results(lab, result_row(s, 99, source_ref=f"{s.code}-first", accession_number=f"ACC-{s.code}")
                            ).status_code == 201
    signature = sign(world, signed)
    rows = [result_row(s, n, source_ref=f"{s.code}-{n}", accession_number=f"ACC-{s.code}")
            for s in (subject, other) for n in range(30)]
    response = post_results(lab, {"results": rows})
    assert response.status_code == 201, response.json()
    assert reload(signature).invalidated_reason.startswith("assays.")
    assert not Signature.objects.filter(subject=unsigned).exists()


def test_laboratory_results_copied_in_invalidate_the_casebook_and_the_draws_form(world, subject, lab):
    assert post_results(lab, result_row(subject, 1, accession_number="ACC-1")).status_code == 201
    first_draw = LabDraw.objects.get(subject=subject)
    draw_signature = sign(world, subject, record=first_draw)
    event_signature = sign(world, subject, record=subject.adverse_events.get())
    casebook_signature = sign(world, subject)

    batch = [result_row(subject, n, accession_number="ACC-2") for n in range(2, 12)]
    response = post_results(lab, {"results": batch})
    assert response.status_code == 201, response.json()
    assert reload(casebook_signature).invalidated_reason == "assays.LabDraw #{} inserted".format(
        LabDraw.objects.get(accession_number="ACC-2").pk)
    assert reload(draw_signature).is_valid and reload(event_signature).is_valid

    correction = result_row(subject, 1, accession_number="ACC-1", value="13.5", correction_reason="Re-run")
    assert post_results(lab, correction).status_code == 201
    assert not reload(draw_signature).is_valid
    assert reload(event_signature).is_valid


def test_a_statement_of_many_rows_gives_one_reason(world, subject, lab):
    assert post_results(lab, result_row(subject, 1, accession_number="ACC-1")).status_code == 201
    draw = LabDraw.objects.get(subject=subject)
    signature = sign(world, subject, record=draw)
    sql("INSERT INTO assays_result (draw_id, subject_id, site_id, analyte_id, source_ref, value_text, unit_text, "
        "value, censored, flag, status, superseded, correction_reason, recorded_by_id, recorded_at) "
        "SELECT draw_id, subject_id, site_id, analyte_id, source_ref || '-' || g, value_text, unit_text, value, "
        "censored, flag, status, superseded, correction_reason, recorded_by_id, recorded_at "
        "FROM assays_result, generate_series(1, 3) g WHERE draw_id = %s", [draw.pk])
    assert reload(signature).invalidated_reason == "assays.Result: 3 rows inserted"


def test_truncating_a_table_invalidates_casebooks_and_that_forms_signatures(world, subject, lab):
    assert post_results(lab, result_row(subject, 1)).status_code == 201
    draw_signature = sign(world, subject, record=LabDraw.objects.get(subject=subject))
    event_signature = sign(world, subject, record=subject.adverse_events.get())
    casebook_signature = sign(world, subject)
    sql("SET CONSTRAINTS ALL IMMEDIATE")  # TRUNCATE refuses a table with pending (deferred) FK checks
    sql("TRUNCATE assays_result")
    assert reload(draw_signature).invalidated_reason == "assays.Result: all rows truncated"
    assert not reload(casebook_signature).is_valid
    assert reload(event_signature).is_valid


def test_an_invalidated_signature_stays_invalid_after_the_data_is_changed_back(world, subject):
    event = subject.adverse_events.get()
    signature = sign(world, subject)
    sql("UPDATE patients_adverseevent SET grade = 4 WHERE id = %s", [event.pk])
    first = reload(signature).invalidated_at
    sql("UPDATE patients_adverseevent SET grade = 3 WHERE id = %s", [event.pk])
    signature = reload(signature)
    assert signature.invalidated_at == first and not signature.is_valid
    assert verify_signature(signature).matches  # the content is back, the signature still needs re-signing


# --- the signature row itself ----------------------------------------------------------------------


@pytest.mark.parametrize("statement", [
    "DELETE FROM signatures_signature WHERE id = %s",
    "UPDATE signatures_signature SET meaning = 'review' WHERE id = %s",
    "UPDATE signatures_signature SET content_hash = repeat('0', 64) WHERE id = %s",
    "UPDATE signatures_signature SET signed_at = signed_at - interval '1 day' WHERE id = %s",
])
def test_a_signature_cannot_be_deleted_or_edited(world, subject, statement):
    signature = sign(world, subject)
    with pytest.raises(DatabaseError), transaction.atomic():
        sql(statement, [signature.pk])
    assert Signature.objects.filter(pk=signature.pk, meaning="approval", invalidated_at__isnull=True).exists()


def test_an_invalidated_signature_cannot_be_made_valid_again(world, subject):
    signature = sign(world, subject)
    sql("UPDATE patients_adverseevent SET grade = 4 WHERE subject_id = %s", [subject.pk])
    with pytest.raises(DatabaseError), transaction.atomic():
        sql("UPDATE signatures_signature SET invalidated_at = NULL, invalidated_reason = '' WHERE id = %s",
            [signature.pk])
    assert not reload(signature).is_valid
