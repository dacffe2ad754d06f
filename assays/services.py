"""Assay result ingestion: one result or a batch of up to 10,000, all-or-nothing, at close to COPY speed.

The rules (DESIGN "Assay results", API issue "Ingestion"):
- a result names its subject (code), lab draw (accession number, specimen, collection time), analyte,
  value as sent (number, '<LLOQ', '>ULOQ', '<0.5', or an accepted text) and unit as sent;
- unknown analyte or unit, a unit that does not convert, a non-number where a number is required, a
  collection before consent, after withdrawal of consent or after death, a subject outside the
  caller's sites, a future time and the same reference twice in one batch are refused, row by row;
- re-posting an identical result stores nothing; the same reference with another value is a
  conflict unless sent as a correction with a reason, which supersedes (never overwrites) the old row;
- a row of a subject under a freeze or lock (of the subject, its site or its trial) is a conflict (409).

Speed comes from round trips and per-row work. One read, a plain SELECT before any transaction, brings
the subjects, their locks, the current results of the batch's references, its existing draws and the
visits (the catalogue is kept per process while its version row says it is current); rows are validated
in plain Python, with each local date, range and grade computed once; a small post whose draws exist is
written by one INSERT that is its own transaction, anything more in one transaction with COPY for large
batches. A large batch of new results (no correction) is read without its references' current results and
checked as its COPY sends it, a chunk at a time, so the server writes while Python checks (``_stream``): a
refusal, a repost or a conflict rolls it back and the batch is read and checked again the usual way, which
answers as it always did. Each row carries the request's audit context and is its own insert record
(assays.models.Result); superseding a row is audited as an update.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from operator import attrgetter, le
from typing import Annotated, Any

import msgspec
import pghistory
from django.contrib.auth.models import AbstractBaseUser, User
from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from assays.lab_grading import lab_grader
from assays.models import Analyte, AnalyteUnit, CatalogueVersion, LabDraw, ReferenceRange, Result, Specimen
from assays.ranges import pick_range
from config.db import prepared_rows
from config.errors import DomainError, PermissionRefused
from locking.services import blocking_lock_sql, lock_refusals
from patients.models import Consent, FollowUp, Subject
from patients.timeline import Timeline, VisitWindow, day0s_sql, local_date, match_visit
from trials.access import ENTRY_ROLES, access_of
from trials.models import Site, Visit

MAX_BATCH = 10_000
STATUSES = frozenset(Result.Status.values)
SPECIMENS = frozenset(Specimen.values)
CENSORED = re.compile(r"^\s*([<>])\s*(LLOQ|ULOQ|[-+0-9.eE]+)\s*$", re.IGNORECASE)
# A number as laboratories write it, in ASCII: float() alone also takes "١٢", "1_000", "inf" and "nan".
NUMBER = re.compile(r"^\s*[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?\s*$", re.ASCII)
# The columns' sizes: a longer text is a per-row error, never a database error.
MAX_LENGTHS = {"source_ref": 80, "accession_number": 40, "value": 40, "unit": 30, "subject": 40, "analyte": 30,
               "specimen": 6, "status": 12}
TEXT_FIELDS = ("source_ref", "subject", "accession_number", "specimen", "analyte", "value", "unit", "status",
               "correction_reason")
EARLIEST = 1900  # a collection year before this is a typo (and year 1 overflows a time-zone conversion)
RESULT_COLUMNS = ("draw_id", "subject_id", "site_id", "analyte_id", "source_ref", "value_text", "unit_text", "value",
                  "censored", "flag", "ctcae_grade", "status", "superseded", "correction_reason", "recorded_by_id",
                  "recorded_at", "audit_context_id")


class ResultIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True, gc=False):
    """One result as a laboratory sends it, ``value`` as a text. The API decodes a body straight into these
    (msgspec: no Python frame per row), and decoding also holds each text to its column's size (``Meta``; a
    struct made in Python is not checked so: ``ingest_results`` checks it). A batch makes one per row, so it is
    a struct the garbage collector does not track (it holds texts and a time, never a cycle)."""

    source_ref: Annotated[str, msgspec.Meta(max_length=MAX_LENGTHS["source_ref"])]
    subject: Annotated[str, msgspec.Meta(max_length=MAX_LENGTHS["subject"])]
    accession_number: Annotated[str, msgspec.Meta(max_length=MAX_LENGTHS["accession_number"])]
    specimen: Annotated[str, msgspec.Meta(max_length=MAX_LENGTHS["specimen"])]
    collected_at: dt.datetime
    analyte: Annotated[str, msgspec.Meta(max_length=MAX_LENGTHS["analyte"])]
    value: Annotated[str, msgspec.Meta(max_length=MAX_LENGTHS["value"])]
    unit: Annotated[str, msgspec.Meta(max_length=MAX_LENGTHS["unit"])] = ""
    status: Annotated[str, msgspec.Meta(max_length=MAX_LENGTHS["status"])] = "final"
    correction_reason: str = ""


@dataclass
class IngestOutcome:
    created: int = 0
    unchanged: int = 0
    corrected: int = 0
    result_ids: list[int] = field(default_factory=list)


class BatchRejected(DomainError):
    """Rows that break a rule: every failing row's index, field path and reason; nothing stored."""

    def __init__(self, errors: list[dict[str, Any]], *, conflict: bool = False) -> None:
        code = "conflict" if conflict else "rows_invalid"
        super().__init__(code, f"{len({e['index'] for e in errors})} row(s) refused; nothing was stored.")
        self.errors = errors
        self.http_status = 409 if conflict else 400


@dataclass(slots=True)
class _SubjectFacts:
    id: int
    site_id: int
    trial_id: int
    tz: Any
    sex: str
    age: int | None
    first_consent: dt.date | None
    withdrawn: dt.date | None
    death: dt.date | None
    timeline: Timeline


def _rows(sql: str, params: Sequence[Any]) -> list[tuple]:
    """Hand-written SQL for the per-request lookups: the ORM's query compilation costs more than the
    queries themselves on a single-result post (about 15 ms of a 25 ms request)."""
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


