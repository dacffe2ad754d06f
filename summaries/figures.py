"""Pure functions: the contract's stats and rates, and each subject's course figures (dose, response, CRS, ICANS).

Course days come from the subject's ``Timeline`` (patients.timeline); nothing here subtracts dates.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from decimal import Decimal
from typing import Any

from summaries.definitions import CORTICOSTEROIDS, CR_CRI, MRD_NEGATIVE, RESPONSE_KEYS, TOCILIZUMAB
from summaries.records import Assessment, Episode, SubjectRecords, VisitRef


def number(value: float | None, places: int = 4) -> float | None:
    """A reported number: rounded for reading, None stays None (never NaN or infinity in the JSON)."""
    if value is None or math.isnan(value) or math.isinf(value):
        return None
    return round(float(value), places)


def stats(values: Iterable[float | int | None]) -> dict[str, Any]:
    """``{"n", "median", "min", "max"}`` of the known values; the median of an even count is the mean of the
    two middle values."""
    known = sorted(float(v) for v in values if v is not None)
    if not known:
        return {"n": 0, "median": None, "min": None, "max": None}
    return {"n": len(known), "median": number(statistics.median(known)), "min": number(known[0]),
            "max": number(known[-1])}


def rate(events: int, of: int) -> dict[str, Any]:
    return {"n": events, "of": of, "rate": number(events / of) if of else None}


def log10(value: float | None) -> float | None:
    return math.log10(value) if value is not None and value > 0 else None


# --- dosing ----------------------------------------------------------------------------------------------


def course_dose(subject: SubjectRecords, course: int) -> float | None:
    """The course's dose: the sum of its fractions, CAR+ cells/kg."""
    doses = [f.cells_per_kg for f in subject.fractions if f.course_number == course]
    return float(sum(doses)) if doses else None


def course_fractions(subject: SubjectRecords, course: int) -> int:
    return sum(1 for f in subject.fractions if f.course_number == course)


def product_source(subject: SubjectRecords, course: int) -> str | None:
    first = next((f for f in subject.fractions if f.course_number == course), None)
    return None if first is None else first.source


# --- response at the primary response visit ------------------------------------------------------------


def primary_response(subject: SubjectRecords, course: int, visit: VisitRef | None) -> Assessment | None:
    """The assessment recorded at the trial's primary response visit of this course: the visit it names, or,
    with no visit named, the window of that visit around the course's day 0."""
    if visit is None:
        return None
    timeline = subject.timeline
    for a in subject.assessments:
        if timeline.course_of(a.assessed_on) != course:
            continue
        if a.visit_id == visit.visit_id:
            return a
        day = timeline.course_day(a.assessed_on, course)
        if a.visit_id is None and day is not None and visit.target_day - visit.before <= day <= (
                visit.target_day + visit.after):
            return a
    return None


def response_key(assessment: Assessment | None) -> str | None:
    return None if assessment is None else RESPONSE_KEYS.get(assessment.category)


def mrd_negative(assessment: Assessment | None, below_pct: Decimal) -> bool:
    """A CR/CRi with MRD below the trial's threshold (recorded as MRD-negative, or by its flow MRD value)."""
    if assessment is None or assessment.category not in CR_CRI:
        return False
    if assessment.category in MRD_NEGATIVE:
        return True
    return assessment.mrd_flow_pct is not None and assessment.mrd_flow_pct < below_pct


# --- CRS and ICANS -------------------------------------------------------------------------------------


def course_episodes(subject: SubjectRecords, course: int, category: str) -> list[Episode]:
    timeline = subject.timeline
    return [e for e in subject.episodes if e.category == category and timeline.course_of(e.onset_on) == course]


def toxicity(subject: SubjectRecords, course: int, category: str) -> dict[str, Any]:
    """Max ASTCT grade over the course's episodes (0 when none); onset day and duration of the first episode
    (duration: calendar days from onset to resolution, both counted); tocilizumab and corticosteroids given."""
    episodes = course_episodes(subject, course, category)
    first = episodes[0] if episodes else None
    timeline = subject.timeline
    onset = timeline.course_day(first.onset_on, course) if first else None
    resolved = timeline.course_day(first.resolved_on, course) if first else None
    drugs = frozenset().union(*(e.drugs for e in episodes))
    return {"max_grade": max((e.grade for e in episodes), default=0), "episodes": len(episodes),
            "onset_day": onset, "duration_days": None if onset is None or resolved is None else resolved - onset + 1,
            "tocilizumab": TOCILIZUMAB in drugs, "corticosteroids": bool(drugs & CORTICOSTEROIDS)}


def toxicity_summary(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    grades = [r["max_grade"] for r in rows]
    return {"max_grade_counts": {str(g): grades.count(g) for g in range(6)}, "grade": stats(grades),
            "grade_3_or_more": sum(1 for g in grades if g >= 3),
            "onset_day": stats(r["onset_day"] for r in rows), "duration_days": stats(r["duration_days"] for r in rows),
            "tocilizumab": sum(1 for r in rows if r["tocilizumab"]),
            "corticosteroids": sum(1 for r in rows if r["corticosteroids"])}
