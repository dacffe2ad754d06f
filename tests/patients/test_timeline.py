"""Time on study (patients.timeline): the arithmetic of day 0, study day, course day, the CDISC study day
and visit matching, and the ORM and SQL forms agreeing on a re-infused subject."""

from __future__ import annotations

import datetime as dt

import pytest
from django.db import connection

from patients.models import Subject
from patients.timeline import (
    NOWHERE,
    Timeline,
    VisitWindow,
    cdisc_study_day_sql,
    course_day_sql,
    course_number_sql,
    day0s_sql,
    match_visit,
    study_day_sql,
    timeline_from,
    timeline_of,
    with_timeline,
)
from tests.factories import days_ago, reinfusable_subject, reinfuse

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
