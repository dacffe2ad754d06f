"""Cellular kinetics of one course from the CAR transgene qPCR series (DOMAIN 5.5), B-cell aplasia (5.6) and
baseline target-antigen expression. Pure functions of a subject's samples; course days from its Timeline."""

from __future__ import annotations

from dataclasses import dataclass

from patients.timeline import Timeline
from summaries.definitions import AUC_END_DAY, B_CELL_APLASIA_BELOW_PCT
from summaries.records import Sample


@dataclass(frozen=True, slots=True)
class Point:
    day: int  # course day
    sample: Sample


@dataclass(frozen=True, slots=True)
class Kinetics:
    baseline: float | None  # copies/ug; 0 when the baseline sample is below the LLOQ; None without one
    cmax: float | None
    tmax: int | None
    auc_0_28: float | None
    persistence_day: int | None


def quantified(sample: Sample, lloq: float | None) -> bool:
    if sample.value is None or sample.censored == "<":
        return False
    return lloq is None or sample.value >= lloq


def baseline_sample(samples: list[Sample], timeline: Timeline, course: int) -> Sample | None:
    """The last sample on or before the course's day 0 (a re-treated subject may carry residual transgene)."""
    days = [(timeline.course_day(s.on, course), s) for s in samples]
    before = [s for day, s in days if day is not None and day <= 0]
    return before[-1] if before else None


def after_day0(samples: list[Sample], timeline: Timeline, course: int) -> list[Point]:
    """The samples after the course's day 0 and before the next course, with their course days."""
    points = []
    for s in samples:
        day = timeline.course_day(s.on, course)
        if day is not None and day > 0 and timeline.course_of(s.on) == course:
            points.append(Point(day, s))
    return points


def trapezoid(points: list[tuple[int, float]]) -> float:
    return sum((d2 - d1) * (v1 + v2) / 2 for (d1, v1), (d2, v2) in zip(points, points[1:], strict=False))


def auc_points(start: float, points: list[Point], tmax: int | None, lloq: float | None) -> list[tuple[int, float]]:
    """Day 0 then the samples up to day 28; below the LLOQ: 0 before Tmax, missing after it (DOMAIN 5.5)."""
    kept = [(0, start)]
    for p in points:
        if p.day > AUC_END_DAY:
            break
        if quantified(p.sample, lloq):
            kept.append((p.day, p.sample.value or 0.0))
        elif tmax is None or p.day < tmax:
            kept.append((p.day, 0.0))
    return kept


def kinetics(samples: list[Sample], timeline: Timeline, course: int, lloq: float | None) -> Kinetics:
    base = baseline_sample(samples, timeline, course)
    baseline = None if base is None else (base.value if quantified(base, lloq) else 0.0)
    points = after_day0(samples, timeline, course)
    measured = [p for p in points if quantified(p.sample, lloq)]
    peak = max(measured, key=lambda p: p.sample.value or 0.0, default=None)
    tmax = peak.day if peak else None
    auc = trapezoid(auc_points(baseline or 0.0, points, tmax, lloq)) if points else None
    return Kinetics(baseline=baseline, cmax=peak.sample.value if peak else None, tmax=tmax, auc_0_28=auc,
                    persistence_day=measured[-1].day if measured else None)


def b_cell_aplasia(samples: list[Sample], timeline: Timeline, course: int) -> bool | None:
    """B-cell aplasia at the last B-cell count of the course: CD19+ B cells below 1 % of lymphocytes
    (DOMAIN 5.6); None without a count after day 0."""
    points = after_day0(samples, timeline, course)
    if not points:
        return None
    last = points[-1].sample
    return last.censored == "<" or (last.value is not None and last.value < B_CELL_APLASIA_BELOW_PCT)


def baseline_value(samples: list[Sample], timeline: Timeline, course: int) -> float | None:
    """The last result on or before day 0 (e.g. target antigen on blasts, %)."""
    base = baseline_sample(samples, timeline, course)
    return None if base is None else base.value
