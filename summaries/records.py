"""The records a trial summary is computed from: plain values, loaded once by ``summaries.selectors``.

Every figure of a summary is a pure function of these (``summaries.figures``, ``.kinetics``, ``.haematology``,
``.survival``), so a number can be traced back to the rows behind it and tested without the database.
Dates are the site's local dates; clinical time (course day) comes from the subject's ``Timeline``.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from decimal import Decimal

from patients.timeline import Timeline


@dataclass(frozen=True, slots=True)
class Fraction:
    course_number: int
    fraction_number: int
    infused_on: dt.date
    cells_per_kg: float
    source: str  # the lot's source: autologous or allogeneic
    target_antigens: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Episode:
    """A CRS or ICANS adverse event: its grade is the maximum of its ASTCT assessments."""

    category: str  # crs or icans
    onset_on: dt.date
    resolved_on: dt.date | None
    grade: int
    drugs: frozenset[str]  # concomitant medications given for it


@dataclass(frozen=True, slots=True)
class Assessment:
    assessed_on: dt.date
    visit_id: int | None
    category: str
    mrd_flow_pct: Decimal | None


@dataclass(frozen=True, slots=True)
class Event:
    kind: str  # a FollowUp kind: death, last_contact, allo_hsct, new_therapy, lost
    on: dt.date


@dataclass(frozen=True, slots=True)
class Sample:
    """One assay result in the analyte's canonical unit; ``value`` is None for a text such as 'not detected'.

    For the analytes read as a daily lowest (``definitions.DAILY_LOWEST_ANALYTES``) a sample is the day's lowest
    value (results without a value left out, ``censored`` empty): all that ``haematology`` reads of them."""

    on: dt.date
    value: float | None
    censored: str  # "<" below LLOQ, ">" above ULOQ, "" quantified


@dataclass(slots=True)
class SubjectRecords:
    code: str
    site: str
    cohort: str | None
    sex: str
    age_years: int | None
    prior_hsct: bool
    prior_car_t: bool
    timeline: Timeline
    fractions: list[Fraction] = field(default_factory=list)
    episodes: list[Episode] = field(default_factory=list)
    assessments: list[Assessment] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    samples: dict[str, list[Sample]] = field(default_factory=dict)  # analyte code -> samples in time order


@dataclass(frozen=True, slots=True)
class VisitRef:
    visit_id: int
    code: str
    target_day: int
    before: int
    after: int


@dataclass(slots=True)
class TrialRecords:
    trial: str
    cohort: str | None
    mrd_negative_below_pct: Decimal
    primary_visit: VisitRef | None
    lloq: dict[str, float | None]  # analyte code -> LLOQ in its canonical unit
    subjects: list[SubjectRecords]