class _Catalogue:
    """Every analyte, accepted unit and reference range (one query), as of catalogue ``version``."""

    def __init__(self, version: int | None) -> None:
        self.version = version
        analyte, unit, ref = Analyte._meta.db_table, AnalyteUnit._meta.db_table, ReferenceRange._meta.db_table
        [(found,)] = _rows(
            f"SELECT json_build_object("
            f"'analytes', (SELECT coalesce(json_agg(json_build_array(id, code, kind, lloq, uloq, canonical_unit, "
            f"ctcae_term, qualitative_values)), '[]') FROM {analyte}), "
            f"'units', (SELECT coalesce(json_agg(json_build_array(analyte_id, unit, factor)), '[]') FROM {unit}), "
            f"'ranges', (SELECT coalesce(json_agg(json_build_array(r.analyte_id, r.sex, r.age_min_years, "
            f"r.age_max_years, r.low, r.high) ORDER BY r.analyte_id, r.sex, r.age_min_years), '[]') "
            f"FROM {ref} r))", [])
        self.analytes = {
            row[1]: Analyte(id=row[0], code=row[1], kind=row[2], lloq=row[3], uloq=row[4], canonical_unit=row[5],
                            ctcae_term=row[6], qualitative_values=row[7] or [])
            for row in found["analytes"]}
        self.units: dict[int, dict[str, float]] = {}
        self.known_units: set[str] = set()
        for analyte_id, unit_text, factor in found["units"]:
            self.known_units.add(unit_text)
            self.units.setdefault(analyte_id, {})[unit_text] = factor
        self.ranges: dict[int, list[tuple[str, int, int, float | None, float | None]]] = {}
        for r in found["ranges"]:
            self.ranges.setdefault(r[0], []).append(tuple(r[1:]))
        self._measures: dict[tuple[str, str], _Measure | None] = {}

    def range_for(self, analyte_id: int, sex: str, age: int | None) -> tuple[float | None, float | None]:
        return pick_range(self.ranges.get(analyte_id, ()), sex, age)

    def measure(self, code: str, unit: str) -> _Measure | None:
        """The analyte ``code`` as sent with ``unit`` (None: no such analyte), worked out once per pair for
        as long as this catalogue is current: a change to the catalogue makes a new _Catalogue, so nothing
        kept here outlives it. A batch sends few pairs (an analyte comes in one or two units)."""
        key = (code, unit)
        found = self._measures.get(key, _MISSING)
        if found is _MISSING:
            if len(self._measures) >= MEASURE_CACHE_SIZE:
                self._measures.clear()
            analyte = self.analytes.get(code)
            found = self._measures[key] = None if analyte is None else _Measure(
                analyte, analyte.kind == _NUMERIC, self.units.get(analyte.id, {}).get(unit), unit in self.known_units,
                frozenset(v.lower() for v in analyte.qualitative_values))
        return found


_MISSING: Any = object()
MEASURE_CACHE_SIZE = 10_000
_NUMERIC, _QUALITATIVE = Analyte.Kind.NUMERIC.value, Analyte.Kind.QUALITATIVE.value


@dataclass(frozen=True, slots=True)
class _Measure:
    """What the catalogue says of an analyte sent with a unit: the analyte, whether it is numeric, the factor
    from the unit to its canonical unit (None: the unit does not convert to it), whether the unit is in the
    catalogue at all, and the analyte's accepted texts in lower case."""

    analyte: Analyte
    numeric: bool
    factor: float | None
    known_unit: bool
    accepted: frozenset[str]


_cached_catalogue: _Catalogue | None = None


def _catalogue(version: int | None) -> _Catalogue:
    """The catalogue, kept per process and reloaded when its version row (CatalogueVersion, set by a
    trigger on every change to the catalogue's tables) says it changed since. Without the row (a
    database emptied by TRUNCATE, as tests do) nothing is kept: every batch reads the catalogue."""
    global _cached_catalogue
    if version is None:
        return _Catalogue(None)
    cached = _cached_catalogue
    if cached is None or cached.version != version:
        cached = _cached_catalogue = _Catalogue(version)
    return cached


def _scope_sql(user: AbstractBaseUser) -> tuple[str, list[Any]]:
    """SQL condition on subject ``s`` for the sites where ``user`` enters data (access_of's rule)."""
    access = access_of(user)
    if access.is_superuser:
        return "TRUE", []
    pairs = [key for key, held in access.site_roles.items() if held & ENTRY_ROLES]
    wide = [trial_id for trial_id, held in access.trial_roles.items() if held & ENTRY_ROLES]
    return ("((s.trial_id, s.site_id) IN (SELECT * FROM unnest(%s::bigint[], %s::bigint[])) "
            "OR s.trial_id = ANY(%s::bigint[]))", [[t for t, _s in pairs], [s for _t, s in pairs], wide])


@dataclass
class _Found:
    """What the request's one read finds, before any transaction: the catalogue's version; the caller's
    subjects by code, with the locks refusing their data; the current results of the batch's references
    by (site, source_ref); the existing draws of its accession numbers; the visits of the subjects' trials."""

    version: int | None
    facts: dict[str, _SubjectFacts]
    locks: dict[int, tuple[str, str]]
    results: dict[tuple[int, str], tuple]
    draws: list[tuple]
    visits: dict[int, list[VisitWindow]]


def _keys_by_subject(rows: Sequence[ResultIn], *, with_refs: bool = True,
                     ) -> tuple[set[str], dict[str, set[str]], dict[str, set[str]]]:
    """The batch's subject codes, and each one's source references (none unless ``with_refs``) and accession
    numbers (NUL: refused per row)."""
    refs: dict[str, set[str]] = {}
    accessions: dict[str, set[str]] = {}
    for row in rows:
        if "\x00" in row.subject or "\x00" in row.source_ref or "\x00" in row.accession_number:
            continue
        if with_refs:
            refs.setdefault(row.subject, set()).add(row.source_ref)
        accessions.setdefault(row.subject, set()).add(row.accession_number)
    return {row.subject for row in rows if "\x00" not in row.subject}, refs, accessions


