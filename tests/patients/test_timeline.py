"""Time on study (patients.timeline): the arithmetic of day 0, study day, course day, the CDISC study day
and visit matching, and the ORM and SQL forms agreeing on a re-infused subject."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from decimal import Decimal
from typing import Any

import pytest
from django.db import connection

from patients.models import Subject
from patients.services import treatment
from patients.timeline import (
    NOWHERE,
    Timeline,
    VisitWindow,
    cdisc_study_day_sql,
    course_day_sql,
    course_number_sql,
    course_span_join_sql,
    course_spans_sql,
    day0s_sql,
    local_date,
    match_visit,
    study_day_sql,
    timeline_from,
    timeline_of,
    with_timeline,
)
from tests.factories import (
    at,
    days_ago,
    enrolled_subject,
    infused_subject,
    lymphodepleted_subject,
    reinfusable_subject,
    reinfuse,
)

D = dt.date
FIRST, SECOND = D(2025, 3, 1), D(2026, 3, 26)  # the second course 390 days after the first
TWO_COURSES = Timeline.of([FIRST, SECOND])


def test_before_any_infusion_there_is_no_day():
    assert Timeline().position(D(2025, 1, 1)) == NOWHERE
    assert Timeline().cdisc_study_day(D(2025, 1, 1)) is None


@pytest.mark.parametrize(("day", "position"), [
    (D(2025, 2, 24), (-5, None, None)),   # lymphodepletion of the first course: no course yet
    (FIRST, (0, 1, 0)),
    (D(2025, 3, 29), (28, 1, 28)),
    (D(2026, 3, 21), (385, 1, 385)),      # lymphodepletion of the second course still follows the first
    (SECOND, (390, 2, 0)),
    (D(2026, 4, 25), (420, 2, 30)),       # day-30 response after the re-infusion
])
def test_a_date_is_counted_from_the_first_infusion_and_from_the_course_it_follows(day, position):
    assert TWO_COURSES.position(day) == position


@pytest.mark.parametrize(("day", "dy"), [(D(2025, 2, 28), -1), (FIRST, 1), (D(2025, 3, 2), 2)])
def test_cdisc_study_day_has_no_day_zero(day, dy):
    assert TWO_COURSES.cdisc_study_day(day) == dy


WINDOWS = [VisitWindow(1, "LD", -5, 0, 0), VisitWindow(2, "D28", 28, 3, 3), VisitWindow(3, "D30", 30, 3, 3)]


@pytest.mark.parametrize(("day", "expected"), [
    (D(2025, 3, 29), ("D28", 1)),
    (D(2025, 3, 30), ("D28", 1)),   # day 29: both windows hold it, D28 (lower target) wins the tie
    (D(2025, 3, 31), ("D30", 1)),
    (D(2026, 4, 25), ("D30", 2)),   # after the re-infusion: day 30 of course 2, not day 420
    (D(2026, 3, 21), ("LD", 2)),    # five days before the second infusion: its lymphodepletion visit
    (D(2025, 6, 1), None),
])
def test_visits_are_matched_against_the_course(day, expected):
    matched = match_visit(TWO_COURSES, WINDOWS, day)
    assert (None if matched is None else (matched[0].code, matched[1])) == expected


@pytest.mark.django_db
def test_the_orm_and_sql_forms_give_the_same_course_day0s(world):
    first, second = days_ago(14), days_ago(8)
    subject = reinfusable_subject(trial=world.trial, site=world.site_a, coordinator=world.coordinator,
                                  investigator=world.investigator, day0=first, lot_released_on=days_ago(12))
    reinfuse(subject, by=world.coordinator, day0=second)
    assert timeline_of(subject).day0s == (first, second)
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {day0s_sql('%s')}", [subject.pk])
        assert Timeline.of(cursor.fetchone()[0]).day0s == (first, second)
    (row,) = with_timeline(Subject.objects.filter(pk=subject.pk), subject="pk")
    assert tuple(row.course_day0s) == (first, second)
    assert timeline_from(row, subject).position(days_ago(1)) == (13, 2, 7)


AROUND_EACH_DAY0 = [FIRST + dt.timedelta(days=d) for d in (-400, -1, 0, 1, 389)] + [
    SECOND + dt.timedelta(days=d) for d in (-1, 0, 1, 30)]


@pytest.mark.django_db
@pytest.mark.parametrize("day0s", [(), (FIRST,), (FIRST, SECOND)])
@pytest.mark.parametrize("day", [*AROUND_EACH_DAY0, None])
def test_the_sql_arithmetic_agrees_with_the_timeline(day0s, day):
    timeline = Timeline.of(day0s)
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT {study_day_sql('t.d0s', 't.day')}, {course_number_sql('t.d0s', 't.day')}, "
            f"{course_day_sql('t.d0s', 't.day')}, {cdisc_study_day_sql('t.d0s', 't.day')} "
            "FROM (SELECT %s::date[] AS d0s, %s::date AS day) t", [list(day0s), day])
        row = cursor.fetchone()
    position = timeline.position(day)
    assert row == (position.study_day, position.course_number, position.course_day, timeline.cdisc_study_day(day))


@pytest.mark.django_db
@pytest.mark.parametrize("zone", ["Asia/Shanghai", "America/Los_Angeles", "Pacific/Kiritimati", "UTC"])
@pytest.mark.parametrize("moment", [dt.datetime(2026, 3, 8, 9, 30, tzinfo=dt.UTC),  # US clocks change that day
                                    dt.datetime(2026, 3, 1, 15, 59, tzinfo=dt.UTC),
                                    dt.datetime(2026, 3, 1, 16, 0, tzinfo=dt.UTC),
                                    dt.datetime(2026, 12, 31, 23, 59, tzinfo=dt.UTC)])
def test_the_sql_local_date_agrees_with_the_python_one(zone, moment):
    from zoneinfo import ZoneInfo

    from patients.timeline import local_date, local_date_sql

    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {local_date_sql('t.at', 't.zone')} FROM (SELECT %s::timestamptz AS at, %s AS zone) t",
                       [moment, zone])
        assert cursor.fetchone()[0] == local_date(moment, ZoneInfo(zone))


def _split_then_reinfused(world: Any, day0: dt.date, second: dt.date) -> Subject:
    """A dose split over day 0 and day 1 (one course), then a re-infusion course on ``second``."""
    subject = lymphodepleted_subject(trial=world.trial, site=world.site_a, coordinator=world.coordinator,
                                     investigator=world.investigator, day0=day0)
    for fraction in (1, 2):
        treatment.record_infusion(subject=subject, lot=subject.lots.get(), dose_level=world.trial.dose_levels.get(),
                                  cells_per_kg=Decimal(500_000), infused_at=at(day0 + dt.timedelta(days=fraction - 1)),
                                  fraction_number=fraction, planned_fractions=2, by=world.coordinator)
    world.trial.reinfusion_allowed = True
    world.trial.save()
    lot = treatment.register_lot(subject=subject, product=world.trial.products.get(), lot_number="LOT-R2",
                                 source="autologous", collection=subject.collections.get(), by=world.coordinator)
    treatment.release_lot(lot=lot, release_date=days_ago(12), viability_pct=Decimal("90"),
                          car_positive_pct=Decimal("40"), total_viable_car_cells=Decimal("1.5e8"), qc_pass=True,
                          by=world.coordinator)
    reinfuse(subject, by=world.coordinator, day0=second)
    return subject


def _both_forms(subject_ids: list[int], times: list[dt.datetime | None]) -> list[tuple[Any, ...]]:
    """(subject, time, per-row course, set course, per-row course day, set course day) of every pair, each
    time placed on its site's local date."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"WITH subj AS MATERIALIZED (SELECT s.id, st.time_zone AS tz, {day0s_sql('s.id')} AS day0s "
            "FROM patients_subject s JOIN trials_site st ON st.id = s.site_id WHERE s.id = ANY(%s)), "
            f"spans AS MATERIALIZED ({course_spans_sql('SELECT id FROM subj')}) "
            f"SELECT subj.id, w.at, {course_number_sql('subj.day0s', 't.day')}, c.n, "
            f"{course_day_sql('subj.day0s', 't.day')}, {course_day_sql('subj.day0s', 't.day', 'c.n')} "
            "FROM subj CROSS JOIN unnest(%s::timestamptz[]) AS w(at) "
            "CROSS JOIN LATERAL (SELECT (w.at AT TIME ZONE subj.tz)::date AS day) t "
            f"{course_span_join_sql('spans', 'c', 'subj.id', 't.day')}", [subject_ids, times])
        return cursor.fetchall()


