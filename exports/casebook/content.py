"""What a subject's casebook holds, read with a fixed number of queries whatever the number of records.

Forms come in course order (enrolment, consents, measurements, eligibility, status history, collections
and lots, bridging, lymphodepletion, infusions, adverse events with their CRS/ICANS assessments,
medications, responses, follow-up, lab draws with their results). Each record carries its position on
the subject's timeline (``patients.timeline``: study day and course day are never computed here), its
audit trail (``audit.selectors``: one query for the whole subject), and then come the subject's
signatures with their validity and its unresolved data queries with their threads.

Queries per subject: one for the subject, one for its lock state, one per form table and one per part
table (prefetches), one for the audit trail, one for the signatures and two for the data queries.
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import sys
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from django.apps import apps
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser
from django.db import models
from django.db.models import Count, Prefetch, Window

from audit.selectors import AuditEntry, AuditFilters, AuditScope, FieldChange, iter_audit_entries
from dataqueries.models import DataQuery, QueryMessage
from locking.models import Lock
from locking.services import blocking_lock
from patients.models import Subject
from patients.record_paths import SUBJECT_PATHS
from patients.timeline import Position, Timeline, local_date, timeline_from, with_timeline
from signatures.models import Signature

# Columns that are the record's own bookkeeping or its place (the casebook is one subject's, at one site).
HIDDEN = frozenset({"id", "subject", "site", "created_at", "updated_at"})
RECORD, TABLE = "record", "table"  # one block of label/value pairs per record, or one row per record
# Design records whose names read other rows (a trial site names its trial and site): shown by id.
UNNAMED = frozenset({"trials.TrialSite", "trials.Membership"})


@dataclass(frozen=True)
class PartSpec:
    """Rows entered and read as part of another record's form (e.g. an adverse event's CRS assessments)."""

    label: str  # "patients.crsassessment"
    parent: str  # the foreign key to the parent record
    title: str
    dates: tuple[str, ...]  # the clinical date (or time) of a row: the first that is set
    order: tuple[str, ...]
    style: str = TABLE
    columns: tuple[str, ...] | None = None  # None: every column but HIDDEN and the parent

    @property
    def model(self) -> type[models.Model]:
        return apps.get_model(self.label)

    @property
    def accessor(self) -> str:
        """The parent's name for these rows (e.g. ``crsassessments``)."""
        field = self.model._meta.get_field(self.parent)
        name = field.remote_field.get_accessor_name() if isinstance(field, models.ForeignKey) else None
        if not name:
            raise ValueError(f"{self.label}.{self.parent} is not a foreign key with a reverse accessor")
        return name


@dataclass(frozen=True)
class FormSpec:
    """One case report form: a subject-level table (``patients.record_paths``) and how it is shown."""

    label: str
    title: str
    dates: tuple[str, ...]
    order: tuple[str, ...]
    style: str = RECORD
    columns: tuple[str, ...] | None = None
    parts: tuple[PartSpec, ...] = ()
    # Read as printed, a record and its parts at a time (a long follow-up has thousands of lab draws): the
    # order must end with the primary key, so that each part's rows, in the same order, come record by record.
    streamed: bool = False

    def __post_init__(self) -> None:
        if self.streamed and self.order[-1:] != ("pk",):
            raise ValueError(f"{self.label}: a streamed form's order ends with pk")

    @property
    def model(self) -> type[models.Model]:
        return apps.get_model(self.label)


DOSES = PartSpec("patients.lymphodepletiondose", "course", "Doses", ("given_on",), ("given_on", "agent__agent", "pk"),
                 columns=("agent", "day", "given_on", "planned_mg", "administered_mg", "deviation_reason",
                          "recorded_by"))
