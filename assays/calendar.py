"""The visit calendar: every protocol visit of each course of a subject, its dates, state and expected assays.

Dates and windows come from ``patients.timeline`` (``VisitWindow.dates``), the state from
``patients.timeline.visit_state``; this module only gathers what was recorded at each visit (lab draws,
with the analytes they gave, and response assessments) and reads it for one subject or, in a fixed number of
queries, for every subject of the user's sites.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.contrib.postgres.aggregates import ArrayAgg
from django.contrib.postgres.expressions import ArraySubquery
from django.db.models import OuterRef, Q
from django.utils import timezone

from assays.models import LabDraw, Result
from patients.models import LymphodepletionCourse, ResponseAssessment, Subject, SubjectStatus
from patients.selectors import ld_courses_of, records_of
from patients.timeline import (
    DUE,
    OVERDUE,
    UPCOMING,
    Timeline,
    VisitDates,
    VisitWindow,
    local_date,
    timeline_from,
    timeline_of,
    visit_state,
    with_timeline,
)
from trials.access import access_of
from trials.models import Visit
from trials.selectors import visit_schedule

FOLLOWED = (SubjectStatus.ENROLLED, SubjectStatus.APHERESED, SubjectStatus.LYMPHODEPLETED, SubjectStatus.INFUSED,
            SubjectStatus.FOLLOW_UP)


@dataclass(frozen=True)
class Recorded:
    """Something recorded for a subject on a site-local date, at a visit or none, with the analytes it gave."""

    on: dt.date
    visit_id: int | None
    analytes: frozenset[str] = frozenset()


@dataclass(frozen=True)
class CalendarVisit:
    subject: Subject
    course_number: int
    planned: bool  # the course's day 0 is its planned infusion date (not infused yet)
    visit: Visit
    dates: VisitDates
    state: str
    expected: tuple[str, ...]
    missing: tuple[str, ...] = field(default=())


@dataclass
class SubjectRecords:
    timeline: Timeline
    planned_day0: dt.date | None = None
    recorded: list[Recorded] = field(default_factory=list)


def _courses(subject: Subject, records: SubjectRecords) -> list[tuple[int, dt.date, bool]]:
    courses = [(n, day0, False) for n, day0 in enumerate(records.timeline.day0s, start=1)]
    if records.planned_day0 is not None:
        courses.append((len(courses) + 1, records.planned_day0, True))
    return courses


def build_calendar(subject: Subject, visits: Sequence[Visit], records: SubjectRecords, *,
                   today: dt.date) -> list[CalendarVisit]:
    """The calendar of one subject from what was loaded for it (no query)."""
    rows: list[CalendarVisit] = []
    courses = _courses(subject, records)
    ordered = sorted(visits, key=lambda v: (v.target_day, v.code))
    for index, (number, day0, planned) in enumerate(courses):
        next_day0 = courses[index + 1][1] if index + 1 < len(courses) else None
        dated = [(v, VisitWindow.of(v).dates(day0)) for v in ordered]
        # A re-infusion starts a new course: the old course's later visits are no longer expected.
        dated = [(v, d) for v, d in dated if next_day0 is None or d.target < next_day0]
        if subject.off_study_on is not None:
            dated = [(v, d) for v, d in dated if d.earliest <= subject.off_study_on]
        for i, (visit, dates) in enumerate(dated):
            at = [r for r in records.recorded if dates.holds(r.on) and r.visit_id in (None, visit.pk)]
            later_open = i + 1 < len(dated) and dated[i + 1][1].earliest <= today
            passed = later_open or subject.off_study_on is not None
            state = visit_state(dates, today=today, done=bool(at), passed=passed)
            present = frozenset().union(*(r.analytes for r in at)) if at else frozenset()
            expected = tuple(visit.expected_assays)
            missing = tuple(code for code in expected if code not in present) if state != UPCOMING else ()
            rows.append(CalendarVisit(subject, number, planned, visit, dates, state, expected, missing))
    return rows


def _planned_day0(plans: Sequence[dt.date], timeline: Timeline) -> dt.date | None:
    """The planned infusion date of the course after the infused ones (``plans``: each course's, by number)."""
    return plans[len(timeline.day0s)] if len(plans) > len(timeline.day0s) else None


def _with_plans(qs: Any) -> Any:
    plans = LymphodepletionCourse.objects.filter(subject=OuterRef("pk")).order_by("course_number")
    return with_timeline(qs, subject="pk").annotate(ld_plans=ArraySubquery(plans.values("planned_infusion_on")))


def _recorded(subjects: Iterable[Subject], *, responses: Iterable[tuple[int, dt.date, int | None]] | None = None,
              ) -> dict[int, list[Recorded]]:
    """Lab draws (with their current results' analytes) and responses of ``subjects``: two queries, or one when
    the responses are given (``(subject_id, assessed_on, visit_id)``)."""
    by_id = {s.pk: s for s in subjects}
    found: dict[int, list[Recorded]] = {pk: [] for pk in by_id}
    current = Q(results__superseded=False) & ~Q(results__status=Result.Status.CANCELLED)
    draws = (LabDraw.objects.filter(subject_id__in=list(by_id))
             .annotate(codes=ArrayAgg("results__analyte__code", filter=current, distinct=True, default=[]))
             .values_list("subject_id", "collected_at", "visit_id", "codes"))
    for subject_id, collected_at, visit_id, codes in draws:
        day = local_date(collected_at, by_id[subject_id].site.tzinfo)
        assert day is not None
        found[subject_id].append(Recorded(day, visit_id, frozenset(c for c in codes if c)))
    if responses is None:
        responses = ResponseAssessment.objects.filter(subject_id__in=list(by_id)).values_list(
            "subject_id", "assessed_on", "visit_id")
    for subject_id, assessed_on, response_visit_id in responses:
        found[subject_id].append(Recorded(assessed_on, response_visit_id))
    return found


def site_date(site: Any, now: dt.datetime | None = None) -> dt.date:
    """The site's local date at ``now`` (default: the current time)."""
    day = local_date(now or timezone.now(), site.tzinfo)
    assert day is not None
    return day


def subject_calendar(subject: Subject, *, now: dt.datetime | None = None) -> list[CalendarVisit]:
    """One subject's calendar (a fixed number of queries). Its timeline, courses and responses are those the
    subject page's rules and course list read (``shared_reads``): the page reads them once."""
    timeline = timeline_of(subject)
    plans = [course.planned_infusion_on for course in ld_courses_of(subject)]
    responses = [(r.subject_id, r.assessed_on, r.visit_id) for r in records_of(subject, "responses", "visit")]
    records = SubjectRecords(timeline, _planned_day0(plans, timeline), _recorded([subject], responses=responses)[
        subject.pk])
    visits = visit_schedule(subject.trial_id)
    return build_calendar(subject, visits, records, today=site_date(subject.site, now))


def visits_to_chase(*, user: AbstractBaseUser, now: dt.datetime | None = None, days: int = 7) -> list[CalendarVisit]:
    """Visits of followed subjects at the user's sites that are overdue, due, or whose window opens within
    ``days`` days of each site's today; five queries however many subjects."""
    subjects = list(_with_plans(access_of(user).filter(Subject.objects.filter(status__in=FOLLOWED)))
                    .select_related("site", "trial").order_by("site__code", "code", "pk"))
    visits: dict[int, list[Visit]] = {}
    for visit in Visit.objects.filter(trial_id__in={s.trial_id for s in subjects}):
        visits.setdefault(visit.trial_id, []).append(visit)
    recorded = _recorded(subjects)
    rows = []
    for subject in subjects:
        today = site_date(subject.site, now)
        timeline = timeline_from(subject, subject)
        records = SubjectRecords(timeline, _planned_day0(subject.ld_plans or [], timeline), recorded[subject.pk])
        for row in build_calendar(subject, visits.get(subject.trial_id, []), records, today=today):
            soon = row.state == UPCOMING and row.dates.earliest <= today + dt.timedelta(days=days)
            if row.state in (DUE, OVERDUE) or soon:
                rows.append(row)
    return sorted(rows, key=lambda r: (r.subject.site.code, r.dates.earliest, r.subject.code, r.visit.code))
