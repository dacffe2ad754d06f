"""Load the records of a trial summary: the caller's subjects of the trial (and cohort) and, for them, the
infusions, CRS/ICANS episodes with their medications, responses, follow-up events and the assay results the
summary reads. One query per kind of record, whatever the number of subjects and results."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db import connection
from django.db.models import QuerySet

from assays.models import Analyte, LabDraw, Result
from patients.models import AdverseEvent, ConcomitantMedication, FollowUp, Infusion, ResponseAssessment, Subject
from patients.timeline import Timeline, day0s_sql, local_date_sql, with_timeline
from summaries.definitions import DAILY_LOWEST_ANALYTES, KINETIC_ANALYTES, antigen_analyte
from summaries.records import (
    Assessment,
    Episode,
    Event,
    Fraction,
    Sample,
    SubjectRecords,
    TrialRecords,
    VisitRef,
)
from trials.access import access_of
from trials.models import Cohort, Product, Site, Trial, Visit


def scoped_subjects(*, user: Any, trial: Trial, cohort: Cohort | None = None) -> QuerySet[Subject]:
    """The trial's subjects at the caller's sites (another site's subject is never counted)."""
    qs = access_of(user).filter(Subject.objects.filter(trial=trial))
    return qs if cohort is None else qs.filter(cohort=cohort)


def primary_response_visit(trial: Trial) -> VisitRef | None:
    visit = Visit.objects.filter(trial=trial, primary_response=True).first()
    if visit is None:
        return None
    return VisitRef(visit.pk, visit.code, visit.target_day, visit.window_before_days, visit.window_after_days)


def summary_analytes(trial: Trial, extra: tuple[str, ...] = ()) -> dict[str, float | None]:
    """The analytes a summary reads (kinetics, counts, B cells, target antigens on blasts, ``extra``) and their
    LLOQ."""
    antigens = {a for p in Product.objects.filter(trial=trial) for a in p.target_antigens}
    codes = [*KINETIC_ANALYTES, *(antigen_analyte(a) for a in sorted(antigens)), *extra]
    return dict(Analyte.objects.filter(code__in=codes).values_list("code", "lloq"))


def load_trial_records(*, user: Any, trial: Trial, cohort: Cohort | None = None,
                       extra_analytes: tuple[str, ...] = ()) -> TrialRecords:
    """Everything a summary reads (``extra_analytes``: more results to load, e.g. cytokines for a plot)."""
    subjects_qs = scoped_subjects(user=user, trial=trial, cohort=cohort)
    lloq = summary_analytes(trial, extra_analytes)
    by_id = _subjects(subjects_qs)
    for subject_id, fraction in _fractions(subjects_qs):
        by_id[subject_id].fractions.append(fraction)
    for subject_id, episode in _episodes(subjects_qs):
        by_id[subject_id].episodes.append(episode)
    for row in ResponseAssessment.objects.filter(subject__in=subjects_qs).order_by("assessed_on", "pk").values_list(
            "subject_id", "assessed_on", "visit_id", "category", "mrd_flow_pct"):
        by_id[row[0]].assessments.append(Assessment(*row[1:]))
    for subject_id, kind, on in FollowUp.objects.filter(subject__in=subjects_qs).order_by(
            "event_on", "pk").values_list("subject_id", "kind", "event_on"):
        by_id[subject_id].events.append(Event(kind, on))
    for subject_id, code, sample in _samples(subjects_qs, lloq):
        by_id[subject_id].samples.setdefault(code, []).append(sample)
    return TrialRecords(trial=trial.code, cohort=cohort.code if cohort else None,
                        mrd_negative_below_pct=trial.mrd_negative_below_pct,
                        primary_visit=primary_response_visit(trial), lloq=lloq, subjects=list(by_id.values()))


def _subjects(qs: QuerySet[Subject]) -> dict[int, SubjectRecords]:
    """The subjects' records, read as plain values (a registry's thousands of untreated subjects included)."""
    rows = with_timeline(qs, subject="pk").order_by("code", "pk").values_list(
        "pk", "code", "site__code", "cohort__code", "sex", "age_at_consent", "prior_allo_hsct", "prior_cart",
        "course_day0s")
    return {pk: SubjectRecords(code=code, site=site, cohort=cohort, sex=sex, age_years=age, prior_hsct=hsct,
                               prior_car_t=car_t, timeline=Timeline.of(day0s))
            for pk, code, site, cohort, sex, age, hsct, car_t, day0s in rows}


def _fractions(subjects: QuerySet[Subject]) -> Iterable[tuple[int, Fraction]]:
    rows = (Infusion.objects.filter(subject__in=subjects).order_by("course_number", "fraction_number")
            .values_list("subject_id", "course_number", "fraction_number", "infused_on", "cells_per_kg",
                         "lot__source", "lot__product__target_antigens"))
    for subject_id, course, fraction, on, cells, source, antigens in rows:
        yield subject_id, Fraction(course, fraction, on, float(cells), source, tuple(antigens))


def _episodes(subjects: QuerySet[Subject]) -> Iterable[tuple[int, Episode]]:
    events = list(AdverseEvent.objects.filter(subject__in=subjects, category__in=["crs", "icans"])
                  .order_by("onset_on", "pk").values_list("pk", "subject_id", "category", "onset_on",
                                                          "resolved_on", "grade"))
    drugs: dict[int, set[str]] = {}
    for event_id, drug in ConcomitantMedication.objects.filter(
            adverse_event__subject__in=subjects, adverse_event__category__in=["crs", "icans"]
    ).values_list("adverse_event_id", "drug"):
        drugs.setdefault(event_id, set()).add(drug)
    for pk, subject_id, category, onset, resolved, grade in events:
        yield subject_id, Episode(category, onset, resolved, grade or 0, frozenset(drugs.get(pk, ())))


def _samples(subjects: QuerySet[Subject], analytes: dict[str, float | None]) -> Iterable[tuple[int, str, Sample]]:
    """The current results of the summary's analytes for the subjects with an infusion (no figure reads an
    untreated subject's results), in time order, dated on the subject's site's calendar in SQL. The analytes
    read as a daily lowest come as one row per subject and day (the day's lowest value)."""
    subject_ids, params = subjects.order_by().values("pk").query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(SAMPLES_SQL.format(subject_ids=subject_ids),
                       [*params, list(analytes), list(DAILY_LOWEST_ANALYTES), list(DAILY_LOWEST_ANALYTES)])
        for subject_id, code, on, value, censored in cursor.fetchall():
            yield subject_id, code, Sample(on, value, censored)


_TREATED = (f"SELECT s.id, site.time_zone FROM {Subject._meta.db_table} s "
            f"JOIN {Site._meta.db_table} site ON site.id = s.site_id "
            f"WHERE s.id IN ({{subject_ids}}) AND cardinality({day0s_sql('s.id')}) > 0")
_PICKED = (f"SELECT r.id, r.subject_id, a.code, d.collected_at, {local_date_sql('d.collected_at', 't.time_zone')} "
           f"AS on_date, r.value, r.censored FROM treated t "
           f"JOIN {Result._meta.db_table} r ON r.subject_id = t.id "
           f"JOIN {Analyte._meta.db_table} a ON a.id = r.analyte_id "
           f"JOIN {LabDraw._meta.db_table} d ON d.id = r.draw_id "
           f"WHERE a.code = ANY(%s) AND NOT r.superseded AND r.status <> '{Result.Status.CANCELLED.value}'")
SAMPLES_SQL = (
    f"WITH treated AS ({_TREATED}), picked AS ({_PICKED}) "
    "SELECT subject_id, code, on_date, value, censored FROM ("
    " SELECT subject_id, code, on_date, value, censored, collected_at, id FROM picked WHERE code <> ALL(%s)"
    " UNION ALL"
    " SELECT subject_id, code, on_date, min(value), '', min(collected_at), min(id) FROM picked"
    " WHERE code = ANY(%s) AND value IS NOT NULL GROUP BY subject_id, code, on_date"
    ") samples ORDER BY collected_at, id")