@pytest.mark.django_db
def test_the_set_form_of_the_course_number_agrees_with_the_per_row_form(world):
    day0, second = days_ago(14), days_ago(4)
    split = _split_then_reinfused(world, day0, second)
    single = infused_subject(trial=world.trial, site=world.site_a, coordinator=world.coordinator,
                             investigator=world.investigator, day0=days_ago(10))
    never = enrolled_subject(trial=world.trial, site=world.site_a, coordinator=world.coordinator,
                             investigator=world.investigator)
    zone = zoneinfo.ZoneInfo(world.site_a.time_zone)
    assert zone.utcoffset(dt.datetime(2025, 1, 1)) != dt.timedelta(0)  # the site's midnight is not UTC's
    midnights = [dt.datetime.combine(d + dt.timedelta(days=k), dt.time(0), tzinfo=zone)
                 for d in (day0, second) for k in (-1, 0, 1, 2)]
    times: list[dt.datetime | None] = [*midnights, *(m - dt.timedelta(microseconds=1) for m in midnights), None]
    rows = _both_forms([split.pk, single.pk, never.pk], times)
    assert len(rows) == 3 * len(times)  # the range join never repeats a row
    timelines = {s.pk: timeline_of(s) for s in (split, single, never)}
    for subject_id, moment, per_row, by_set, day_per_row, day_by_set in rows:
        timeline, local = timelines[subject_id], local_date(moment, zone)
        assert (per_row, day_per_row) == (by_set, day_by_set) == (timeline.course_of(local) if local else None,
                                                                 timeline.course_day(local))
    courses = {(r[0], r[1]): r[3] for r in rows}
    assert courses[(split.pk, midnights[1])] == courses[(split.pk, midnights[2])] == 1  # day 1 of a split dose
    assert courses[(split.pk, midnights[5] - dt.timedelta(microseconds=1))] == 1  # the last moment of course 1
    assert courses[(split.pk, midnights[5])] == 2  # the site's midnight starting the re-infusion's day 0
    assert courses[(split.pk, midnights[0])] is None and courses[(never.pk, midnights[5])] is None