FORMS: tuple[FormSpec, ...] = (
    FormSpec("patients.subject", "Enrolment", ("screened_on",), ("pk",)),
    FormSpec("patients.consent", "Informed consent", ("consented_on",), ("consented_on", "pk")),
    FormSpec("patients.bodymeasurement", "Height and weight", ("measured_on",), ("measured_on", "pk"), TABLE,
             ("measured_on", "height_cm", "weight_kg", "recorded_by")),
    FormSpec("patients.eligibilityassessment", "Eligibility", ("assessed_on",), ("assessed_on", "pk"), parts=(
        PartSpec("patients.eligibilityanswer", "assessment", "Criteria", (), ("criterion__kind", "criterion__number",
                                                                            "pk"), columns=("criterion", "met")),)),
    FormSpec("patients.subjecttransition", "Status history", ("effective_on",), ("recorded_at", "pk"), TABLE,
             ("effective_on", "from_status", "to_status", "reason", "recorded_by", "recorded_at")),
    FormSpec("patients.apheresiscollection", "Apheresis collections", ("collected_on",), ("collected_on", "pk")),
    FormSpec("patients.donorcollection", "Donor collections", ("collected_on",), ("collected_on", "pk")),
    FormSpec("patients.productlot", "Product lots", ("release_date", "failed_on"), ("pk",)),
    FormSpec("patients.bridgingtherapy", "Bridging therapy", ("started_on",), ("started_on", "pk")),
    # A course is dated by its doses (its planned day 0 is one of its values, not the date of an event).
    FormSpec("patients.lymphodepletioncourse", "Lymphodepletion", (), ("course_number",),
             parts=(DOSES,)),
    FormSpec("patients.infusion", "CAR-T infusions", ("infused_on",), ("course_number", "fraction_number")),
    FormSpec("patients.adverseevent", "Adverse events", ("onset_on",), ("onset_on", "pk"), parts=(
        PartSpec("patients.crsassessment", "event", "CRS assessments (ASTCT)", ("assessed_at",),
                 ("assessed_at", "pk"), RECORD),
        PartSpec("patients.icansassessment", "event", "ICANS assessments (ASTCT)", ("assessed_at",),
                 ("assessed_at", "pk"), RECORD))),
    FormSpec("patients.concomitantmedication", "Medications", ("given_at",), ("given_at", "pk")),
    FormSpec("patients.responseassessment", "Response assessments", ("assessed_on",), ("assessed_on", "pk")),
    FormSpec("patients.followup", "Follow-up", ("event_on",), ("event_on", "pk")),
    FormSpec("assays.labdraw", "Laboratory", ("collected_at",), ("collected_at", "pk"), streamed=True, parts=(
        PartSpec("assays.result", "draw", "Results", ("collected_at",), ("analyte__code", "pk"),
                 columns=("analyte", "value_text", "unit_text", "value", "censored", "flag", "ctcae_grade",
                          "status", "superseded", "correction_reason", "source_ref", "recorded_at")),)),
)


@dataclass(frozen=True, slots=True)
class TrailEntry:
    """What the casebook prints of an audit entry (``audit.selectors.AuditEntry`` carries much more: a long
    subject's trail is tens of thousands of entries). A creation keeps no values: they are the record's."""

    at: dt.datetime
    who: str
    action: str
    reason: str | None
    table_name: str
    record_id: str
    changes: tuple[FieldChange, ...] = ()

    @classmethod
    def of(cls, entry: AuditEntry) -> TrailEntry:
        changes = () if entry.action == "insert" else entry.changes
        return cls(entry.at, sys.intern(entry.who), entry.action, entry.reason, entry.table_name, entry.record_id,
                   changes)


@dataclass(frozen=True)
class Row:
    """One record as shown: its id, its position on the timeline, its audit trail and its parts."""

    label: str
    pk: int
    obj: models.Model
    date: dt.date | None
    position: Position
    trail: tuple[TrailEntry, ...]
    parts: tuple[tuple[PartSpec, tuple[Row, ...]], ...] = ()


