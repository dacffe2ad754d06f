"""Automatic checks: each fires on a bad record and not on a good one, is idempotent, closes its own query
when the data are corrected, re-opens it when the problem returns, and costs the same number of database
queries for one bad record as for many."""

from __future__ import annotations

import datetime as dt
import itertools
from decimal import ROUND_DOWN, Decimal
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext

from assays.models import Analyte, AnalyteUnit, Result
from assays.services import ResultIn, ingest_results
from dataqueries import checks, services
from dataqueries.checks import RESPONSE_SAMPLE_WINDOW_DAYS, run_checks
from dataqueries.models import CheckCode, DataQuery, QueryMessage
from locking.models import Level
from locking.services import lock_scope
from patients.models import AdverseEvent, Consent, CrsAssessment, LymphodepletionDose, ResponseAssessment, Subject
from patients.services import outcome, safety
from tests.dataqueries.conftest import adverse_event
from tests.factories import at, days_ago, infused_subject, lymphodepleted_subject

pytestmark = pytest.mark.django_db

Status, Kind = DataQuery.Status, QueryMessage.Kind
_refs = itertools.count(1)


# --- building records ------------------------------------------------------------------------------


def post_lab(subject: Subject, by: Any, *rows: tuple[str, str, str], specimen: str = "pb",
             collected_at: dt.datetime | None = None) -> list[Result]:
    """(analyte, value, unit) rows in one draw, posted through result ingestion."""
    accession, when = f"ACC-{next(_refs)}", collected_at or at(days_ago(2), 8)
    ingest_results(rows=[ResultIn(f"REF-{next(_refs)}", subject.code, accession, specimen, when, analyte, value, unit)
                         for analyte, value, unit in rows], by=by)
    return list(Result.objects.filter(draw__accession_number=accession).order_by("pk"))


GRADE3 = {"max_temp_c": Decimal("39.5"), "hypotension": True, "vasopressors": ["norepinephrine"]}


def crs_assessment(event: AdverseEvent, by: Any, hour: int, **kwargs: Any) -> CrsAssessment:
    return safety.record_crs_assessment(event=event, assessed_at=at(days_ago(2), hour), components=GRADE3, by=by,
                                        **kwargs)


def queries(check: str) -> list[DataQuery]:
    return list(DataQuery.objects.filter(check_code=check).order_by("pk"))


def thread(query: DataQuery) -> list[str]:
    return list(query.messages.order_by("at", "pk").values_list("kind", flat=True))


@pytest.fixture(autouse=True)
def catalogue(db: None) -> None:
    """The analytes these tests post, as the seed migration defines them (a transactional test elsewhere may
    have flushed the seeded catalogue from a reused test database)."""
    counts, per_ul = {"10*9/L": 1.0, "/uL": 0.001}, {}
    for code, unit, units, high in (("WBC", "10*9/L", counts, 1_000), ("PLT", "10*9/L", counts, 3_000),
                                    ("CRP", "mg/L", per_ul, 1_000), ("CAR_QPCR", "{copies}/ug", per_ul, 1e7)):
        analyte = Analyte.objects.get_or_create(code=code, defaults={
            "name": code, "canonical_unit": unit, "physiological_low": 0, "physiological_high": high})[0]
        for name, factor in {unit: 1.0, **units}.items():
            AnalyteUnit.objects.get_or_create(analyte=analyte, unit=name, defaults={"factor": factor})


@pytest.fixture
def subject(world: Any) -> Subject:
    """Consented 29 days ago at site A."""
    from tests.factories import consented

    return consented(trial=world.trial, site=world.site_a, coordinator=world.coordinator)


# --- 1. lab values outside physiological limits ----------------------------------------------------


def test_lab_value_outside_physiological_limits(world, subject):
    bad, _good, _converted = post_lab(subject, world.coordinator, ("WBC", "5000", "10*9/L"), ("WBC", "5.2", "10*9/L"),
                                      ("PLT", "250000", "/uL"))  # 250 x10^9/L once converted: plausible
    summary = run_checks(world.trial)
    assert summary.findings[CheckCode.LAB_IMPLAUSIBLE] == 1 and summary.raised == 1
    [query] = queries(CheckCode.LAB_IMPLAUSIBLE)
    assert (query.record, query.field_name, query.subject, query.site) == (bad, "value", subject, world.site_a)
    assert (query.origin, query.raised_by, query.status) == (DataQuery.Origin.AUTOMATIC, None, Status.OPEN)
    assert "WBC 5000 10*9/L" in query.text and "0-1000" in query.text
    assert thread(query) == [Kind.RAISE]


