"""Time-to-event endpoints of one course (DOMAIN 4.3-4.4) and their Kaplan-Meier estimates (lifelines).

Per subject: OS, EFS from the course's day 0; LFS and DOR from the first CR/CRi of the course (responders only).
Days come from the subject's Timeline (course days, plain difference); months = days / 30.4375.
- OS: death; censored at the last date the subject was known alive (follow-up, assessment or infusion).
- EFS: death, relapse/progression, or treatment failure (no CR/CRi at the primary response visit, dated at that
  assessment); censored at the last disease assessment (day 0 without one).
- LFS: relapse/progression or death after the first CR/CRi; censored at the last assessment.
- DOR: relapse/progression after the first CR/CRi; censored at the last assessment (deaths without relapse too).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from summaries.definitions import CR_CRI, DAYS_PER_MONTH, DISEASE_EVENTS
from summaries.figures import number
from summaries.records import Assessment, SubjectRecords


@dataclass(frozen=True, slots=True)
class TimeToEvent:
    days: int
    event: bool

    @property
    def months(self) -> float:
        return self.days / DAYS_PER_MONTH


def _tte(subject: SubjectRecords, course: int, events: Sequence[dt.date | None], censor: dt.date) -> TimeToEvent:
    first = min((d for d in events if d is not None), default=None)
    day = subject.timeline.course_day(first if first is not None else censor, course) or 0
    return TimeToEvent(max(day, 0), first is not None)


def _death(subject: SubjectRecords, origin: dt.date) -> dt.date | None:
    return next((e.on for e in subject.events if e.kind == "death" and e.on >= origin), None)


def _disease_event(subject: SubjectRecords, after: dt.date) -> dt.date | None:
    return next((a.assessed_on for a in subject.assessments
                 if a.category in DISEASE_EVENTS and a.assessed_on > after), None)


def _last_assessment(subject: SubjectRecords, origin: dt.date) -> dt.date:
    return max((a.assessed_on for a in subject.assessments if a.assessed_on >= origin), default=origin)


def overall_survival(subject: SubjectRecords, course: int) -> TimeToEvent | None:
    origin = subject.timeline.day0_of(course)
    if origin is None:
        return None
    alive = [e.on for e in subject.events if e.kind != "death"]
    alive += [a.assessed_on for a in subject.assessments] + [f.infused_on for f in subject.fractions]
    return _tte(subject, course, [_death(subject, origin)], max([origin, *alive]))


def event_free_survival(subject: SubjectRecords, course: int, primary: Assessment | None) -> TimeToEvent | None:
    origin = subject.timeline.day0_of(course)
    if origin is None:
        return None
    failure = primary.assessed_on if primary is not None and primary.category not in CR_CRI else None
    events = [_death(subject, origin), _disease_event(subject, origin), failure]
    return _tte(subject, course, events, _last_assessment(subject, origin))


def first_remission(subject: SubjectRecords, course: int) -> dt.date | None:
    timeline = subject.timeline
    return next((a.assessed_on for a in subject.assessments
                 if a.category in CR_CRI and timeline.course_of(a.assessed_on) == course), None)


def from_remission(subject: SubjectRecords, course: int, *, death_is_event: bool) -> TimeToEvent | None:
    """LFS (``death_is_event``) or DOR, from the first CR/CRi of the course; None for a non-responder."""
    origin = first_remission(subject, course)
    if origin is None:
        return None
    events = [_disease_event(subject, origin), _death(subject, origin) if death_is_event else None]
    tte = _tte(subject, course, events, _last_assessment(subject, origin))
    offset = subject.timeline.course_day(origin, course) or 0
    return TimeToEvent(tte.days - offset, tte.event)


def kaplan_meier(times: Sequence[TimeToEvent | None]) -> dict[str, Any]:
    """Kaplan-Meier (lifelines): median with its 95 % CI, and 6- and 12-month survival with 95 % CIs
    (lifelines' exponential Greenwood intervals)."""
    known = [t for t in times if t is not None]
    empty = {"n": len(known), "events": sum(t.event for t in known), "median_months": None,
             "median_ci": [None, None], "rate_6m": None, "rate_12m": None, "rate_6m_ci": [None, None],
             "rate_12m_ci": [None, None]}
    if not known:
        return empty
    from lifelines import KaplanMeierFitter  # imported here: a slow import that only summaries need
    from lifelines.utils import median_survival_times

    fitter = KaplanMeierFitter().fit([t.months for t in known], [t.event for t in known])
    low, high = median_survival_times(fitter.confidence_interval_).iloc[0]
    return {**empty, "median_months": number(fitter.median_survival_time_), "median_ci": [number(low), number(high)],
            "rate_6m": _at(fitter, 6)[0], "rate_6m_ci": _at(fitter, 6)[1:], "rate_12m": _at(fitter, 12)[0],
            "rate_12m_ci": _at(fitter, 12)[1:]}


def _at(fitter: Any, months: float) -> list[float | None]:
    """The survival estimate and its CI at ``months`` (the step function's value at the last time on or before)."""
    estimates, intervals = fitter.survival_function_, fitter.confidence_interval_survival_function_
    estimate = estimates[estimates.index <= months].iloc[-1, 0]
    interval = intervals[intervals.index <= months].iloc[-1]
    return [number(estimate), number(interval.iloc[0]), number(interval.iloc[1])]