class StreamedRows:
    """A streamed form's rows: their number is known when the casebook is loaded (from the first row read),
    the rows are made as they are iterated, once, from the cursors opened by ``load_casebook``."""

    def __init__(self, count: int, rows: Iterator[Row]) -> None:
        self.count, self._rows = count, rows

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[Row]:
        return self._rows


@dataclass(frozen=True)
class Form:
    spec: FormSpec
    rows: tuple[Row, ...] | StreamedRows


@dataclass(frozen=True)
class QueryThread:
    query: DataQuery
    messages: tuple[QueryMessage, ...]


@dataclass(frozen=True)
class Casebook:
    subject: Subject
    timeline: Timeline
    cutoff: dt.datetime
    lock: Lock | None
    forms: tuple[Form, ...]
    signatures: tuple[Signature, ...]
    queries: tuple[QueryThread, ...]
    # Changes of rows shown in no form (e.g. locks): known once every form's rows have been made.
    leftovers: Callable[[], tuple[TrailEntry, ...]] = field(default=tuple)

    @property
    def other_trail(self) -> tuple[TrailEntry, ...]:
        return self.leftovers()


def columns_of(model: type[models.Model], columns: tuple[str, ...] | None, parent: str = "") -> list[models.Field]:
    """The fields shown for ``model``: the named ones, or every concrete field but the hidden ones."""
    if columns is not None:
        return [model._meta.get_field(name) for name in columns]  # type: ignore[misc]
    return [f for f in model._meta.concrete_fields if f.name not in HIDDEN and f.name != parent]


def _with_related(qs: models.QuerySet, columns: list[models.Field]) -> models.QuerySet:
    """``qs`` joined to the rows its foreign-key columns show, and to nothing else: ``select_related()`` with no
    name would join every non-null foreign key, and theirs."""
    related = [f.name for f in columns if f.many_to_one or f.one_to_one]
    return qs.select_related(*related) if related else qs


def _part_queryset(part: PartSpec) -> models.QuerySet:
    model = part.model
    return _with_related(model._default_manager.all(), columns_of(model, part.columns, part.parent)) \
        .order_by(*part.order)


def _subject_filter(label: str, subject_id: int, prefix: str = "") -> dict[str, int]:
    path = SUBJECT_PATHS[label]
    return {f"{prefix}pk" if path == "pk" else f"{prefix}{path}_id": subject_id}


def _form_queryset(spec: FormSpec, subject_id: int) -> models.QuerySet:
    model = spec.model
    qs = model._default_manager.filter(**_subject_filter(spec.label, subject_id))
    qs = _with_related(qs, columns_of(model, spec.columns))
    if not spec.streamed:
        for part in spec.parts:
            qs = qs.prefetch_related(Prefetch(part.accessor, queryset=_part_queryset(part)))
    return qs.order_by(*spec.order)


def _streamed_part_queryset(spec: FormSpec, part: PartSpec, subject_id: int) -> models.QuerySet:
    """Every part row of the subject's records, in the records' order, then the part's own order."""
    by_record = [f"-{part.parent}__{name[1:]}" if name.startswith("-") else f"{part.parent}__{name}"
                 for name in spec.order]
    return _part_queryset(part).filter(**_subject_filter(spec.label, subject_id, f"{part.parent}__")) \
        .order_by(*by_record, *part.order)


def clinical_date(obj: Any, dates: tuple[str, ...], tz: Any, parent: Any = None) -> dt.date | None:
    """The site's local date of the record's first set clinical date or time (a part may take its parent's)."""
    for name in dates:
        value = getattr(obj, name, None)
        if value is None and parent is not None:
            value = getattr(parent, name, None)
        if value is not None:
            return local_date(value, tz)
    return None