def test_a_corrected_lab_value_auto_resolves_its_query(world, subject):
    [bad] = post_lab(subject, world.coordinator, ("WBC", "5000", "10*9/L"))
    run_checks(world.trial)
    ingest_results(rows=[ResultIn(bad.source_ref, subject.code, bad.draw.accession_number, "pb", bad.draw.collected_at,
                                  "WBC", "5.0", "10*9/L", correction_reason="Decimal point lost in transcription")],
                   by=world.coordinator)
    summary = run_checks(world.trial)
    assert (summary.auto_resolved, summary.raised) == (1, 0)
    [query] = queries(CheckCode.LAB_IMPLAUSIBLE)
    assert (query.status, query.auto_resolved) == (Status.CLOSED, True)
    assert thread(query) == [Kind.RAISE, Kind.AUTO_RESOLVE]
    assert query.messages.get(kind=Kind.AUTO_RESOLVE).by is None


# --- 2. adverse event before consent ---------------------------------------------------------------


def test_adverse_event_starting_before_consent(world, subject):
    before = adverse_event(subject, world.coordinator, onset=days_ago(35))  # consented 29 days ago
    adverse_event(subject, world.coordinator, onset=days_ago(29))  # the consent day itself is fine
    run_checks(world.trial)
    [query] = queries(CheckCode.AE_BEFORE_CONSENT)
    assert (query.record, query.field_name) == (before, "onset_on")
    assert "before the first consent" in query.text


def test_adverse_event_of_a_subject_without_consent(world, subject):
    event = adverse_event(subject, world.coordinator, onset=days_ago(3))
    Consent.objects.filter(subject=subject).delete()  # an import that lost the consent
    run_checks(world.trial)
    [query] = queries(CheckCode.AE_BEFORE_CONSENT)
    assert query.record == event and "no consent recorded" in query.text


# --- 3. response assessment without a marrow or blood sample ---------------------------------------


@pytest.fixture
def infused(world: Any) -> Subject:
    """Infused 12 days ago at site A (Asia/Shanghai, UTC+8)."""
    return infused_subject(coordinator=world.coordinator, investigator=world.investigator, day0=days_ago(12),
                           trial=world.trial, site=world.site_a)


def test_response_without_a_sample_near_it(world, infused):
    lonely = outcome.record_response(subject=infused, assessed_on=days_ago(1), category="nr", by=world.coordinator)
    sampled = outcome.record_response(subject=infused, assessed_on=days_ago(12), category="nr", by=world.coordinator)
    post_lab(infused, world.coordinator, ("CAR_QPCR", "12000", "{copies}/ug"), specimen="bm",  # on the window's edge
             collected_at=at(days_ago(12) - dt.timedelta(days=RESPONSE_SAMPLE_WINDOW_DAYS), 2))
    post_lab(infused, world.coordinator, ("CRP", "3", "mg/L"), specimen="serum", collected_at=at(days_ago(1), 2))
    run_checks(world.trial)
    [query] = queries(CheckCode.RESPONSE_WITHOUT_SAMPLE)
    assert (query.record, query.field_name) == (lonely, "assessed_on")  # a serum draw does not count
    assert sampled.pk != lonely.pk and f"±{RESPONSE_SAMPLE_WINDOW_DAYS} days" in query.text


def test_the_sample_window_is_counted_in_the_sites_local_dates(world, infused):
    assessed = days_ago(1)
    response = outcome.record_response(subject=infused, assessed_on=assessed, category="nr", by=world.coordinator)
    # 20:00 UTC eight days before is the next morning in Shanghai: seven local days before, inside the window.
    post_lab(infused, world.coordinator, ("WBC", "4.1", "10*9/L"), collected_at=at(assessed - dt.timedelta(days=8), 20))
    assert run_checks(world.trial).findings[CheckCode.RESPONSE_WITHOUT_SAMPLE] == 0
    # Assessed a day later, the same draw is eight local days before: outside.
    ResponseAssessment.objects.filter(pk=response.pk).update(assessed_on=assessed + dt.timedelta(days=1))
    assert run_checks(world.trial).findings[CheckCode.RESPONSE_WITHOUT_SAMPLE] == 1


# --- 4. lymphodepletion dose outside tolerance without a deviation reason --------------------------


def test_lymphodepletion_dose_outside_tolerance_without_reason(world):
    subject = lymphodepleted_subject(coordinator=world.coordinator, investigator=world.investigator,
                                     trial=world.trial, site=world.site_a)
    doses = list(LymphodepletionDose.objects.filter(course__subject=subject).order_by("pk"))
    # An import wrote these (the entry service would have asked for a reason); the regimen allows ±10%.
    over, boundary, blank_reason, explained = doses[:4]
    LymphodepletionDose.objects.filter(pk=over.pk).update(administered_mg=over.planned_mg * Decimal("1.5"))
    just_inside = (boundary.planned_mg * Decimal("1.1")).quantize(Decimal("0.1"), rounding=ROUND_DOWN)
    LymphodepletionDose.objects.filter(pk=boundary.pk).update(administered_mg=just_inside)
    LymphodepletionDose.objects.filter(pk=blank_reason.pk).update(administered_mg=Decimal(0), deviation_reason="  ")
    LymphodepletionDose.objects.filter(pk=explained.pk).update(administered_mg=explained.planned_mg / 2,
                                                               deviation_reason="Renal function: dose halved")
    run_checks(world.trial)
    found = queries(CheckCode.LD_DOSE_DEVIATION)
    assert [(q.record.pk, q.field_name) for q in found] == [(over.pk, "administered_mg"),
                                                            (blank_reason.pk, "administered_mg")]
    assert "no deviation reason" in found[0].text and "±10%" in found[0].text