def _read_sql(user: AbstractBaseUser, *, results: bool = True) -> tuple[str, list[Any]]:
    """One SELECT: a row of the catalogue's version, joined to the caller's subjects of the batch, each with
    consent, withdrawal, death, day 0s, the refusing lock, its current results and draws of the batch (JSON,
    by the references and accession numbers sent for that subject code) and, once per trial, the visits.
    The current results join the references sent rather than test ``source_ref = ANY(...)``: where the planner
    scans the results (a new or small table) that compared each row with every reference sent (15 ms instead
    of 6 for a batch of 1,000 against 500 stored rows). Without ``results`` the current results are not looked
    up (an empty list; no parameter of references)."""
    scope, scope_params = _scope_sql(user)
    lock, lock_params = blocking_lock_sql("s")
    consent, follow_up, visit = Consent._meta.db_table, FollowUp._meta.db_table, Visit._meta.db_table
    sent = "ARRAY(SELECT jsonb_array_elements_text(%s::jsonb -> s.code))"
    current = (f"(SELECT coalesce(json_agg(json_build_array(r.id, r.source_ref, a.code, r.value_text, r.unit_text, "
               f"d.accession_number, r.status)), '[]') FROM jsonb_array_elements_text(%s::jsonb -> s.code) "
               f"AS sent(ref) JOIN {Result._meta.db_table} r ON r.source_ref = sent.ref "
               f"JOIN {Analyte._meta.db_table} a ON a.id = r.analyte_id "
               f"JOIN {LabDraw._meta.db_table} d ON d.id = r.draw_id WHERE r.site_id = s.site_id AND NOT r.superseded)"
               if results else "'[]'::json")
    sql = (
        f"SELECT v.version, v.draws, f.* FROM (SELECT max(version) AS version, (SELECT c.reltuples FROM pg_class c "
        f"WHERE c.oid = '{LabDraw._meta.db_table}'::regclass) AS draws FROM {CatalogueVersion._meta.db_table}) v "
        f"LEFT JOIN (SELECT s.code, s.id, s.site_id, s.trial_id, site.time_zone, s.sex, s.age_at_consent, "
        f"(SELECT min(c.consented_on) FROM {consent} c WHERE c.subject_id = s.id), "
        f"(SELECT min(c.withdrawn_on) FROM {consent} c WHERE c.subject_id = s.id), "
        f"(SELECT min(fu.event_on) FROM {follow_up} fu WHERE fu.subject_id = s.id AND fu.kind = %s), "
        f"{day0s_sql('s.id')}, {lock}, {current}, "
        f"(SELECT coalesce(json_agg(json_build_array(d.id, d.accession_number, d.subject_id, d.specimen, "
        f"d.collected_at)), '[]') FROM {LabDraw._meta.db_table} d "
        f"WHERE d.site_id = s.site_id AND d.accession_number = ANY({sent})), "
        f"CASE WHEN row_number() OVER (PARTITION BY s.trial_id ORDER BY s.id) = 1 THEN (SELECT coalesce(json_agg("
        f"json_build_array(w.id, w.code, w.target_day, w.window_before_days, w.window_after_days)), '[]') "
        f"FROM {visit} w WHERE w.trial_id = s.trial_id) END "
        f"FROM {Subject._meta.db_table} s JOIN {Site._meta.db_table} site ON site.id = s.site_id "
        f"WHERE s.code = ANY(%s) AND {scope}) f ON TRUE")
    return sql, [FollowUp.Kind.DEATH.value, *lock_params, *scope_params]


# A batch's read without current results is prepared, its plan made once per connection (CONN_MAX_AGE), only while
# the draws table's row estimate (pg_class.reltuples, as the last read saw it) is at least this: a generic plan made
# while the table is nearly empty scans it (or its site's draws) whole, and keeps doing so as the table grows
# until the plan is remade (48 ms a subject at 150,000 draws, against an index lookup); from a few thousand
# draws on the plan looks them up by the unique (site, accession number) index.
PREPARED_BATCH_MIN_DRAWS = 5_000
_draws_estimate = -1.0


def _read(user: AbstractBaseUser, rows: Sequence[ResultIn], *, results: bool = True) -> _Found:
    """Everything the checks need, in one round trip outside any transaction (READ COMMITTED: each
    statement sees what is committed when it starts, as it would inside one; nothing here is locked).
    Without ``results`` the current results of the batch's references are not looked up (``_stream``)."""
    codes, refs, accessions = _keys_by_subject(rows, with_refs=results)
    sql, (death, *params) = _read_sql(user, results=results)
    lock_params, scope_params = params[:2], params[2:]
    sent = [json.dumps({c: sorted(v) for c, v in refs.items()})] if results else []
    # A small post's read is prepared with a generic plan (config.db): planning this statement costs more than
    # running it (a batch of 1,000: 2.7 ms against 0.8). So is a batch's read without current results once the
    # draws are many (``PREPARED_BATCH_MIN_DRAWS``). A batch's lookup of current results is planned for its
    # references instead (the plan depends on how many).
    global _draws_estimate
    many_draws = _draws_estimate >= PREPARED_BATCH_MIN_DRAWS
    read = prepared_rows if len(rows) <= INSERT_MAX_ROWS or (not results and many_draws) else _rows
    found = read(sql, [death, *lock_params, *sent, json.dumps({c: sorted(v) for c, v in accessions.items()}),
                       list(codes), *scope_params])
    result = _Found(found[0][0], {}, {}, {}, [], {})
    _draws_estimate = found[0][1]
    duplicates: set[str] = set()
    chosen: dict[int, int] = {}
    for (_v, _d, code, pk, site_id, trial_id, tz, sex, age, consent, withdrawn, death_on, day0s, lock_id, results,
         draws, visits) in found:
        if code is None:
            continue  # no subject found: the version's row alone
        if visits is not None:
            result.visits[trial_id] = [VisitWindow(*w) for w in _json(visits)]
        if code in result.facts:
            duplicates.add(code)  # the same code in two of the caller's trials: refuse rather than guess
        result.facts[code] = _SubjectFacts(pk, site_id, trial_id, _zone(tz), sex, age, consent, withdrawn, death_on,
                                           Timeline.of(day0s))
        if lock_id is not None:
            chosen[pk] = lock_id
        for r in _json(results):  # (id, site, source_ref, analyte code, value, unit, accession, status)
            result.results[(site_id, r[1])] = (r[0], site_id, *r[1:])
        result.draws.extend((d[0], site_id, d[1], d[2], d[3], dt.datetime.fromisoformat(d[4])) for d in _json(draws))
    for code in duplicates:
        del result.facts[code]
    kept = {f.id for f in result.facts.values()}
    result.locks = lock_refusals({pk: lock_id for pk, lock_id in chosen.items() if pk in kept})
    return result


_ZONES: dict[str, Any] = {}


def _zone(name: str) -> Any:
    if name not in _ZONES:
        import zoneinfo

        _ZONES[name] = zoneinfo.ZoneInfo(name)
    return _ZONES[name]