class _Builder:
    """Turns loaded records into rows with their timeline position and audit trail."""

    def __init__(self, subject: Subject, timeline: Timeline, trail: dict[tuple[str, str], list[TrailEntry]]) -> None:
        self.tz, self.timeline, self.trail = subject.site.tzinfo, timeline, trail

    def take_trail(self, label: str, pk: Any) -> tuple[TrailEntry, ...]:
        """The record's trail, taken out of what is left for the trail of other records."""
        return tuple(self.trail.pop((label, str(pk)), ()))

    def row(self, label: str, obj: models.Model, dates: tuple[str, ...], parts: tuple[PartSpec, ...] = (),
            parent: Any = None, children: Sequence[Sequence[models.Model]] | None = None) -> Row:
        """A record as shown; its parts' rows are ``children`` (one list per part) or read from its prefetches."""
        date = clinical_date(obj, dates, self.tz, parent)
        if children is None:
            children = [getattr(obj, part.accessor).all() for part in parts]
        shown = tuple((part, tuple(self.row(part.label, child, part.dates, parent=obj) for child in rows))
                      for part, rows in zip(parts, children, strict=True))
        return Row(label, obj.pk, obj, date, self.timeline.position(date), self.take_trail(obj._meta.label, obj.pk),
                   shown)

    def leftovers(self) -> tuple[TrailEntry, ...]:
        return tuple(e for entries in self.trail.values() for e in entries)


class _Children:
    """A part's rows of every record of a streamed form, in the form's order, handed out record by record."""

    def __init__(self, rows: Iterator[models.Model], parent: str) -> None:
        self.rows, self.attname = rows, f"{parent}_id"
        self.next = next(self.rows, None)

    def of(self, parent_pk: Any) -> list[models.Model]:
        found = []
        while self.next is not None and getattr(self.next, self.attname) == parent_pk:
            found.append(self.next)
            self.next = next(self.rows, None)
        return found


STREAM_CHUNK = 2000  # rows a fetch of a streamed form's server-side cursors


def _streamed(spec: FormSpec, subject_id: int, builder: _Builder) -> StreamedRows:
    """The form's records through one server-side cursor, counted by a window over the same query (its first
    row gives the number, without a query of its own), and each part's rows through one cursor of its own."""
    records = _form_queryset(spec, subject_id).annotate(casebook_count=Window(Count("pk"))) \
        .iterator(chunk_size=STREAM_CHUNK)
    first = next(records, None)

    def rows() -> Iterator[Row]:
        if first is None:
            return
        parts = [_Children(_streamed_part_queryset(spec, part, subject_id).iterator(chunk_size=STREAM_CHUNK),
                           part.parent) for part in spec.parts]
        for obj in itertools.chain([first], records):
            yield builder.row(spec.label, obj, spec.dates, spec.parts, children=[p.of(obj.pk) for p in parts])
        if any(p.next is not None for p in parts):
            raise RuntimeError(f"{spec.label}: part rows left over after the last record")

    return StreamedRows(0 if first is None else first.casebook_count, rows())


@functools.cache
def _references(label: str) -> dict[str, type[models.Model]]:
    """The foreign key columns of a tracked model whose rows can be named without a query of their own:
    users (by user name) and protocol design records (their names read only their own columns)."""
    found: dict[str, type[models.Model]] = {}
    for f in apps.get_model(label)._meta.concrete_fields:
        target = f.related_model if f.many_to_one or f.one_to_one else None
        if not (isinstance(target, type) and issubclass(target, models.Model)):
            continue
        if target is get_user_model() or (target._meta.app_label == "trials" and target._meta.label not in UNNAMED):
            found[f.column] = target
    return found


def _want(entry: AuditEntry, wanted: dict[type[models.Model], set[int]]) -> None:
    """Note the rows that ``entry``'s changed foreign keys refer to."""
    references = _references(entry.table)
    for change in entry.changes:
        if change.field in references:
            wanted[references[change.field]].update(
                int(v) for v in (change.old, change.new) if v is not None and v.isdigit())


