"""Time on study: day 0, study day, course day, CDISC study day and protocol visit matching.

The one owner of these numbers (DESIGN "Protocol timeline"). Day 0 of a course is the site's local date
of its first fraction; day 0 of the subject is day 0 of the first course. A date belongs to the course
it follows: the latest course whose day 0 is on or before it (a re-treated subject's day-30 response
after the second infusion is day 30 of course 2, and, say, day 389 on study).

Two forms of the same facts: ``timeline_of`` / ``with_timeline`` (ORM) and ``day0s_sql`` (hand-written
SQL for ingestion and bulk exports). Both read the course day 0s as an ordered array; ``Timeline`` does the
arithmetic, and ``study_day_sql``, ``cdisc_study_day_sql``, ``course_number_sql`` and ``course_day_sql`` are
the same arithmetic in SQL, for queries that must not leave the database (tested to agree with ``Timeline``).
``course_spans_sql`` with ``course_span_join_sql`` is the set form of ``course_number_sql`` for queries over
many rows (one row per course, joined by date range, instead of a subquery per row).
Admin, API, ingestion, checks, exports and summaries call this module and never subtract dates themselves.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from django.contrib.postgres.expressions import ArraySubquery
from django.db.models import OuterRef, QuerySet

from config.reads import shared
from patients.models import Infusion


class Position(NamedTuple):
    """Where a date falls: study day (from the first course), the course it follows and its course day.
    Before the first infusion there is a (negative) study day but no course."""

    study_day: int | None
    course_number: int | None
    course_day: int | None


NOWHERE = Position(None, None, None)


@dataclass(frozen=True, slots=True)
class Timeline:
    """Day 0 of each infusion course of one subject, in course order (course 1 first)."""

    day0s: tuple[dt.date, ...] = ()

    @classmethod
    def of(cls, day0s: Iterable[dt.date] | None) -> Timeline:
        return cls(tuple(day0s or ()))

    @property
    def day0(self) -> dt.date | None:
        return self.day0s[0] if self.day0s else None

    def course_of(self, day: dt.date) -> int | None:
        """The number of the course ``day`` follows (its day 0 on or before ``day``), or None."""
        number = None
        for i, day0 in enumerate(self.day0s, start=1):
            if day0 <= day:
                number = i
        return number

    def day0_of(self, course_number: int) -> dt.date | None:
        return self.day0s[course_number - 1] if 0 < course_number <= len(self.day0s) else None

    def study_day(self, day: dt.date | None) -> int | None:
        """As CAR-T teams count: day 0 is the first infusion, the day before is -1 (no SDTM shift)."""
        if day is None or self.day0 is None:
            return None
        return (day - self.day0).days

    def course_day(self, day: dt.date | None, course_number: int | None = None) -> int | None:
        """Days since day 0 of ``course_number`` (default: the course ``day`` follows)."""
        if day is None:
            return None
        number = course_number if course_number is not None else self.course_of(day)
        day0 = self.day0_of(number) if number else None
        return None if day0 is None else (day - day0).days

    def cdisc_study_day(self, day: dt.date | None) -> int | None:
        """SDTM --DY: no day 0, so day 0 is 1 and the day before is -1 (SDTMIG, DOMAIN 5.8)."""
        days = self.study_day(day)
        if days is None:
            return None
        return days + 1 if days >= 0 else days

    def position(self, day: dt.date | None) -> Position:
        if day is None:
            return NOWHERE
        number = self.course_of(day)
        return Position(self.study_day(day), number, self.course_day(day, number))


def local_date(value: dt.date | dt.datetime | None, tz: Any) -> dt.date | None:
    """The site's local date of a clinical date or time (times are stored in UTC)."""
    if isinstance(value, dt.datetime):
        return local_date_of(value, tz)
    return value


def local_date_of(moment: dt.datetime, tz: Any) -> dt.date:
    """The date on the clock of ``tz`` at ``moment``: ``local_date`` of a time that is always given."""
    return moment.astimezone(tz).date()


# --- ORM form ------------------------------------------------------------------------------------


def _day0s_subquery(subject_ref: str) -> ArraySubquery:
    first_fractions = (Infusion.objects.filter(subject=OuterRef(subject_ref), fraction_number=1)
                       .order_by("course_number").values("infused_on"))
    return ArraySubquery(first_fractions)


