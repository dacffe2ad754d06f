"""The ``results`` and ``lab_draws`` forms of the CSV export (the two whose size grows with the results), written
by PostgreSQL, whose rows are those of ``exports.crf.Form.rows`` for the form, formatted as ``exports.crf.text``
formats them, so each file is byte for byte the one the generic path writes (tests/exports/test_crf_csv.py
compares them).

What must agree with ``exports.crf``: the scope (the subject's trial, the scope's sites and selected subjects),
the order (subject code, collection time, record), the timeline (``patients.timeline``'s SQL form, on the
site's local date of the collection; the course from its set form, ``course_spans_sql``), and the text of each
value: an empty text is written as nothing, booleans as ``true``/``false``, times in UTC with ``Z``, floats in
Python's shortest form (``repr``: ``100.0``, not ``100``), and the csv module's quoting (a field holding a comma,
a double quote, a CR or an LF is quoted, its double quotes doubled) and line ends (CRLF).

``lab_draws`` (one row per draw) is one ``COPY (SELECT ...) TO STDOUT (FORMAT csv)``: PostgreSQL quotes as the csv
module does, ends lines with LF and sends one row per message; each is ended with CRLF. ``results`` (a million
rows at 25,000 draws) is written a group of draws at a time: each draw's columns are formatted and quoted once,
in the draws' query, and PostgreSQL joins each group's lines (CRLF-ended) into one text, so Python reads one
binary COPY message per group rather than one per result (``results_sql``). A large results file is read in two
parts by subject, the second on another connection sharing the export's snapshot (``parts``, ``exports.snapshot``),
so that PostgreSQL builds both at once.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from functools import partial
from itertools import groupby
from typing import TYPE_CHECKING

from django.db import connection
from django.db.backends.base.base import BaseDatabaseWrapper

from assays.models import Analyte, LabDraw, Result
from exports import copy_out
from exports.snapshot import SPLIT_MIN_DRAWS, beside, halves
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
Part = tuple[int, int]  # the subjects of ranks (after, up to], ranks in the file's order from 1


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


def _draw_columns() -> Columns:
    return _formatted({**_timeline_columns("d.id"), "visit": "d.visit_code", "accession_number": "d.accession_number",
                       "specimen": "d.specimen", "collected_at": "d.collected_at"})


def _ids(values: tuple[int, ...]) -> str:
    return f"ARRAY[{', '.join(str(int(v)) for v in values)}]::bigint[]"


def _subjects_sql(scope: ExportScope, part: Part | None = None) -> str:
    """CTEs: the scope's subjects (rank in code order, site, day 0s), their course spans, and their draws, each
    with its visit and the place of its site-local date on the timeline (computed once per draw, not per
    result); with ``part``, the draws of the subjects of those ranks only."""
    selected = "" if scope.subject_ids is None else f" AND s.id = ANY({_ids(scope.subject_ids)})"
    ranks = "" if part is None else f"WHERE subj.rank > {int(part[0])} AND subj.rank <= {int(part[1])} "
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
        f"{course_span_join_sql('spans', 'c', 'subj.id', 't.day')} {ranks}) ")


def _form_sql(scope: ExportScope, columns: Columns, names: list[str], joins: str, order: str) -> str:
    if [name for name, _stored, _text in columns] != names:
        raise ValueError(f"The SQL of a form does not have the form's columns: {names}")
    return (
        f"{_subjects_sql(scope)}SELECT {', '.join(text for _name, _stored, text in columns)} FROM ("
        f"SELECT {', '.join(f'{stored} AS {name}' for name, stored, _text in columns)} {joins} "
        f"ORDER BY d.rank, d.collected_at, {order}) q")


def draws_sql(scope: ExportScope, names: list[str]) -> str:
    """The ``lab_draws`` form's rows in ``scope`` as one SELECT, in the file's order."""
    return _form_sql(scope, _draw_columns(), names, "FROM draws d", "d.id")


def draws_chunks(names: list[str], scope: ExportScope) -> Iterator[bytes]:
    """The ``lab_draws`` form's CSV file: the header (``names``), then PostgreSQL's rows, CRLF-ended, in chunks."""
    return copy_chunks(names, draws_sql(scope, names))


def _header(names: list[str]) -> bytes:
    header = io.StringIO()
    csv.writer(header).writerow(names)
    return header.getvalue().encode()


def copy_chunks(names: list[str], sql: str) -> Iterator[bytes]:
    yield _header(names)
    query = f"COPY ({sql}) TO STDOUT (FORMAT csv)"
    with connection.cursor() as cursor, cursor.cursor.copy(query) as copy:
        rows: list[Block] = []
        for block in copy_out.rows(copy):  # one row per block, ending with LF
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


# --- results: a group of draws at a time ---------------------------------------------------------------------------

# The columns of the results file: name, stored value (of the draw ``d``, a row of the ``draws`` CTE; of the
# analyte ``a``; or of the result ``r``) and type. A draw's and an analyte's columns are formatted and quoted once
# each, not once per result.
RESULT_COLUMNS: list[tuple[str, str, str]] = [
    ("subject", "d.subject_code", "text"), ("site", "d.site_code", "text"), ("record", "r.id", "integer"),
    ("study_day", "d.study_day", "integer"), ("cdisc_study_day", "d.cdisc_study_day", "integer"),
    ("course_number", "d.course_number", "integer"), ("course_day", "d.course_day", "integer"),
    ("visit", "d.visit_code", "text"), ("draw", "d.id", "integer"), ("accession_number", "d.accession_number", "text"),
    ("analyte", "a.code", "text"), ("loinc", "a.loinc", "text"), ("source_ref", "r.source_ref", "text"),
    ("value_text", "r.value_text", "text"), ("unit_text", "r.unit_text", "text"), ("censored", "r.censored", "text"),
    ("value", "r.value", "float"), ("canonical_unit", "a.canonical_unit", "text"), ("flag", "r.flag", "text"),
    ("ctcae_grade", "r.ctcae_grade", "integer"), ("status", "r.status", "text"),
    ("superseded", "r.superseded", "boolean"), ("correction_reason", "r.correction_reason", "text"),
    ("recorded_at", "r.recorded_at", "utc"),
]
CHUNK_BYTES = 1 << 20
# What makes the csv module quote a field (its delimiter, quote character and line ends), as a regular expression.
NEEDS_QUOTES = "'[\",\\r\\n]'"
# PostgreSQL writes a timestamp as ISO 8601 (with a space for the T) in the ISO date style only, the default. A
# subquery without outer references: computed once per query.
ISO_DATES = "(SELECT current_setting('DateStyle') LIKE 'ISO%')"


def _utc_text(column: str) -> str:
    """As ``_utc``, most times for less: PostgreSQL's text of the UTC time, its space made a ``T``, when it has six
    digits of microseconds or none (it drops a fraction's trailing zeros), else ``_utc``'s ``to_char``."""
    text = f"({column} AT TIME ZONE 'UTC')::text"
    return (f"(CASE WHEN {ISO_DATES} AND octet_length({text}) IN (19, 26) THEN replace({text}, ' ', 'T') || 'Z' "
            f"ELSE {_utc(column)} END)")


def csv_field_sql(column: str, kind: str, *, nullable: bool = True, quote: bool = True) -> str:
    """A stored value as its field in the csv module's CSV: as ``exports.crf.text`` writes it, quoted if it needs to
    be (only a text can; ``quote=False`` leaves a text as it is), and nothing for NULL unless ``nullable`` is
    false (the column cannot hold one: a NULL would make the whole line NULL)."""
    if kind == "text" and quote:
        return (f"(CASE WHEN {column} ~ {NEEDS_QUOTES} THEN '\"' || replace({column}, '\"', '\"\"') || '\"' "
                f"ELSE COALESCE({column}, '') END)")
    if kind == "boolean":
        return f"(CASE WHEN {column} THEN 'true' WHEN NOT {column} THEN 'false' ELSE '' END)"
    formats: dict[str, Callable[[str], str]] = {
        "text": lambda c: c, "integer": lambda c: f"{c}::text", "float": python_float_sql, "utc": _utc_text}
    text = formats[kind](column)
    return f"COALESCE({text}, '')" if nullable else text


def _result_nullable(column: str) -> bool:
    """Whether a column of the results table may hold NULL."""
    fields = {f.column: f for f in Result._meta.concrete_fields}
    return bool(fields[column.removeprefix("r.")].null)


def _result_field(column: str, kind: str, *, quote: bool) -> str:
    return csv_field_sql(column, kind, nullable=_result_nullable(column), quote=quote)


def _runs() -> list[tuple[str, list[tuple[str, str, str]]]]:
    """The columns in runs of one table (``d``, ``a`` or ``r``), in the file's order."""
    return [(table, list(columns)) for table, columns in groupby(RESULT_COLUMNS, key=lambda c: c[1].split(".")[0])]


def _line_sql(runs: list[tuple[str, list[tuple[str, str, str]]]], *, quote: bool) -> str:
    """A result's CSV line: the results' columns formatted here (their texts quoted only with ``quote``), the
    draws' and analytes' pieces read from ``x`` and ``c`` (``_pieces``, which hold the commas between runs)."""
    parts = []
    for n, (table, columns) in enumerate(runs):
        if table == "r":
            parts.append(" || ',' || ".join(_result_field(sql, kind, quote=quote) for _name, sql, kind in columns))
        else:
            parts.append(f"{'x' if table == 'd' else 'c'}.{table}{n}")
    return " || ".join(parts) + " || E'\\r\\n'"


def _pieces(runs: list[tuple[str, list[tuple[str, str, str]]]]) -> dict[str, str]:
    """The text of each run of a draw's or an analyte's columns, named ``d<n>``/``a<n>`` (``n`` its run), with
    the comma that separates it from each neighbour (a result's run has none of its own)."""
    pieces = {}
    for n, (table, columns) in enumerate(runs):
        if table == "r":
            continue
        text = " || ',' || ".join(csv_field_sql(sql, kind) for _name, sql, kind in columns)
        if n > 0 and runs[n - 1][0] == "r":
            text = f"',' || {text}"
        if n < len(runs) - 1:
            text = f"{text} || ','"
        pieces[f"{table}{n}"] = text
    return pieces


def results_sql(scope: ExportScope, names: list[str], part: Part | None = None) -> str:
    """The results file's lines in ``scope`` (``names``: the form's columns) as one SELECT of one text per group
    of draws: the draws of a subject taken at the same time, whose results are ordered by record, in the file's
    order (with ``part``, those of the subjects of its ranks: ``parts``). Each group's results are looked up by the
    ``draw_id`` index and sorted (by record, before their lines are made). A result's subject is its draw's (the
    database refuses any other: assays.0007).

    The results' texts are written as they are, unless one in the group needs quotes (a comma, a double quote or
    a line break, found by one regular expression over them all): then the group's lines are made again with
    each text quoted as it needs."""
    if [name for name, _sql, _kind in RESULT_COLUMNS] != names:
        raise ValueError(f"The SQL of a form does not have the form's columns: {names}")
    runs = _runs()
    pieces = _pieces(runs)
    draws = [name for name in pieces if name.startswith("d")]
    analytes = [name for name in pieces if name.startswith("a")]
    texts = [_result_field(sql, "text", quote=False) for _name, sql, kind in RESULT_COLUMNS
             if kind == "text" and sql.startswith("r.")]
    # Each draw's results by the draw_id index, whatever the planner knows of the table: as a join it may
    # hash the whole results table for every group when the table's statistics are missing or stale (right
    # after a bulk load, before autovacuum analyses it), which never finishes; OFFSET 0 keeps the lookup a
    # subquery per draw, where the index is the only sensible plan.
    results = (f"FROM unnest(g.ids, {', '.join(f'g.{n}' for n in draws)}) AS x(id, {', '.join(draws)}) "
               f"CROSS JOIN LATERAL (SELECT * FROM {Result._meta.db_table} r WHERE r.draw_id = x.id OFFSET 0) r "
               f"JOIN cat c ON c.id = r.analyte_id")
    return (
        f"{_subjects_sql(scope, part)}, grp AS (SELECT d.rank, d.collected_at, array_agg(d.id ORDER BY d.id) AS ids, "
        + ", ".join(f"array_agg({pieces[n]} ORDER BY d.id) AS {n}" for n in draws)
        + " FROM draws d GROUP BY d.rank, d.collected_at), "
        f"cat AS MATERIALIZED (SELECT a.id, {', '.join(f'{pieces[n]} AS {n}' for n in analytes)} "
        f"FROM {Analyte._meta.db_table} a) "
        f"SELECT CASE WHEN l.quote THEN (SELECT string_agg({_line_sql(runs, quote=True)}, '' ORDER BY r.id) "
        f"{results}) ELSE l.lines END FROM grp g CROSS JOIN LATERAL ("
        f"SELECT string_agg({_line_sql(runs, quote=False)}, '' ORDER BY r.id) AS lines, "
        f"string_agg({' || '.join(texts)}, '') ~ {NEEDS_QUOTES} AS quote {results}) l "
        "ORDER BY g.rank, g.collected_at")


def parts(scope: ExportScope) -> list[Part | None]:
    """The parts of the results file read each on its own connection (``exports.snapshot``): the subjects, in the
    file's order, cut in two of about the same number of draws (their ranks: ``(after, up to)``), when the
    export's snapshot can be shared and the file is large; otherwise one part, the whole file (``None``)."""
    if scope.snapshot is None:
        return [None]
    with connection.cursor() as cursor:
        cursor.execute(f"{_subjects_sql(scope)}SELECT count(d.id) FROM subj LEFT JOIN {LabDraw._meta.db_table} d "
                       "ON d.subject_id = subj.id GROUP BY subj.rank ORDER BY subj.rank")
        draws = [count for (count,) in cursor.fetchall()]
    if len(draws) < 2 or sum(draws) < SPLIT_MIN_DRAWS:
        return [None]
    cut = halves(draws)
    return [(0, cut), (cut, len(draws))]


def results_chunks(names: list[str], scope: ExportScope) -> Iterator[bytes]:
    """The CSV file of the form: the header (``names``), then the groups' lines (``_lines``) of each part of the
    subjects (``parts``), the second read on another connection at the same time as the first."""
    yield _header(names)
    first, *rest = parts(scope)
    query = "COPY ({}) TO STDOUT (FORMAT binary)"
    if not rest:
        yield from _lines(connection, query.format(results_sql(scope, names, first)))
        return
    assert scope.snapshot is not None  # parts() cut only with a snapshot to share
    with beside(scope.snapshot, partial(_lines, query=query.format(results_sql(scope, names, rest[0])))) as second:
        yield from _lines(connection, query.format(results_sql(scope, names, first)))
        yield from second.chunks()


def _lines(db: BaseDatabaseWrapper, query: str) -> Iterator[bytes]:
    """The lines of the results query's binary COPY on ``db`` in chunks of about ``CHUNK_BYTES``. Each group is one
    row of the COPY (the text as it is, no escapes; UTF-8, the connection's encoding), read as bytes; a group
    without results is NULL."""
    with db.cursor() as cursor, cursor.cursor.copy(query) as copy:
        copy.set_types(["bytea"])
        lines: list[bytes] = []
        size = 0
        for (text,) in copy.rows():
            if text is None:
                continue
            lines.append(text)
            size += len(text)
            if size >= CHUNK_BYTES:
                yield b"".join(lines)
                lines, size = [], 0
        if lines:
            yield b"".join(lines)