def _named(wanted: dict[type[models.Model], set[int]]) -> dict[tuple[str, str], str]:
    """(model label, id) -> "name (#id)" of the rows the trail's changes refer to: one query per model."""
    names: dict[tuple[str, str], str] = {}
    for model, ids in sorted(wanted.items(), key=lambda item: item[0]._meta.label):
        for obj in model._default_manager.filter(pk__in=sorted(ids)):
            name = obj.get_username() if isinstance(obj, AbstractBaseUser) else str(obj)
            names[(model._meta.label, str(obj.pk))] = f"{name} (#{obj.pk})"
    return names


def _with_names(entry: AuditEntry, names: dict[tuple[str, str], str]) -> AuditEntry:
    references = _references(entry.table)
    if not any(c.field in references for c in entry.changes):
        return entry

    def named(column: str, value: str | None) -> str | None:
        return value if value is None else names.get((references[column]._meta.label, value), value)

    changes = tuple(replace(c, old=named(c.field, c.old), new=named(c.field, c.new)) if c.field in references
                    else c for c in entry.changes)
    return replace(entry, changes=changes)


def subject_trail(subject: Subject) -> dict[tuple[str, str], list[TrailEntry]]:
    """Every audit entry of the subject's records, oldest first, by (model label, record id): one query, and
    one per kind of referenced row (users, design records) to name what a changed foreign key points to.
    The scope is the subject's own trial and site, whoever exports (the file depends on the data only).
    Entries are made slim as they are read; changes (of updates and deletes) are named once all are read."""
    scope = AuditScope(site_pairs=frozenset({(subject.trial_id, subject.site_id)}))
    trail: dict[tuple[str, str], list[TrailEntry | AuditEntry]] = defaultdict(list)
    wanted: dict[type[models.Model], set[int]] = defaultdict(set)
    for entry in iter_audit_entries(scope=scope, filters=AuditFilters(subject_id=subject.pk)):
        _want(entry, wanted)
        trail[(entry.table, entry.record_id)].append(TrailEntry.of(entry) if entry.action == "insert" else entry)
    names = _named(wanted)
    return {key: [e if isinstance(e, TrailEntry) else TrailEntry.of(_with_names(e, names)) for e in entries]
            for key, entries in trail.items()}


def _queries(subject: Subject) -> tuple[QueryThread, ...]:
    messages = QueryMessage.objects.select_related("by").order_by("at", "pk")
    unresolved = (DataQuery.objects.filter(subject=subject, status__in=DataQuery.UNRESOLVED)
                  .select_related("content_type", "raised_by").prefetch_related(Prefetch("messages", messages))
                  .order_by("raised_at", "pk"))
    return tuple(QueryThread(q, tuple(q.messages.all())) for q in unresolved)


def load_casebook(*, subject_id: int, cutoff: dt.datetime,
                  forms: tuple[FormSpec, ...] = FORMS) -> Casebook:
    """One subject's casebook, read in a fixed number of queries (see the module's docstring)."""
    subject = with_timeline(Subject.objects.select_related("trial", "site", "cohort"), subject="pk").get(pk=subject_id)
    timeline = timeline_from(subject, subject)
    builder = _Builder(subject, timeline, subject_trail(subject))
    loaded = [Form(spec, _streamed(spec, subject.pk, builder) if spec.streamed else tuple(
        builder.row(spec.label, obj, spec.dates, spec.parts) for obj in _form_queryset(spec, subject.pk)))
        for spec in forms]
    signatures = tuple(Signature.objects.filter(subject=subject).select_related("record_type")
                       .order_by("signed_at", "pk"))
    for signature in signatures:
        builder.take_trail(Signature._meta.label, signature.pk)
    return Casebook(subject=subject, timeline=timeline, cutoff=cutoff,
                    lock=blocking_lock(trial_id=subject.trial_id, site_id=subject.site_id, subject_id=subject.pk),
                    forms=tuple(loaded), signatures=signatures, queries=_queries(subject),
                    leftovers=builder.leftovers)