# --- 5. CRS grade disagreeing with its components --------------------------------------------------


@pytest.fixture
def crs_event(world: Any, subject: Subject) -> AdverseEvent:
    return adverse_event(subject, world.coordinator, onset=days_ago(3), category="crs")


def test_crs_grade_disagreeing_with_components(world, crs_event):
    consistent = crs_assessment(crs_event, world.coordinator, 6)
    imported = crs_assessment(crs_event, world.coordinator, 7)
    raw = crs_assessment(crs_event, world.coordinator, 8)
    overridden = crs_assessment(crs_event, world.coordinator, 9, override_grade=2,
                                override_reason="Hypotension was drug-induced")
    assert consistent.derived_grade == 3
    CrsAssessment.objects.filter(pk=imported.pk).update(derived_grade=1)  # an import with a stale grade
    with connection.cursor() as cursor:  # raw SQL changed a component, leaving the grade behind
        cursor.execute("UPDATE patients_crsassessment SET hypotension = false WHERE id = %s", [raw.pk])
    run_checks(world.trial)
    found = {(q.object_id, q.field_name): q.text for q in queries(CheckCode.CRS_GRADE_MISMATCH)}
    assert set(found) == {(imported.pk, "derived_grade"), (raw.pk, "derived_grade"),
                          (overridden.pk, "override_grade")}
    assert "Derived grade 1 disagrees with the components, which give ASTCT grade 3" in found[
        (imported.pk, "derived_grade")]
    assert "grade 1" in found[(raw.pk, "derived_grade")]  # fever alone


def test_crs_components_no_form_accepts_are_reported(world, crs_event):
    assessment = crs_assessment(crs_event, world.coordinator, 6)
    CrsAssessment.objects.filter(pk=assessment.pk).update(o2_device="none", o2_flow_lpm=Decimal(4))
    run_checks(world.trial)
    [query] = queries(CheckCode.CRS_GRADE_MISMATCH)
    assert "components are invalid" in query.text


# --- idempotency, auto-resolve, re-open, locks ------------------------------------------------------


def make_one_of_each(world: Any, subject: Subject, crs_event: AdverseEvent) -> None:
    post_lab(subject, world.coordinator, ("WBC", "5000", "10*9/L"))
    adverse_event(subject, world.coordinator, onset=days_ago(35))
    CrsAssessment.objects.filter(pk=crs_assessment(crs_event, world.coordinator, 6).pk).update(derived_grade=0)


def test_a_second_run_changes_nothing(world, subject, crs_event):
    make_one_of_each(world, subject, crs_event)
    first = run_checks(world.trial)
    assert first.raised == 3
    before = (list(DataQuery.objects.values_list("pk", "status", "updated_at")), QueryMessage.objects.count())
    second = run_checks(world.trial)
    assert (second.raised, second.reopened, second.auto_resolved, second.unchanged) == (0, 0, 0, 3)
    assert (list(DataQuery.objects.values_list("pk", "status", "updated_at")), QueryMessage.objects.count()) == before


def test_answered_queries_stay_and_a_person_closed_query_is_not_raised_again(world, subject, crs_event):
    make_one_of_each(world, subject, crs_event)
    run_checks(world.trial)
    lab, event, crs = (queries(code)[0] for code in (CheckCode.LAB_IMPLAUSIBLE, CheckCode.AE_BEFORE_CONSENT,
                                                      CheckCode.CRS_GRADE_MISMATCH))
    services.answer_query(query=lab, text="Checking with the laboratory.", by=world.coordinator)
    services.answer_query(query=event, text="Pre-existing nausea, onset confirmed.", by=world.coordinator)
    services.close_query(query=event, text="Accepted as medical history.", by=world.data_manager)
    summary = run_checks(world.trial)
    assert (summary.raised, summary.reopened, summary.unchanged) == (0, 0, 3)
    assert [DataQuery.objects.get(pk=q.pk).status for q in (lab, event, crs)] == [Status.ANSWERED, Status.CLOSED,
                                                                                   Status.OPEN]


