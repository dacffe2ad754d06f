"""Haematologic toxicity of one course (issue 12): days of severe neutropenia and the days of neutrophil and
platelet recovery, from the ANC and platelet series. Pure functions; course days from the subject's Timeline."""

from __future__ import annotations

from dataclasses import dataclass

from patients.timeline import Timeline
from summaries.definitions import ANC_RECOVERED_AT, ANC_SEVERE_BELOW, PLATELETS_RECOVERED_AT, RECOVERY_RUN
from summaries.records import Sample


@dataclass(frozen=True, slots=True)
class Haematology:
    anc_below_500_days: int | None
    neutrophil_recovery_day: int | None
    platelet_recovery_day: int | None


def daily_lowest(samples: list[Sample], timeline: Timeline, course: int) -> dict[int, float]:
    """Course day -> the day's lowest count, for the days before the next course (earlier days included: a
    value before day 0 bounds the first days after it)."""
    days: dict[int, float] = {}
    for s in samples:
        day = timeline.course_day(s.on, course)
        if s.value is None or day is None or (day >= 0 and timeline.course_of(s.on) != course):
            continue
        days[day] = min(s.value, days.get(day, s.value))
    return dict(sorted(days.items()))


def recovery_day(days: dict[int, float], limit: float) -> int | None:
    """First of three consecutive measurements at or above ``limit`` after the count fell below it on or after
    day 0; None when it never fell below (or has not recovered yet)."""
    series = [(d, v) for d, v in days.items() if d >= 0]
    fell = next((i for i, (_d, v) in enumerate(series) if v < limit), None)
    if fell is None:
        return None
    for i in range(fell, len(series) - RECOVERY_RUN + 1):
        if all(v >= limit for _d, v in series[i:i + RECOVERY_RUN]):
            return series[i][0]
    return None


def below_on(day: int, days: dict[int, float], limit: float) -> bool:
    """A measured day is below on its own value; a day between two measurements only when both are below."""
    if day in days:
        return days[day] < limit
    before = [v for d, v in days.items() if d < day]
    after = [v for d, v in days.items() if d > day]
    return bool(before and after) and before[-1] < limit and after[0] < limit


def severe_neutropenia_days(days: dict[int, float], recovered: int | None) -> int | None:
    """Calendar days from day 0 until recovery, the next course or the last measurement with ANC < 0.5
    (not cut at day 28)."""
    measured = [d for d in days if d >= 0]
    if not measured:
        return None
    last = measured[-1] if recovered is None else min(measured[-1], recovered - 1)
    return sum(1 for day in range(0, last + 1) if below_on(day, days, ANC_SEVERE_BELOW))


def haematology(anc: list[Sample], platelets: list[Sample], timeline: Timeline, course: int) -> Haematology:
    anc_days = daily_lowest(anc, timeline, course)
    recovered = recovery_day(anc_days, ANC_RECOVERED_AT)
    return Haematology(anc_below_500_days=severe_neutropenia_days(anc_days, recovered),
                       neutrophil_recovery_day=recovered,
                       platelet_recovery_day=recovery_day(daily_lowest(platelets, timeline, course),
                                                          PLATELETS_RECOVERED_AT))