def _parse_value(measure: _Measure, text: str) -> tuple[float | None, str, str]:
    """(normalised value, censor mark, error) for a value as sent."""
    analyte, factor = measure.analyte, measure.factor if measure.numeric else None
    if analyte.kind == _QUALITATIVE:
        return (None, "", "") if text.strip().lower() in measure.accepted else (
            None, "", f"Expected one of: {', '.join(analyte.qualitative_values)}.")
    if measure.accepted and text.strip().lower() in measure.accepted:
        return None, "", ""  # e.g. MRD "not detected": kept as sent, no number
    censor = ""
    match = CENSORED.match(text) if "<" in text or ">" in text else None  # the pattern needs one of them
    if match:
        censor, number = match.group(1), match.group(2).upper()
        if number in ("LLOQ", "ULOQ"):
            bound = analyte.lloq if number == "LLOQ" else analyte.uloq
            return (bound, censor, "") if bound is not None else (None, censor, "")
        text = number
    if not NUMBER.match(text):
        return None, "", "Not a number (send a number, '<LLOQ', '>ULOQ' or e.g. '<0.5')."
    number_value = float(text) * (factor or 1.0)
    if not math.isfinite(number_value):
        return None, "", "Not a finite number (in the analyte's unit)."
    if number_value < 0:
        return None, "", "A concentration or count is never negative."
    return number_value, censor, ""


class _Batch:
    """Validates a batch against the looked-up facts, collecting every row's errors."""

    def __init__(self, rows: Sequence[ResultIn], user: AbstractBaseUser, *, texts_checked: bool = False) -> None:
        self.rows, self.user, self.texts_checked = rows, user, texts_checked
        self.errors: list[dict[str, Any]] = []
        self.conflicts: list[dict[str, Any]] = []
        self.now = timezone.now()
        self._local_dates: dict[tuple[Any, dt.datetime], dt.date | None] = {}
        # (subject id, collection time, its year) that passed every check of the time (_check_row): the rows
        # of a draw share them, so the checks run once per draw. The year as written is in the key: the one
        # check that two writings of the same instant (other UTC offsets) can fail differently. Once the draws
        # are planned before the checks (``draws_planned``, a streamed batch: every row's time agrees with its
        # draw's, each was checked as written by ``_may_stream``), the key is (subject id, accession number),
        # which costs less to look up than an aware time.
        self.timely: set[tuple[Any, ...]] = set()
        self.draws_planned = False

    def local_date(self, at: dt.datetime, tz: Any) -> dt.date | None:
        """The site's local date of a collection time: the rows of one draw share it, so it is computed once."""
        key = (tz, at)
        found = self._local_dates.get(key)
        if found is None:
            found = self._local_dates[key] = local_date(at, tz)
        return found

    def error(self, index: int, field_name: str, code: str, message: str, *, conflict: bool = False) -> None:
        entry = {"index": index, "field": f"results[{index}].{field_name}", "code": code, "message": message}
        (self.conflicts if conflict else self.errors).append(entry)


_TEXTS = attrgetter(*TEXT_FIELDS)
_LIMITS = tuple(MAX_LENGTHS.get(name, 1 << 62) for name in TEXT_FIELDS)


def _texts_fit(row: ResultIn) -> bool:
    """Whether every text of the row fits its column and holds no NUL character: one test of all its texts (in
    C: no Python frame per text)."""
    texts = _TEXTS(row)
    return "\x00" not in "".join(texts) and all(map(le, map(len, texts), _LIMITS))


def _check_text(batch: _Batch, i: int, row: ResultIn) -> bool:
    """Every text fits its column and holds no NUL character (PostgreSQL refuses both: a 500, not a 400)."""
    if _texts_fit(row):
        return True  # the usual row
    ok = True
    for name in TEXT_FIELDS:
        text = getattr(row, name)
        if "\x00" in text:
            batch.error(i, name, "null_character", "Null characters are not allowed.")
            ok = False
        elif name in MAX_LENGTHS and len(text) > MAX_LENGTHS[name]:
            batch.error(i, name, "too_long", f"At most {MAX_LENGTHS[name]} characters.")
            ok = False
    return ok


def _check_row(batch: _Batch, i: int, row: ResultIn, subject: _SubjectFacts | None, catalogue: _Catalogue) -> tuple:
    """Returns (analyte, normalised value, censor) or () when the row is refused."""
    ok = True
    if subject is None:
        batch.error(i, "subject", "unknown_subject", f"No subject {row.subject} in your sites.")
        ok = False
    measure = catalogue.measure(row.analyte, row.unit)
    if measure is None:
        batch.error(i, "analyte", "unknown_analyte", f"Unknown analyte {row.analyte}.")
        return ()
    if row.specimen not in SPECIMENS:
        batch.error(i, "specimen", "unknown_specimen", f"Specimen is one of {', '.join(sorted(SPECIMENS))}.")
        ok = False
    if row.status not in STATUSES:
        batch.error(i, "status", "unknown_status", f"Status is one of {', '.join(sorted(STATUSES))}.")
        ok = False
    at = row.collected_at
    # Whether the time passed its checks for another row (``batch.timely``): keyed by the time as written, or, once
    # the batch's draws are planned, by its draw, whose rows all have its time (``_stream``).
    timely_key = None if subject is None else (
        (subject.id, row.accession_number) if batch.draws_planned else (subject.id, at, at.year))
    timely = timely_key in batch.timely
    if timely:
        pass
    elif at.tzinfo is None:
        batch.error(i, "collected_at", "naive_time", "Give the collection time with its UTC offset.")
        return ()
    elif at.year < EARLIEST:
        batch.error(i, "collected_at", "time_out_of_range", f"The collection time is before {EARLIEST}.")
        return ()
    elif at > batch.now:
        batch.error(i, "collected_at", "time_in_future", "The collection time is in the future.")
        ok = False
    analyte, factor = measure.analyte, measure.factor if measure.numeric else None
    if measure.numeric and factor is None and not row.unit.strip():
        batch.error(i, "unit", "unit_required", f"Give the unit of the {analyte.code} value "
                    f"(e.g. {analyte.canonical_unit}).")
        ok = False
    elif measure.numeric and factor is None:
        known = measure.known_unit
        batch.error(i, "unit", "unit_not_convertible" if known else "unknown_unit",
                    f"{row.unit or 'No unit'} does not convert to {analyte.canonical_unit} for {analyte.code}."
                    if known else f"Unknown unit {row.unit!r} for {analyte.code}.")
        ok = False
    value, censor, problem = _parse_value(measure, row.value)
    if problem:
        batch.error(i, "value", "invalid_value", problem)
        ok = False
    if subject is not None and timely_key is not None and ok and not timely:
        ok = _check_timeline(batch, i, row, subject)
        if ok:
            batch.timely.add(timely_key)
    return (analyte, value, censor) if ok else ()


