"""The ``results`` and ``lab_draws`` forms of the CSV export (the two whose size grows with the results), written
by PostgreSQL: one ``COPY (SELECT ...) TO STDOUT (FORMAT csv)`` per form, whose rows are those of
``exports.crf.Form.rows`` for the form, formatted as ``exports.crf.text`` formats them, so each file is byte for
byte the one the generic path writes (tests/exports/test_crf_csv.py compares them).

What must agree with ``exports.crf``: the scope (the subject's trial, the scope's sites and selected subjects),
the order (subject code, collection time, record), the timeline (``patients.timeline``'s SQL form, on the
site's local date of the collection; the course from its set form, ``course_spans_sql``), and the text of each
value: an empty text is written as nothing (PostgreSQL would quote it), booleans as ``true``/``false``, times
in UTC with ``Z``, floats in Python's shortest form (``repr``: ``100.0``, not ``100``). PostgreSQL ends lines
with LF and sends one row per message; each is ended with CRLF as the csv module does.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from django.db import connection

from assays.models import Analyte, LabDraw, Result
from patients.models import Subject
from patients.timeline import (
    cdisc_study_day_sql,
    course_day_sql,
    course_span_join_sql,
    course_spans_sql,
    day0s_sql,
    local_date_sql,
    study_day_sql,
)
from trials.models import Site, Visit

if TYPE_CHECKING:
    from exports.scope import ExportScope

Block = bytes | bytearray | memoryview  # what psycopg's COPY gives
FORM_NAME = "results"
DRAWS_FORM_NAME = "lab_draws"
ROWS_PER_CHUNK = 1000


def _text(column: str) -> str:
    return f"NULLIF({column}, '')"


def _integer(column: str) -> str:
    return column  # PostgreSQL writes integers as Python does


def _boolean(column: str) -> str:
    return f"(CASE WHEN {column} THEN 'true' WHEN NOT {column} THEN 'false' END)"


def _utc(column: str) -> str:
    """As ``exports.crf._datetime``: ISO 8601 in UTC with ``Z``, microseconds only when there are some (one
    ``to_char`` with them, dropped when they are all zeros)."""
    return (f"replace(to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"'), "
            "'.000000Z', 'Z')")


def python_float_sql(column: str) -> str:
    """As Python's ``repr`` of a float. PostgreSQL's shortest form has the same digits but drops ``.0`` of a
    whole number and switches to an exponent from 1e15 (Python from 1e16); NaN and infinities are spelt apart.
    The common case, a finite number below 1e15 (NaN and infinities are not), is tested first."""
    digits = f"replace(split_part(abs({column})::text, 'e', 1), '.', '')"
    sign = f"CASE WHEN {column} < 0 THEN '-' ELSE '' END"
    return (f"(CASE WHEN abs({column}) < 1e15 THEN (CASE WHEN {column} = trunc({column}) THEN {column}::text || '.0' "
            f"ELSE {column}::text END) WHEN {column} = 'NaN' THEN 'nan' WHEN {column} = 'Infinity' THEN 'inf' "
            f"WHEN {column} = '-Infinity' THEN '-inf' WHEN abs({column}) >= 1e16 THEN {column}::text "
            f"ELSE {sign} || left(rpad({digits}, 16, '0'), 16) || '.' || "
            f"COALESCE(NULLIF(substr({digits}, 17), ''), '0') END)")


# The rows are sorted with their stored values (narrow), then formatted: (name, stored SQL, text SQL of ``q.name``).
Columns = list[tuple[str, str, str]]
INTEGERS = ("record", "study_day", "cdisc_study_day", "course_number", "course_day", "draw", "ctcae_grade")


def _timeline_columns(record: str) -> dict[str, str]:
    """The key and timeline columns of a row of ``d`` (``draws_cte``: each draw's subject and place in time)."""
    return {"subject": "d.subject_code", "site": "d.site_code", "record": record, "study_day": "d.study_day",
            "cdisc_study_day": "d.cdisc_study_day", "course_number": "d.course_number", "course_day": "d.course_day"}


def _formatted(stored: dict[str, str]) -> Columns:
    formats: dict[str, Callable[[str], str]] = {
        **dict.fromkeys(INTEGERS, _integer), "value": python_float_sql, "superseded": _boolean,
        "recorded_at": _utc, "collected_at": _utc}
    return [(name, sql, formats.get(name, _text)(f"q.{name}")) for name, sql in stored.items()]


def _columns() -> Columns:
    return _formatted({
        **_timeline_columns("r.id"),
        "visit": "d.visit_code", "draw": "r.draw_id", "accession_number": "d.accession_number",
        "analyte": "r.analyte_code", "loinc": "r.analyte_loinc", "source_ref": "r.source_ref",
        "value_text": "r.value_text", "unit_text": "r.unit_text", "censored": "r.censored",
        "value": "r.value", "canonical_unit": "r.analyte_unit", "flag": "r.flag",
        "ctcae_grade": "r.ctcae_grade", "status": "r.status", "superseded": "r.superseded",
        "correction_reason": "r.correction_reason", "recorded_at": "r.recorded_at",
    })


def _draw_columns() -> Columns:
    return _formatted({**_timeline_columns("d.id"), "visit": "d.visit_code", "accession_number": "d.accession_number",
                       "specimen": "d.specimen", "collected_at": "d.collected_at"})


def _ids(values: tuple[int, ...]) -> str:
    return f"ARRAY[{', '.join(str(int(v)) for v in values)}]::bigint[]"


def _subjects_sql(scope: ExportScope) -> str:
    """CTEs: the scope's subjects (rank in code order, site, day 0s), their course spans, and their draws, each
    with its visit and the place of its site-local date on the timeline (computed once per draw, not per
    result)."""
    selected = "" if scope.subject_ids is None else f" AND s.id = ANY({_ids(scope.subject_ids)})"
    day0s, day = "subj.day0s", "t.day"
    return (
        f"WITH subj AS MATERIALIZED (SELECT s.id, s.code, row_number() OVER (ORDER BY s.code) AS rank, "
        f"st.code AS site_code, st.time_zone, {day0s_sql('s.id')} AS day0s FROM {Subject._meta.db_table} s "
        f"JOIN {Site._meta.db_table} st ON st.id = s.site_id WHERE s.trial_id = {int(scope.trial.pk)} "
        f"AND s.site_id = ANY({_ids(scope.site_ids)}){selected}), "
        f"spans AS MATERIALIZED ({course_spans_sql('SELECT id FROM subj')}), "
        f"draws AS MATERIALIZED (SELECT d.id, d.subject_id, d.collected_at, d.accession_number, d.specimen, "
        f"subj.rank, subj.code AS subject_code, subj.site_code, v.code AS visit_code, "
        f"{study_day_sql(day0s, day)} AS study_day, {cdisc_study_day_sql(day0s, day)} AS cdisc_study_day, "
        f"c.n AS course_number, {course_day_sql(day0s, day, 'c.n')} AS course_day "
        f"FROM {LabDraw._meta.db_table} d JOIN subj ON subj.id = d.subject_id "
        f"LEFT JOIN {Visit._meta.db_table} v ON v.id = d.visit_id "
        f"CROSS JOIN LATERAL (SELECT {local_date_sql('d.collected_at', 'subj.time_zone')} AS day) t "
        f"{course_span_join_sql('spans', 'c', 'subj.id', 't.day')}) ")


def _form_sql(scope: ExportScope, columns: Columns, names: list[str], joins: str, order: str) -> str:
    if [name for name, _stored, _text in columns] != names:
        raise ValueError(f"The SQL of a form does not have the form's columns: {names}")
    return (
        f"{_subjects_sql(scope)}SELECT {', '.join(text for _name, _stored, text in columns)} FROM ("
        f"SELECT {', '.join(f'{stored} AS {name}' for name, stored, _text in columns)} {joins} "
        f"ORDER BY d.rank, d.collected_at, {order}) q")


def results_sql(scope: ExportScope, names: list[str]) -> str:
    """The form's rows in ``scope``, columns ``names`` (the form's columns), as one SELECT. The results come
    draw by draw, the draws in the file's order and each draw's results by their index (``OFFSET 0`` keeps the
    lookup per draw), so PostgreSQL sorts only the results of a draw (an incremental sort), not the whole table
    on disk. A result's subject is its draw's (the database refuses any other: assays.0007)."""
    joins = (f"FROM (SELECT * FROM draws ORDER BY rank, collected_at, id) d CROSS JOIN LATERAL ("
             f"SELECT r.*, a.code AS analyte_code, a.loinc AS analyte_loinc, a.canonical_unit AS analyte_unit "
             f"FROM {Result._meta.db_table} r JOIN {Analyte._meta.db_table} a ON a.id = r.analyte_id "
             f"WHERE r.draw_id = d.id OFFSET 0) r")
    return _form_sql(scope, _columns(), names, joins, "r.id")


def draws_sql(scope: ExportScope, names: list[str]) -> str:
    """The ``lab_draws`` form's rows in ``scope`` as one SELECT (as ``results_sql``)."""
    return _form_sql(scope, _draw_columns(), names, "FROM draws d", "d.id")


def results_chunks(names: list[str], scope: ExportScope) -> Iterator[bytes]:
    """The CSV file of the form: the header (``names``), then PostgreSQL's rows, CRLF-ended, in chunks."""
    return copy_chunks(names, results_sql(scope, names))


def draws_chunks(names: list[str], scope: ExportScope) -> Iterator[bytes]:
    """The ``lab_draws`` form's CSV file, as ``results_chunks``."""
    return copy_chunks(names, draws_sql(scope, names))


def copy_chunks(names: list[str], sql: str) -> Iterator[bytes]:
    header = io.StringIO()
    csv.writer(header).writerow(names)
    yield header.getvalue().encode()
    query = f"COPY ({sql}) TO STDOUT (FORMAT csv)"
    with connection.cursor() as cursor, cursor.cursor.copy(query) as copy:
        rows: list[Block] = []
        for block in copy:  # one row per block, ending with LF
            rows.append(block)
            if len(rows) == ROWS_PER_CHUNK:
                yield crlf(rows)
                rows = []
        if rows:
            yield crlf(rows)


def crlf(rows: list[Block]) -> bytes:
    """Rows ending with LF (one per block) as the csv module ends them: CRLF. Without a double quote in the
    chunk no field holds a line break, so every LF ends a row."""
    joined = b"".join(rows)
    if b'"' not in joined:
        return joined.replace(b"\n", b"\r\n")
    return b"".join(bytes(row[:-1]) + b"\r\n" for row in rows)