def test_the_check_reopens_a_query_it_closed_when_the_problem_returns(world, subject, crs_event):
    assessment = crs_assessment(crs_event, world.coordinator, 6)
    CrsAssessment.objects.filter(pk=assessment.pk).update(derived_grade=0)
    run_checks(world.trial)
    CrsAssessment.objects.filter(pk=assessment.pk).update(derived_grade=3)
    assert run_checks(world.trial).auto_resolved == 1
    CrsAssessment.objects.filter(pk=assessment.pk).update(derived_grade=2)
    summary = run_checks(world.trial)
    assert (summary.reopened, summary.raised) == (1, 0)
    [query] = queries(CheckCode.CRS_GRADE_MISMATCH)
    assert (query.status, query.auto_resolved) == (Status.OPEN, False)
    assert thread(query) == [Kind.RAISE, Kind.AUTO_RESOLVE, Kind.REOPEN]
    assert "Derived grade 2" in query.messages.get(kind=Kind.REOPEN).text


def test_a_person_closed_query_is_not_auto_resolved_or_reopened(world, subject, crs_event):
    assessment = crs_assessment(crs_event, world.coordinator, 6)
    CrsAssessment.objects.filter(pk=assessment.pk).update(derived_grade=0)
    run_checks(world.trial)
    [query] = queries(CheckCode.CRS_GRADE_MISMATCH)
    services.close_query(query=query, text="Known import issue.", by=world.data_manager)
    CrsAssessment.objects.filter(pk=assessment.pk).update(derived_grade=3)
    assert run_checks(world.trial).auto_resolved == 0
    query.refresh_from_db()
    assert (query.status, query.auto_resolved, thread(query)) == (Status.CLOSED, False, [Kind.RAISE, Kind.CLOSE])


def test_database_locked_subjects_are_skipped_but_frozen_ones_are_not(world, subject, crs_event):
    make_one_of_each(world, subject, crs_event)
    lock_scope(trial=world.trial, level=Level.FREEZE, reason="Interim analysis freeze", by=world.data_manager,
               subject=subject)
    assert run_checks(world.trial).raised == 3
    lock_scope(trial=world.trial, level=Level.LOCK, reason="Database lock", by=world.data_manager, subject=subject)
    CrsAssessment.objects.filter(event=crs_event).update(derived_grade=3)  # the problem is gone...
    summary = run_checks(world.trial)
    assert (summary.auto_resolved, summary.skipped_locked) == (0, 3)  # ...but the locked subject is untouched
    assert queries(CheckCode.CRS_GRADE_MISMATCH)[0].status == Status.OPEN


# --- set-based: a constant number of database queries ---------------------------------------------


def test_checks_cost_the_same_for_one_bad_record_as_for_many(world, infused):
    event = adverse_event(infused, world.coordinator, onset=days_ago(3), category="crs")
    run_checks(world.trial)  # warm-up: content types cached, nothing found yet

    def bad_records(n: int, start: int) -> None:
        post_lab(infused, world.coordinator, *[("WBC", str(5000 + i), "10*9/L") for i in range(n)],
                 specimen="serum")  # not a marrow or blood sample: the responses stay without one
        for i in range(n):
            adverse_event(infused, world.coordinator, onset=days_ago(40 + start + i), coded=False)
            outcome.record_response(subject=infused, assessed_on=days_ago(1 + start + i), category="nr",
                                    by=world.coordinator)
            crs_assessment(event, world.coordinator, 6 + start + i)
        CrsAssessment.objects.filter(event=event).update(derived_grade=0)
        doses = LymphodepletionDose.objects.filter(course__subject=infused).order_by("pk")[start:start + n]
        LymphodepletionDose.objects.filter(pk__in=[d.pk for d in doses]).update(administered_mg=Decimal(1))

    def counted() -> tuple[int, dict[str, int]]:
        with CaptureQueriesContext(connection) as ctx:
            summary = run_checks(world.trial)
        return len(ctx), summary.findings

    bad_records(1, 0)
    one, found_one = counted()
    bad_records(5, 1)
    many, found_many = counted()
    assert found_one == dict.fromkeys(checks.CHECKS, 1)
    assert found_many == dict.fromkeys(checks.CHECKS, 6)
    assert one == many


# --- the management command ------------------------------------------------------------------------


def test_run_data_checks_command(world, subject):
    adverse_event(subject, world.coordinator, onset=days_ago(35))
    out = StringIO()
    call_command("run_data_checks", "--trial", world.trial.code, stdout=out)
    assert f"{world.trial.code}: 1 finding(s)" in out.getvalue() and "raised 1" in out.getvalue()
    call_command("run_data_checks", stdout=out)
    assert "raised 0" in out.getvalue() and "unchanged 1" in out.getvalue()
    with pytest.raises(CommandError, match="No trial NOPE"):
        call_command("run_data_checks", "--trial", "NOPE")