def _check_timeline(batch: _Batch, i: int, row: ResultIn, subject: _SubjectFacts) -> bool:
    local = batch.local_date(row.collected_at, subject.tz)
    assert local is not None  # a time always has a date
    if subject.first_consent is None or local < subject.first_consent:
        batch.error(i, "collected_at", "before_consent", f"{row.subject} had not consented by {local:%d %b %Y}.")
        return False
    if subject.withdrawn is not None and local > subject.withdrawn:
        batch.error(i, "collected_at", "after_withdrawal", f"{row.subject} withdrew consent on "
                    f"{subject.withdrawn:%d %b %Y}.")
        return False
    if subject.death is not None and local > subject.death:
        batch.error(i, "collected_at", "after_death", f"{row.subject} died on {subject.death:%d %b %Y}.")
        return False
    return True


def _draws(batch: _Batch, found: _Found, valid: Iterable[int]) -> _DrawPlan:
    """The batch's lab draws by (site, accession): the existing ones (``found.draws``) and the new ones to
    insert (with their visit), checking that a draw's subject, specimen and time agree everywhere."""
    facts = found.facts
    wanted: dict[tuple[int, str], tuple[int, ResultIn]] = {}
    rows = batch.rows
    for i in valid:
        row = rows[i]
        first_i, first = wanted.setdefault((facts[row.subject].site_id, row.accession_number), (i, row))
        if first is not row and (first.subject != row.subject or first.specimen != row.specimen
                                 or first.collected_at != row.collected_at):
            batch.error(i, "accession_number", "accession_mismatch", f"Accession {row.accession_number} is given "
                        f"another subject, specimen or time at index {first_i}.")
    existing: dict[tuple[int, str], int] = {}
    for pk, site_id, accession, subject_id, specimen, at in found.draws:
        if (site_id, accession) not in wanted:
            continue  # the draw of a row that stores nothing (an identical repost)
        existing[(site_id, accession)] = pk
        i, row = wanted[(site_id, accession)]
        if subject_id != facts[row.subject].id or specimen != row.specimen or at != row.collected_at:
            batch.error(i, "accession_number", "accession_mismatch", f"Accession {accession} is already a draw "
                        "of another subject, specimen or time.")
    new = []
    for (site_id, accession), (_i, row) in wanted.items():
        if (site_id, accession) in existing:
            continue
        subject = facts[row.subject]
        matched = match_visit(subject.timeline, found.visits.get(subject.trial_id, []),
                              batch.local_date(row.collected_at, subject.tz))
        new.append((subject.id, site_id, accession, row.specimen, row.collected_at,
                    matched[0].visit_id if matched else None))
    return _DrawPlan(existing, new)


@dataclass
class _DrawPlan:
    ids: dict[tuple[int, str], int]  # existing draws by (site, accession); new ones are added once inserted
    new: list[tuple]  # (subject, site, accession, specimen, collected_at, visit) of the draws to insert


def _find_draws(keys: list[tuple[int, str]]) -> list[tuple]:
    return _rows(f"SELECT d.id, d.site_id, d.accession_number, d.subject_id, d.specimen, d.collected_at "
                 f"FROM {LabDraw._meta.db_table} d JOIN unnest(%s::bigint[], %s::text[]) AS k(site_id, acc) "
                 f"ON d.site_id = k.site_id AND d.accession_number = k.acc",
                 [[k[0] for k in keys], [k[1] for k in keys]])


def _insert_draws(new: list[tuple], user_id: int) -> dict[tuple[int, str], int]:
    """Insert the batch's new draws in one statement; a draw a concurrent batch inserted first is
    looked up instead (ON CONFLICT DO NOTHING returns only the rows this statement wrote)."""
    columns = list(zip(*new, strict=True))
    inserted = _rows(
        f"INSERT INTO {LabDraw._meta.db_table} (created_at, updated_at, subject_id, site_id, accession_number, "
        f"specimen, collected_at, visit_id, recorded_by_id) "
        f"SELECT now(), now(), k.* , %s FROM unnest(%s::bigint[], %s::bigint[], %s::text[], %s::text[], "
        f"%s::timestamptz[], %s::bigint[]) AS k ON CONFLICT DO NOTHING RETURNING id, site_id, accession_number",
        [user_id, *[list(c) for c in columns]])
    found = {(site_id, accession): pk for pk, site_id, accession in inserted}
    missing = [(row[1], row[2]) for row in new if (row[1], row[2]) not in found]
    if missing:
        wanted = {(row[1], row[2]): row for row in new}
        for pk, site_id, accession, subject_id, specimen, at in _find_draws(missing):
            sent_subject, _site, _acc, sent_specimen, sent_at, _visit = wanted[(site_id, accession)]
            if (sent_subject, sent_specimen, sent_at) != (subject_id, specimen, at):
                # A concurrent batch wrote this accession for another draw: start again, and be refused.
                raise IntegrityError(f"Accession {accession} was written concurrently for another draw.")
            found[(site_id, accession)] = pk
    return found


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str | bytes) else value


def _compare(batch: _Batch, i: int, row: ResultIn, current: tuple) -> str:
    """'same', 'correct' or '' (refused) for a reference that already has a current result."""
    same = (current[3], current[4], current[5], current[6], current[7]) == (
        row.analyte, row.value, row.unit, row.accession_number, row.status)
    if same:
        return "same"
    if row.correction_reason.strip():
        return "correct"
    batch.error(i, "source_ref", "conflicting_result", f"{row.source_ref} was already sent with value "
                f"{current[4]} {current[5]}; send a correction with a reason to change it.", conflict=True)
    return ""