def with_timeline(qs: QuerySet, *, subject: str = "subject") -> QuerySet:
    """Annotate each row with ``course_day0s`` (its subject's course day 0s), for ``timeline_from``.
    ``subject`` is the path to the subject's id ("pk" for a subject queryset)."""
    return qs.annotate(course_day0s=_day0s_subquery(subject))


def timeline_from(row: Any, subject: Any) -> Timeline:
    """The timeline of a row annotated by ``with_timeline``; otherwise (a record just written) one query."""
    if hasattr(row, "course_day0s"):
        return Timeline.of(row.course_day0s)
    return timeline_of(subject)


def timeline_of(subject: Any) -> Timeline:
    """One subject's timeline (one query; read once within ``shared_reads``); ``subject`` is a Subject or its
    id."""
    subject_id = getattr(subject, "pk", subject)

    def read() -> Timeline:
        return Timeline.of(Infusion.objects.filter(subject_id=subject_id, fraction_number=1)
                           .order_by("course_number").values_list("infused_on", flat=True))

    return shared(("timeline", subject_id), read)


# --- SQL form ------------------------------------------------------------------------------------


def day0s_sql(subject_id_column: str) -> str:
    """An SQL expression giving the course day 0s (a date[] in course order) of the subject whose id is in
    ``subject_id_column`` (e.g. ``s.id``); wrap the fetched list with ``Timeline.of``."""
    return (f"ARRAY(SELECT i.infused_on FROM {Infusion._meta.db_table} i WHERE i.subject_id = {subject_id_column} "
            f"AND i.fraction_number = 1 ORDER BY i.course_number)")


def study_day_sql(day0s: str, day: str) -> str:
    """SQL for ``Timeline.study_day``: days from the first course's day 0 to the date ``day`` (NULL without
    either). ``day0s`` is an SQL date[] from ``day0s_sql``, ``day`` an SQL date (say, a site's local date)."""
    return f"({day} - ({day0s})[1])"


def cdisc_study_day_sql(day0s: str, day: str) -> str:
    """SQL for ``Timeline.cdisc_study_day`` (SDTM --DY: no day 0)."""
    days = study_day_sql(day0s, day)
    return f"(CASE WHEN {days} >= 0 THEN {days} + 1 ELSE {days} END)"


def course_number_sql(day0s: str, day: str) -> str:
    """SQL for ``Timeline.course_of``: the number of the last course whose day 0 is on or before ``day``."""
    return f"(SELECT max(c.n) FROM unnest({day0s}) WITH ORDINALITY AS c(day0, n) WHERE c.day0 <= {day})"


def course_spans_sql(subject_ids: str) -> str:
    """The set form of ``course_number_sql``: a SELECT of one row per infusion course of the subjects whose
    ids ``subject_ids`` gives (an SQL set, e.g. ``SELECT id FROM subj``), with columns ``subject_id``, ``n``
    (the course's number as ``Timeline`` counts it: its place in course order), ``day0`` and ``until``: the
    dates course ``n`` is the one a date follows are ``day0 <= day < until`` (``until``, the earliest day 0
    of a later course, NULL when there is none), so ``course_span_join_sql`` gives each row its course by a
    join over a handful of rows per subject instead of a subquery per row (tested to agree)."""
    numbered = (f"SELECT i.subject_id, row_number() OVER (PARTITION BY i.subject_id ORDER BY i.course_number) AS n, "
                f"i.infused_on AS day0 FROM {Infusion._meta.db_table} i WHERE i.fraction_number = 1 "
                f"AND i.subject_id IN ({subject_ids})")
    return (f"SELECT c.subject_id, c.n, c.day0, min(c.day0) OVER (PARTITION BY c.subject_id ORDER BY c.n "
            f"ROWS BETWEEN 1 FOLLOWING AND UNBOUNDED FOLLOWING) AS until FROM ({numbered}) c")


def course_span_join_sql(spans: str, alias: str, subject_id: str, day: str) -> str:
    """``LEFT JOIN`` of ``spans`` (a table or CTE of ``course_spans_sql``) as ``alias``: the course the date
    ``day`` of the subject ``subject_id`` follows, if any; ``{alias}.n`` is then ``course_number_sql``'s
    number (NULL before the first course or without a date)."""
    return (f"LEFT JOIN {spans} {alias} ON {alias}.subject_id = {subject_id} AND {alias}.day0 <= {day} "
            f"AND ({alias}.until IS NULL OR {day} < {alias}.until)")


