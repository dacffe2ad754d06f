"""What every SDTM dataset shares: the export's subjects (identifiers, time zone, timeline), the visit
schedule, ISO 8601 dates, study days and visits (from ``patients.timeline`` only), sort order and --SEQ.

A ``Context`` is built once per file in two queries (subjects with their course day 0s; the trial's
visits); domain queries then carry only the subject id and look the rest up here, so a dataset is a
fixed number of queries whatever the number of subjects.
"""

from __future__ import annotations

import datetime as dt
import heapq
import zoneinfo
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from django.db.models import F, OuterRef, QuerySet, Subquery
from django.db.models.functions import Collate

from exports.scope import ExportScope
from exports.sdtm.xpt import Value, Variable
from patients.models import LymphodepletionDose
from patients.timeline import Timeline, VisitWindow, local_date, match_visit, with_timeline
from trials.models import Visit

CHUNK = 2000  # rows fetched per round trip by the server-side cursors
Row = tuple[Value, ...] | list[Value]


def char(name: str, label: str, length: int, comment: str = "") -> Variable:
    return Variable(name, label, "Char", length, comment)


def num(name: str, label: str, comment: str = "") -> Variable:
    return Variable(name, label, "Num", 8, comment)


# Identifier variables of every subject-level dataset; lengths follow the model fields
# (trial code 30, site code 10, subject code 40; USUBJID = STUDYID-SITEID-SUBJID, DOMAIN §8.6).
STUDYID = char("STUDYID", "Study Identifier", 30)
USUBJID = char("USUBJID", "Unique Subject Identifier", 82)


def domain_var(code: str) -> Variable:
    return char("DOMAIN", "Domain Abbreviation", 2, f"Always {code}.")


def seq(code: str) -> Variable:
    return num(f"{code}SEQ", "Sequence Number", "1, 2, ... per subject in the dataset's sort order.")


VISITNUM = num("VISITNUM", "Visit Number",
               "100 x course number + the visit's rank in the protocol schedule (by target day); the visit whose "
               "window holds the date (patients.timeline.match_visit). Empty outside every window.")
VISIT = char("VISIT", "Visit Name", 60, "COURSE n <visit code>, from the same match as VISITNUM.")


@dataclass(frozen=True, slots=True)
class SubjectRef:
    id: int
    subjid: str
    siteid: str
    usubjid: str
    tz: zoneinfo.ZoneInfo
    timeline: Timeline
    sex: str = ""
    age: int | None = None
    first_exposure: dt.date | None = None  # RFXSTDTC's date: first lymphodepletion dose or infusion


@dataclass(frozen=True, slots=True)
class Dataset:
    """One SDTM dataset: its name, label, variables and rows (tuples in variable order, sorted)."""

    name: str
    label: str
    variables: tuple[Variable, ...]
    rows: Callable[[Context], Iterable[Row]]
    structure: str = ""


class Context:
    """The subjects and visit schedule of one export, and the per-row helpers built on them."""

    def __init__(self, scope: ExportScope) -> None:
        self.scope = scope
        self.studyid = scope.trial.code
        self.subjects = self._subjects(scope)
        visits = list(Visit.objects.filter(trial=scope.trial).order_by("target_day", "code"))
        self.windows = [VisitWindow.of(v) for v in visits]
        self.rank = {v.pk: i for i, v in enumerate(visits, start=1)}

    def _subjects(self, scope: ExportScope) -> dict[int, SubjectRef]:
        zones: dict[str, zoneinfo.ZoneInfo] = {}
        refs = {}
        first_ld = (LymphodepletionDose.objects.filter(course__subject=OuterRef("pk")).order_by("given_on")
                    .values("given_on")[:1])
        rows = (with_timeline(scope.subjects().order_by(), subject="pk").annotate(first_ld=Subquery(first_ld))
                .values_list("pk", "code", "site__code", "site__time_zone", "course_day0s", "sex", "age_at_consent",
                             "first_ld"))
        for pk, code, site_code, zone, day0s, sex, age, ld in rows:
            tz = zones.setdefault(zone, zoneinfo.ZoneInfo(zone))
            timeline = Timeline.of(day0s)
            first = min((d for d in (ld, timeline.day0) if d is not None), default=None)
            refs[pk] = SubjectRef(pk, code, site_code, f"{self.studyid}-{site_code}-{code}", tz, timeline, sex, age,
                                  first)
        return refs

    def subject_ids(self) -> QuerySet[Any]:
        """The export's subjects, as a subquery for domain queries (``subject__in=``)."""
        return self.scope.subjects().order_by().values("pk")

    def study_day(self, subject: SubjectRef, when: dt.date | dt.datetime | None) -> int | None:
        """SDTM --DY (no day 0) of a date or time, on the site's calendar."""
        return subject.timeline.cdisc_study_day(local_date(when, subject.tz))

    def visit(self, subject: SubjectRef, when: dt.date | dt.datetime | None) -> tuple[int | None, str]:
        """(VISITNUM, VISIT) of the protocol visit whose window holds the date, in the course it belongs to."""
        matched = match_visit(subject.timeline, self.windows, local_date(when, subject.tz))
        if matched is None:
            return None, ""
        window, course = matched
        return 100 * course + self.rank[window.visit_id], f"COURSE {course} {window.code}"


def subject_order(path: str = "subject") -> list[Collate]:
    """ORDER BY terms giving the USUBJID order (site code, then subject code, byte-wise); ``path`` is the
    path to the subject, "" for a subject queryset."""
    prefix = f"{path}__" if path else ""
    return [Collate(F(f"{prefix}site__code"), "C"), Collate(F(f"{prefix}code"), "C")]


def subject_key(subject: SubjectRef) -> tuple[str, str]:
    """The same order in Python (str comparison is by code point, as collation "C")."""
    return subject.siteid, subject.subjid


def dtc(value: dt.date | dt.datetime | None, tz: zoneinfo.ZoneInfo | None = None) -> str:
    """ISO 8601 --DTC: a date, or a time on the site's clock to the minute (seconds when not zero)."""
    if value is None:
        return ""
    if isinstance(value, dt.datetime):
        local = value.astimezone(tz) if tz is not None else value
        return local.strftime("%Y-%m-%dT%H:%M:%S" if local.second else "%Y-%m-%dT%H:%M")
    return value.isoformat()


def yn(flag: bool | None) -> str:
    return "" if flag is None else ("Y" if flag else "N")


def numbered(rows: Iterable[Row], usubjid_index: int = 2, seq_index: int = 3) -> Iterator[Row]:
    """Fill --SEQ (1, 2, ... per USUBJID) in rows already in dataset order (placeholder at ``seq_index``)."""
    current, n = None, 0
    for row in rows:
        if row[usubjid_index] != current:
            current, n = row[usubjid_index], 0
        n += 1
        if isinstance(row, list):  # built for this purpose: filled in place
            row[seq_index] = n
            yield row
        else:
            yield (*row[:seq_index], n, *row[seq_index + 1:])


def merged(*streams: Iterable[tuple[Any, Row]]) -> Iterator[Row]:
    """Rows of several (sort key, row) streams, each already sorted, in one sorted stream."""
    for _key, row in heapq.merge(*streams, key=lambda pair: pair[0]):
        yield row