@dataclass
class _Plan:
    """What a valid batch writes: its valid rows ({index: (analyte, value, censor)}) and what each one meets
    ({index: 'same' or 'correct'}; absent: a new reference), the ids of the results they supersede, the draws,
    how many rows are written and how many were reposts. The rows themselves are made by ``_records`` as they
    are written, so a COPY's server work overlaps their making (``_copy``)."""

    valid: dict[int, tuple] = field(default_factory=dict)
    actions: dict[int, str] = field(default_factory=dict)
    superseded: list[int] = field(default_factory=list)
    draws: _DrawPlan = field(default_factory=lambda: _DrawPlan({}, []))
    written: int = 0
    unchanged: int = 0


def _checked(batch: _Batch, found: _Found, catalogue: _Catalogue) -> Iterator[tuple[int, _SubjectFacts, tuple]]:
    """Every row's own checks, in the batch's order: each row that passes them as (index, subject,
    (analyte, value, censor)); a row that fails them adds its refusals to ``batch`` and is not yielded."""
    seen: dict[str, int] = {}
    facts, locks, texts_checked = found.facts, found.locks, batch.texts_checked
    for i, row in enumerate(batch.rows):
        if row.source_ref in seen:
            batch.error(i, "source_ref", "duplicate_in_batch", f"{row.source_ref} also appears at index "
                        f"{seen[row.source_ref]}.")
            continue
        seen[row.source_ref] = i
        if not texts_checked and not _check_text(batch, i, row):
            continue
        subject = facts.get(row.subject)
        checked = _check_row(batch, i, row, subject, catalogue)
        if subject is not None and subject.id in locks:  # frozen or locked: the row is refused (409)
            code, message = locks[subject.id]
            batch.error(i, "subject", code, message, conflict=True)
        elif checked and subject is not None:  # a row passes its checks only with its subject found
            yield i, subject, checked


def _validate(batch: _Batch, found: _Found, catalogue: _Catalogue) -> dict[int, tuple]:
    """Every row's own checks; returns {index: (analyte, value, censor)} of the rows that pass them."""
    return {i: checked for i, _subject, checked in _checked(batch, found, catalogue)}


def _build(batch: _Batch, found: _Found, catalogue: _Catalogue) -> _Plan:
    valid = _validate(batch, found, catalogue)
    facts, existing = found.facts, found.results
    plan: dict[int, str] = {}
    # Only a batch that meets current results or sends a reason has anything to compare (a new batch: neither).
    if existing or any(map(_REASON, batch.rows)):
        for i in valid:
            row = batch.rows[i]
            current = existing.get((facts[row.subject].site_id, row.source_ref))
            if current is not None:
                plan[i] = _compare(batch, i, row, current)
            elif row.correction_reason.strip():
                batch.error(i, "correction_reason", "nothing_to_correct", f"{row.source_ref} has no earlier result.")
    if batch.errors or batch.conflicts:
        return _Plan()
    draws = _draws(batch, found, [i for i in valid if plan.get(i) != "same"] if plan else valid)
    if batch.errors:
        return _Plan()
    unchanged = sum(1 for action in plan.values() if action == "same")
    superseded = [existing[(facts[batch.rows[i].subject].site_id, batch.rows[i].source_ref)][0]
                  for i, action in plan.items() if action == "correct"]
    return _Plan(valid, plan, superseded, draws, len(valid) - unchanged, unchanged)


def _records(batch: _Batch, found: _Found, catalogue: _Catalogue, plan: _Plan) -> Iterator[tuple]:
    """The rows a valid batch writes, in its order, each with its draw's key (site, accession) first (the
    draw's id once known): flag and grade, the status, the recording user. Made one at a time as the write
    consumes them."""
    facts, actions = found.facts, plan.actions
    user_id, interpret, rows = batch.user.pk, _Interpreter(catalogue), batch.rows
    for i, (analyte, value, censor) in plan.valid.items():
        action = actions.get(i)
        if action == "same":
            continue
        row = rows[i]
        subject = facts[row.subject]
        site_id = subject.site_id
        flag, grade = interpret(analyte, value, subject)
        number = None if value is None else float(value)  # a bound from the catalogue may be an int
        yield ((site_id, row.accession_number), subject.id, site_id, analyte.id, row.source_ref, row.value,
               row.unit, number, censor, flag, grade, _CORRECTED if action == "correct" else row.status, False,
               row.correction_reason, user_id)


_CORRECTED = Result.Status.CORRECTED.value
_REASON = attrgetter("correction_reason")


class _Interpreter:
    """Reference-range flag and CTCAE lab grade of normalised values. A range, and the grader of the analyte's
    term against it (``lab_grader``: its bounds worked out once), is picked once per (analyte, sex, age)."""

    def __init__(self, catalogue: _Catalogue) -> None:
        self.catalogue = catalogue
        self.ranges: dict[tuple[int, str, int | None], tuple[float | None, float | None, Any]] = {}

    def __call__(self, analyte: Analyte, value: float | None, subject: _SubjectFacts) -> tuple[str, int | None]:
        if value is None:
            return "", None
        key = (analyte.id, subject.sex, subject.age)
        limits = self.ranges.get(key)
        if limits is None:
            low, high = self.catalogue.range_for(analyte.id, subject.sex, subject.age)
            term = analyte.ctcae_term
            limits = self.ranges[key] = (low, high, lab_grader(term=term, lln=low, uln=high) if term else None)
        low, high, grader = limits
        flag = "L" if low is not None and value < low else "H" if high is not None and value > high else (
            "N" if low is not None or high is not None else "")
        return flag, None if grader is None else grader(value)


# Up to this many rows go in one INSERT (one round trip; a single post's whole write when its draw exists);
# larger batches go by COPY, whose set-up costs a round trip more but whose rows cost less.
INSERT_MAX_ROWS = 50
_TYPES = {"draw_id": "bigint", "subject_id": "bigint", "site_id": "bigint", "analyte_id": "bigint",
          "value": "float8", "ctcae_grade": "int", "superseded": "boolean", "recorded_by_id": "bigint"}


def _insert(records: Iterable[tuple], ids: dict[tuple[int, str], int]) -> None:
    """INSERT the rows in one statement, each with this transaction's time and the request's audit context
    (attached by the statement: pghistory sets the context on every statement that is not a SELECT)."""
    records = _with_draw_ids(records, ids)
    columns = RESULT_COLUMNS[:-2]  # recorded_at and audit_context_id come from the statement
    arrays = ", ".join(f"%s::{_TYPES.get(c, 'text')}[]" for c in columns)
    with connection.cursor() as cursor:
        cursor.execute(f"WITH context AS (SELECT _pgh_attach_context() AS id) "
                       f"INSERT INTO {Result._meta.db_table} ({', '.join(RESULT_COLUMNS)}) "
                       f"SELECT k.*, now(), (SELECT id FROM context) FROM unnest({arrays}) AS k",
                       [list(c) for c in zip(*records, strict=True)])