def course_day_sql(day0s: str, day: str, course_number: str | None = None) -> str:
    """SQL for ``Timeline.course_day``: days since day 0 of ``course_number`` (an SQL integer; default: the
    course ``day`` follows, ``course_number_sql``)."""
    number = course_number if course_number is not None else course_number_sql(day0s, day)
    return f"({day} - ({day0s})[{number}])"


# --- protocol visits -----------------------------------------------------------------------------


class VisitWindow(NamedTuple):
    """A protocol visit's window around its target day (course day; day 0 = the course's infusion)."""

    visit_id: int
    code: str
    target_day: int
    before: int
    after: int

    @classmethod
    def of(cls, visit: Any) -> VisitWindow:
        return cls(visit.pk, visit.code, visit.target_day, visit.window_before_days, visit.window_after_days)

    def holds(self, course_day: int | None) -> bool:
        return course_day is not None and self.target_day - self.before <= course_day <= self.target_day + self.after

    def describe(self) -> str:
        return f"{self.code} is day {self.target_day} (-{self.before}/+{self.after})"

    def dates(self, day0: dt.date) -> VisitDates:
        """The visit's target date and window in the course whose day 0 is ``day0`` (site-local dates: the
        dates on which ``holds`` is true of the course day)."""
        target = day0 + dt.timedelta(days=self.target_day)
        return VisitDates(target, target - dt.timedelta(days=self.before), target + dt.timedelta(days=self.after))


class VisitDates(NamedTuple):
    """A protocol visit of one course on the calendar: its target date and first and last dates of its window."""

    target: dt.date
    earliest: dt.date
    latest: dt.date

    def holds(self, day: dt.date | None) -> bool:
        return day is not None and self.earliest <= day <= self.latest


def match_visit(timeline: Timeline, windows: Sequence[VisitWindow], day: dt.date | None
                ) -> tuple[VisitWindow, int] | None:
    """The protocol visit whose window holds ``day``, and the course it belongs to.

    A visit after day 0 is matched against the course the date follows; one before day 0 (screening,
    lymphodepletion) against the course the date precedes. Overlapping windows: the nearest target wins.
    """
    if day is None:
        return None
    offsets: list[tuple[int, int]] = []  # (course day, course number)
    following = timeline.course_of(day)
    if following is not None:
        offsets.append((timeline.course_day(day, following) or 0, following))
    upcoming = next((n for n, day0 in enumerate(timeline.day0s, start=1) if day0 > day), None)
    if upcoming is not None:
        offsets.append((timeline.course_day(day, upcoming) or 0, upcoming))
    fits = [(abs(course_day - w.target_day), w.target_day, number, w)
            for course_day, number in offsets for w in windows if w.holds(course_day)]
    if not fits:
        return None
    _distance, _target, number, window = min(fits, key=lambda f: f[:3])
    return window, number


# --- the visit calendar --------------------------------------------------------------------------

UPCOMING, DUE, DONE, OVERDUE, MISSED = "upcoming", "due", "done", "overdue", "missed"
VISIT_STATES = (UPCOMING, DUE, DONE, OVERDUE, MISSED)


def visit_state(dates: VisitDates, *, today: dt.date, done: bool, passed: bool) -> str:
    """The state of one protocol visit of one course on the site's local date ``today``:

    - ``done``: something is recorded at the visit (a lab draw in its window or at it, a response at it);
    - ``upcoming``: nothing recorded and its window has not opened (``today`` before its first date);
    - ``due``: nothing recorded and its window is open today (first and last dates included);
    - ``overdue``: nothing recorded, its window has closed, and it is still the visit to chase: the next
      visit's window has not opened and the subject is still followed (``passed`` is false);
    - ``missed``: nothing recorded, its window has closed and it has been ``passed``: the next visit's
      window has opened, or the subject went off study.

    ``today`` is the site's date (``local_date(now, site.tzinfo)``), so a window closes at the site's
    midnight, not UTC's.
    """
    if done:
        return DONE
    if today < dates.earliest:
        return UPCOMING
    if today <= dates.latest:
        return DUE
    return MISSED if passed else OVERDUE


def local_date_sql(moment: str, time_zone: str) -> str:
    """SQL for ``local_date``: the site's local date of the timestamptz ``moment``, ``time_zone`` an SQL text
    holding the site's IANA zone (say, ``site.time_zone``)."""
    return f"(({moment}) AT TIME ZONE ({time_zone}))::date"