_COPY_NULL = "\\N"
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def _copy_line(head: str, analyte: int, ref: str, sent: str, unit: str, value: float | None, censor: str, flag: str,
               grade: int | None, status: str, superseded: bool, reason: str, tail: str) -> str:
    """One row in COPY's text format, in RESULT_COLUMNS' order: ``head`` its draw, subject and site
    (``_copy_head``), ``tail`` its recording user, time and audit context and the newline (``_copy_tail``).
    The texts that come from the request have their backslashes, tabs, newlines and carriage returns escaped
    (a NUL never gets here: it is refused row by row; the censor mark and the flag are the service's own), NULL
    is backslash-N, and ids and grades must be integers (``:d`` refuses anything else), so no value can end its
    field or row early. About 2.5 times faster than psycopg's write_row, which adapts every value by its type."""
    texts = "\x00".join((ref, sent, unit, status, reason))
    if "\\" in texts or "\t" in texts or "\n" in texts or "\r" in texts:
        ref, sent, unit, status, reason = (text.translate(_COPY_ESCAPES) for text in (ref, sent, unit, status, reason))
    number = _COPY_NULL if value is None else repr(float(value))
    graded = _COPY_NULL if grade is None else f"{grade:d}"
    return (f"{head}{analyte:d}\t{ref}\t{sent}\t{unit}\t{number}\t{censor}\t{flag}\t{graded}\t{status}\t"
            f"{'t' if superseded else 'f'}\t{reason}{tail}")


def _copy_head(draw: int, subject: int, site: int) -> str:
    """The first fields of a COPY line: the row's draw, subject and site (the same for every row of a draw)."""
    return f"{draw:d}\t{subject:d}\t{site:d}\t"


def _copy_tail(user: int, recorded_at: dt.datetime, context_id: Any) -> str:
    """The last fields of a COPY line and its newline: the recording user, time and audit context."""
    context = _COPY_NULL if context_id is None else str(context_id)  # a UUID: hexadecimal digits and hyphens
    return f"\t{user:d}\t{recorded_at.isoformat()}\t{context}\n"


def _copy_texts(records: Iterable[tuple], ids: dict[tuple[int, str], int], recorded_at: dt.datetime,
                context_id: Any) -> Iterator[str]:
    """The rows (``_records``) in COPY's text format, ``COPY_CHUNK_ROWS`` rows to a text (the last one may
    hold fewer)."""
    chunk: list[str] = []
    append = chunk.append
    tails: dict[int, str] = {}
    for (key, subject, site, analyte, ref, sent, unit, value, censor, flag, grade, status, superseded, reason,
         user) in records:
        tail = tails.get(user) or tails.setdefault(user, _copy_tail(user, recorded_at, context_id))
        append(_copy_line(_copy_head(ids[key], subject, site), analyte, ref, sent, unit, value, censor, flag, grade,
                          status, superseded, reason, tail))
        if len(chunk) == COPY_CHUNK_ROWS:
            yield "".join(chunk)
            chunk.clear()
    if chunk:
        yield "".join(chunk)


# The COPY's rows are made and sent this many at a time (about 30 kB of text): the server parses, checks and
# indexes each chunk while the next one's flags, grades and text are made, instead of waiting for them all.
COPY_CHUNK_ROWS = 200


def _copy(records: Iterable[tuple], ids: dict[tuple[int, str], int]) -> None:
    """COPY the rows (``_records``), each with this transaction's time and the request's audit context."""
    _copy_with(lambda recorded_at, context_id: _copy_texts(records, ids, recorded_at, context_id))


def _copy_with(texts: Callable[[dt.datetime, Any], Iterable[str]]) -> None:
    """COPY the texts ``texts(recorded_at, context_id)`` makes (rows in COPY's text format, see ``_copy_line``),
    with this transaction's time and the request's audit context (attached first by a statement of its own:
    COPY is not a statement pghistory sees). The rows are made as they are sent, a chunk at a time; a row that
    cannot be made (an error in the making) ends the COPY with that error, and the transaction is rolled back
    as for any other."""
    [(context_id, now)] = _rows("WITH attached AS (SELECT _pgh_attach_context() AS id) "
                                "SELECT (SELECT id FROM attached), now()", [])
    # The raw psycopg cursor bypasses Django's error wrapping: without wrap_database_errors a lost race
    # surfaces as psycopg's UniqueViolation, which ingest_results' IntegrityError retry never catches (500).
    with connection.cursor() as cursor, connection.wrap_database_errors:
        with cursor.cursor.copy(f"COPY {Result._meta.db_table} ({', '.join(RESULT_COLUMNS)}) FROM STDIN") as copy:
            for text in texts(now, context_id):
                copy.write(text)


def _write(batch: _Batch, plan: _Plan, records: Iterable[tuple]) -> None:
    """Store a valid batch (``records``: its rows, see ``_records``). A write of one statement (the draws
    exist, nothing is superseded, few rows) is its own transaction: no BEGIN and COMMIT round trips.
    Anything more runs in one transaction."""
    if (plan.draws.new or plan.superseded or plan.written > INSERT_MAX_ROWS
            or connection.in_atomic_block):
        with transaction.atomic():
            _write_all(batch, plan, records)
    elif plan.written:
        _insert(records, plan.draws.ids)


def _write_all(batch: _Batch, plan: _Plan, records: Iterable[tuple]) -> None:
    ids = plan.draws.ids
    if plan.draws.new:
        ids = {**ids, **_insert_draws(plan.draws.new, batch.user.pk)}
    store = _insert if plan.written <= INSERT_MAX_ROWS else _copy
    if plan.superseded:
        # The corrections' reasons go into the audit context too (each new row also keeps its own).
        reasons = sorted({row.correction_reason.strip() for row in batch.rows if row.correction_reason.strip()})
        with pghistory.context(reason="; ".join(reasons)[:1000], action="correct_results"):
            Result.objects.filter(pk__in=plan.superseded).update(superseded=True)
            store(records, ids)
    elif plan.written:
        store(records, ids)


def _with_draw_ids(records: Iterable[tuple], ids: dict[tuple[int, str], int]) -> list[tuple]:
    return [(ids[record[0]], *record[1:]) for record in records]


def ingest_results(*, rows: Sequence[ResultIn], by: User, texts_checked: bool = False) -> IngestOutcome:
    """Store a batch all-or-nothing. A batch that loses a race with a concurrent one (the same draw or
    reference inserted first) is validated and written again, up to three attempts in all. With
    ``texts_checked`` the caller vouches that every text fits its column and holds no NUL character (the API's
    decoder checks both); otherwise each row's texts are checked here (``_check_text``)."""
    if not access_of(by).enters_any:  # monitors, data managers: 403, not "unknown subject" per row
        raise PermissionRefused("not_permitted", "Your role does not allow entering laboratory results.")
    if len(rows) > MAX_BATCH:
        raise DomainError("batch_too_large", f"Send at most {MAX_BATCH} results per request.", field="results")
    for attempt in range(3):
        try:
            return _ingest_once(rows=rows, by=by, texts_checked=texts_checked)
        except IntegrityError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def _ingest_once(*, rows: Sequence[ResultIn], by: User, texts_checked: bool) -> IngestOutcome:
    """One read (no transaction), the checks in Python, then the write (see ``_write``). A large batch of
    new results is checked as it is written instead (``_stream``); if it has a row to refuse, it is checked
    again here the usual way, which finds the same refusals, all of them."""
    batch = _Batch(rows, by, texts_checked=texts_checked)
    # A large batch that sends no correction is read without its references' current results: the unique
    # index on current references finds any of them as the COPY writes it (see _stream).
    streamable = len(rows) > INSERT_MAX_ROWS and not any(map(_REASON, rows))
    found = _read(by, rows, results=not streamable)
    catalogue = _catalogue(found.version)
    if streamable:
        if _may_stream(batch, found):
            try:
                return _stream(batch, found, catalogue)
            except (_Refused, IntegrityError):
                batch = _Batch(rows, by, texts_checked=texts_checked)
        found = _read(by, rows)
    plan = _build(batch, found, catalogue)
    if batch.errors:
        raise BatchRejected(batch.errors + batch.conflicts)
    if batch.conflicts:
        raise BatchRejected(batch.conflicts, conflict=True)
    _write(batch, plan, _records(batch, found, catalogue, plan))
    corrected = len(plan.superseded)
    return IngestOutcome(created=plan.written - corrected, unchanged=plan.unchanged, corrected=corrected)


class _Refused(Exception):
    """A streamed batch met a row to refuse (its refusals are then found by the usual checks)."""


def _may_stream(batch: _Batch, found: _Found) -> bool:
    """Whether the batch can be checked as it is written: a COPY's worth of rows, none sending a correction,
    every text fitting its column, every subject found, and every collection time one whose draw can be planned
    before the rows are checked (aware, from EARLIEST on and not in the future: the checks refuse anything else,
    and a new draw's visit needs its local date)."""
    rows, facts, now = batch.rows, found.facts, batch.now
    if len(rows) <= INSERT_MAX_ROWS or found.results:
        return False
    if not batch.texts_checked:
        if not all(map(_texts_fit, rows)):
            return False  # the new draws are written before the rows are checked: their texts must fit first
        batch.texts_checked = True  # every text fits: the rows' checks need not test them again
    for row in rows:
        at = row.collected_at
        if row.correction_reason or row.subject not in facts or at.tzinfo is None or at.year < EARLIEST or at > now:
            return False
    return True


def _stream(batch: _Batch, found: _Found, catalogue: _Catalogue) -> IngestOutcome:
    """Write a batch of new results while checking them: plan the draws of every row (a mismatch: refused),
    then, in one transaction, insert the new draws and COPY the rows as they pass the checks, so the server
    writes each chunk while the next one is checked and made. The first refusal raises ``_Refused``, which
    ends the COPY and rolls the transaction back: nothing is stored. The batch's references were not looked
    up (``found`` has no current results): a reference that has a current result (a repost, a conflict) or
    any other key a concurrent batch wrote first breaks a unique index or the references' check, an
    IntegrityError that rolls everything back too. Either way the caller then reads the current results and
    checks the batch the usual way, which stores what it stores and refuses what it refuses."""
    draws = _draws(batch, found, range(len(batch.rows)))
    if batch.errors or batch.conflicts:
        raise _Refused
    batch.draws_planned = True
    with transaction.atomic():
        ids = draws.ids
        if draws.new:
            ids = {**ids, **_insert_draws(draws.new, batch.user.pk)}
        _copy_with(lambda recorded_at, context_id: _checked_texts(batch, found, catalogue, ids, recorded_at,
                                                                  context_id))
    return IngestOutcome(created=len(batch.rows))


def _checked_texts(batch: _Batch, found: _Found, catalogue: _Catalogue, ids: dict[tuple[int, str], int],
                   recorded_at: dt.datetime, context_id: Any) -> Iterator[str]:
    """The rows of a streamed batch as ``_records`` makes them, each once it has passed its checks, in COPY's
    text format as ``_copy_texts`` makes them (straight from the checks: no record per row),
    ``COPY_CHUNK_ROWS`` rows to a text; the first refusal raises ``_Refused``."""
    interpret, rows, errors, conflicts = _Interpreter(catalogue), batch.rows, batch.errors, batch.conflicts
    tail = _copy_tail(batch.user.pk, recorded_at, context_id)
    heads: dict[tuple[int, str], str] = {}
    chunk: list[str] = []
    append = chunk.append
    for i, subject, (analyte, value, censor) in _checked(batch, found, catalogue):
        if errors or conflicts:
            raise _Refused
        row = rows[i]
        site_id = subject.site_id
        key = (site_id, row.accession_number)
        head = heads.get(key)
        if head is None:  # the rows of a draw share their draw, subject and site (checked by _draws)
            head = heads[key] = _copy_head(ids[key], subject.id, site_id)
        flag, grade = interpret(analyte, value, subject)
        append(_copy_line(head, analyte.id, row.source_ref, row.value, row.unit, value, censor, flag, grade,
                          row.status, False, row.correction_reason, tail))
        if len(chunk) == COPY_CHUNK_ROWS:
            yield "".join(chunk)
            chunk.clear()
    if errors or conflicts:
        raise _Refused
    if chunk:
        yield "".join(chunk)
