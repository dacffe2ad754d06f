"""LB and PC, each written from one SQL query: the CSV by ``COPY (SELECT ...) TO STDOUT``, the XPT from a
server-side cursor, one binary record per row (``xpt_values_sql``) encoded a chunk at a time. Byte for byte the files
``findings.lb_rows`` and ``findings.pc_rows`` give through the generic writers (tests/exports/test_sdtm_sql.py
compares them). The two share the query (``WITH``, ``_select``) and differ in their variables' SQL and
their analytes: PC has the CAR transgene (``findings.PC_ANALYTES``), LB every other one.

What Python knows and PostgreSQL does not is computed first and sent with the query as arrays: the subjects
(USUBJID, sort rank, first exposure, sex and age), the analyte catalogue in SDTM form (``codes.catalogue``),
the reference range of each analyte for each (sex, age) of the subjects (``codes.Test.range_for``), the
protocol visit of each (subject, local date) with a lab draw (``Context.visit``, from ``patients.timeline``),
and the standard text of the few non-numeric results whose text is not printable ASCII (``str.strip().upper()``).
Study days come from ``patients.timeline``'s SQL form. The rest is per row: the texts of ``findings._lb_items``,
LBSEQ as a window function over the dataset's order (the CSV), LBLOBXFL from the set of baselines (``BASE``),
numbers as ``codes.number_text`` writes them (those of the catalogue and ranges once per row of them).

The XPT is assembled by columns: the variables of the draw and the constants are read once per draw
(``Draws``), those of the test once per test (``tests_sql``), each encoded once into a table of fixed-width
lines; the query then sends per row only the draw's id, the test's rank, the result's id and the row's own
variables, in subject order only; each subject's rows are put in order and numbered (--SEQ) with numpy
(``_in_order``, ``_sequence``) and the draw's and test's lines copied in. Its character variables are as long
as their longest values, which the header, coming first, states: each part's rows are read once and spooled
(``_Spool``) as far encoded as they can be without the file's widths, which they give (the row's own texts
measured on the rows, the draw's on ``Draws``, the test's on the tests with a row); the spools are then copied
into the file's rows. ``fitted`` gives the same variables by a query (``widths_sql``), for a dataset whose XPT is
not written (tests/exports/test_sdtm_sql.py checks that both agree).

PostgreSQL quotes a CSV field holding a carriage return, the csv module (lines ended by LF) does not: a line
PostgreSQL quoted (one holding a double quote) is written again by the csv module.
"""

from __future__ import annotations

import csv
import io
import tempfile
import threading
from collections import deque
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from functools import partial
from typing import IO, Any

import numpy as np
import numpy.typing as npt
from django.db import connection
from django.db.backends.base.base import BaseDatabaseWrapper

from assays.models import LabDraw, Result
from exports import copy_out
from exports.formats.csv_results import Block, python_float_sql
from exports.sdtm.codes import SPECIMEN, catalogue
from exports.sdtm.common import Context, Dataset, subject_key
from exports.sdtm.findings import CANCELLED, DATASETS, NRIND, PC_ANALYTES
from exports.sdtm.xpt import (
    BLANK,
    RECORD,
    Variable,
    encoded,
    fit,
    header,
    ibm_floats,
    ibm_numbers,
    place_table,
    text_table,
    text_width,
    unaligned,
)
from exports.snapshot import SPLIT_MIN_DRAWS, SPOOL_MEMORY, beside, halves
from patients.timeline import cdisc_study_day_sql, day0s_sql, local_date_sql

LB, PC = DATASETS[0], DATASETS[1]
FLUSH = 64 * 1024
XPT_CHUNK = 5000  # rows fetched, and encoded, at a time
PRINTABLE_ASCII = "^[ -~]*$"  # texts PostgreSQL strips and upper-cases exactly as Python does


def number_sql(column: str) -> str:
    """As ``codes.number_text``: whole numbers below 1e15 without ".0", others as Python's ``repr`` (the common
    case, a finite number below 1e15, is tested first)."""
    return (f"(CASE WHEN abs({column}) < 1e15 THEN (CASE WHEN {column} = trunc({column}) THEN {column}::bigint::text "
            f"ELSE {column}::text END) ELSE {python_float_sql(column)} END)")


def _case(column: str, mapping: dict[str, str], default: str) -> str:
    whens = " ".join(f"WHEN {_literal(k)} THEN {_literal(v)}" for k, v in mapping.items())
    return f"(CASE {column} {whens} ELSE {default} END)"


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


# SQL of each LB variable, in LB_VARIABLES' order: text (NULL for none) for Char, a number for Num.
DONE = f"(r.status <> {_literal(CANCELLED)})"
MEASURED = f"({DONE} AND r.value IS NOT NULL)"
# LBSEQ numbers a subject's rows in the dataset's order, outside the per-draw lookup (``_select``).
SEQ = "row_number() OVER (PARTITION BY d.subject_rank ORDER BY x.test_rank, d.collected_at, x.result_id)"
STANDARD = (f"(CASE WHEN r.value IS NULL THEN COALESCE(std.text, upper(btrim(r.value_text, ' '))) "
            f"WHEN r.censored <> '' THEN r.censored || {number_sql('r.value')} ELSE {number_sql('r.value')} END)")
DTC = ("(to_char(t.lt, 'YYYY-MM-DD\"T\"HH24:MI') || CASE WHEN floor(date_part('second', t.lt)) <> 0 "
       "THEN to_char(t.lt, ':SS') ELSE '' END)")
EXPRESSIONS: dict[str, str] = {
    "STUDYID": "%(studyid)s::text", "DOMAIN": "'LB'", "USUBJID": "d.usubjid", "LBSEQ": SEQ,
    "LBREFID": "d.accession_number", "LBTESTCD": "cat.testcd", "LBTEST": "cat.name",
    "LBORRES": f"(CASE WHEN {DONE} THEN r.value_text END)", "LBORRESU": f"(CASE WHEN {DONE} THEN r.unit_text END)",
    "LBSTRESC": f"(CASE WHEN {DONE} THEN {STANDARD} END)",
    "LBSTRESN": f"(CASE WHEN {MEASURED} AND r.censored = '' THEN r.value END)",
    "LBSTRESU": f"(CASE WHEN {MEASURED} THEN cat.unit END)",
    "LBSTNRLO": f"(CASE WHEN {MEASURED} THEN cat.lows[d.profile + 1] END)",
    "LBSTNRHI": f"(CASE WHEN {MEASURED} THEN cat.highs[d.profile + 1] END)",
    "LBNRIND": f"(CASE WHEN {DONE} THEN {_case('r.flag', NRIND, 'NULL')} END)",
    "LBSTAT": f"(CASE WHEN NOT {DONE} THEN 'NOT DONE' END)",
    "LBREASND": f"(CASE WHEN NOT {DONE} THEN 'CANCELLED BY THE LABORATORY' END)",
    "LBLOINC": "cat.loinc", "LBSPEC": _case("d.specimen", SPECIMEN, "upper(d.specimen)"),
    # The last result before exposure of each (subject, test): one of ``base``.
    "LBLOBXFL": "(CASE WHEN r.id IN (SELECT id FROM base) THEN 'Y' END)",
    "LBTOX": "(CASE WHEN r.ctcae_grade IS NOT NULL THEN cat.tox END)", "LBTOXGR": "r.ctcae_grade::text",
    "VISITNUM": "d.visitnum", "VISIT": "d.visit", "LBDTC": "d.dtc", "LBDY": "d.dy",
}

# PC shares LB's texts of the result, specimen, visit and date (``findings.pc_rows`` and ``findings._lb_items``).
PC_EXPRESSIONS: dict[str, str] = {
    "STUDYID": EXPRESSIONS["STUDYID"], "DOMAIN": "'PC'", "USUBJID": EXPRESSIONS["USUBJID"],
    "PCSEQ": EXPRESSIONS["LBSEQ"], "PCREFID": EXPRESSIONS["LBREFID"], "PCTESTCD": EXPRESSIONS["LBTESTCD"],
    "PCTEST": EXPRESSIONS["LBTEST"], "PCCAT": "'CELLULAR KINETICS'", "PCORRES": EXPRESSIONS["LBORRES"],
    "PCORRESU": EXPRESSIONS["LBORRESU"], "PCSTRESC": EXPRESSIONS["LBSTRESC"], "PCSTRESN": EXPRESSIONS["LBSTRESN"],
    "PCSTRESU": EXPRESSIONS["LBSTRESU"], "PCSTAT": EXPRESSIONS["LBSTAT"], "PCREASND": EXPRESSIONS["LBREASND"],
    "PCSPEC": EXPRESSIONS["LBSPEC"], "PCMETHOD": "'QPCR'", "PCLLOQ": "cat.lloq", "VISITNUM": EXPRESSIONS["VISITNUM"],
    "VISIT": EXPRESSIONS["VISIT"], "PCDTC": EXPRESSIONS["LBDTC"], "PCDY": EXPRESSIONS["LBDY"],
}


@dataclass(frozen=True)
class FromSql:
    """A findings dataset written from SQL: its variables, the SQL of each, which numbers are integers (written
    as digits), the CSV text of numbers whose text is computed once per catalogue row (``texts``), and whether
    it holds the CAR transgene (PC) or every other analyte (LB)."""

    dataset: Dataset
    expressions: dict[str, str]
    integers: tuple[str, ...]
    pc: bool
    texts: dict[str, str] = field(default_factory=dict)
    # The variables of the draw (or constant: the same for every row of a draw; ``Draws``), those of the test (the
    # same for every row of a test; ``_tests``) and the texts of the result itself (not the same for every result
    # of a test, status, flag and grade). Any other character variable may read of the result only its test,
    # status, flag, grade, whether it has a value and whether it is the baseline (``grouped``).
    per_draw: tuple[str, ...] = ()
    per_test: tuple[str, ...] = ()
    free: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if list(self.expressions) != [v.name for v in self.variables] or not set(self.texts) <= set(self.expressions):
            raise ValueError(f"The SQL of {self.dataset.name} does not have the dataset's variables.")
        texts = {v.name for v in self.variables if not v.numeric}
        if not set(self.free) <= texts or len({*self.per_draw, *self.per_test, *self.free}) != len(
                self.per_draw + self.per_test + self.free) or not {*self.per_draw, *self.per_test} <= set(
                self.expressions):
            raise ValueError(f"{self.dataset.name}: per-draw, per-test and free variables are distinct variables.")

    @property
    def grouped(self) -> tuple[str, ...]:
        """The character variables that are neither the draw's nor free: the same for every result of a group
        (``widths_sql``)."""
        return tuple(v.name for v in self.variables
                     if not v.numeric and v.name not in self.per_draw and v.name not in self.free)

    @property
    def sequence(self) -> str:
        """The variable numbering a subject's rows (--SEQ)."""
        return next(name for name, sql in self.expressions.items() if sql == SEQ)

    @property
    def per_row(self) -> tuple[Variable, ...]:
        """The variables the XPT's query sends for each row: all but the draw's, the test's and --SEQ."""
        others = {*self.per_draw, *self.per_test, self.sequence}
        return tuple(v for v in self.variables if v.name not in others)

    @property
    def variables(self) -> tuple[Variable, ...]:
        return self.dataset.variables


STRESN_TEXT = f"(CASE WHEN {MEASURED} AND r.censored = '' THEN {number_sql('r.value')} END)"
LB_SQL = FromSql(LB, EXPRESSIONS, ("LBSEQ", "VISITNUM", "LBDY"), pc=False, texts={
    "LBSTRESN": STRESN_TEXT, "LBSTNRLO": f"(CASE WHEN {MEASURED} THEN cat.low_texts[d.profile + 1] END)",
    "LBSTNRHI": f"(CASE WHEN {MEASURED} THEN cat.high_texts[d.profile + 1] END)"},
    per_draw=("STUDYID", "DOMAIN", "USUBJID", "LBREFID", "LBSPEC", "VISITNUM", "VISIT", "LBDTC", "LBDY"),
    per_test=("LBTESTCD", "LBTEST", "LBLOINC"), free=("LBORRES", "LBORRESU", "LBSTRESC"))
PC_SQL = FromSql(PC, PC_EXPRESSIONS, ("PCSEQ", "VISITNUM", "PCDY"), pc=True,
                 texts={"PCSTRESN": STRESN_TEXT, "PCLLOQ": "cat.lloq_text"},
                 per_draw=("STUDYID", "DOMAIN", "USUBJID", "PCREFID", "PCSPEC", "PCCAT", "PCMETHOD", "VISITNUM",
                           "VISIT", "PCDTC", "PCDY"),
                 per_test=("PCTESTCD", "PCTEST", "PCLLOQ"), free=("PCORRES", "PCORRESU", "PCSTRESC"))


# Each draw of the subjects with its subject, site-local time and date, --DTC, --DY and visit, and whether it
# comes before the first exposure: once per draw, not per result.
DRAWS = (
    "draws AS MATERIALIZED (SELECT d.id, d.subject_id, d.collected_at, d.accession_number, d.specimen, "
    "subj.rank AS subject_rank, subj.usubjid, subj.profile, "
    "(t.day <= subj.first_exposure) IS TRUE AS before_exposure, "
    f"{DTC} AS dtc, {cdisc_study_day_sql('subj.day0s', 't.day')} AS dy, vis.visitnum, vis.visit "
    "FROM subj JOIN " + LabDraw._meta.db_table + " d ON d.subject_id = subj.id "
    "CROSS JOIN LATERAL (SELECT d.collected_at AT TIME ZONE subj.tz AS lt) l "
    f"CROSS JOIN LATERAL (SELECT l.lt, {local_date_sql('d.collected_at', 'subj.tz')} AS day) t "
    "LEFT JOIN vis ON vis.subject_id = subj.id AND vis.day = t.day), "
)

# The baseline of each (subject, test) (LBLOBXFL): its last result done before the first exposure, the last by
# (collection time, record) among the candidates, found by grouping (no sort).
BASE = (
    "cand AS MATERIALIZED (SELECT r.id, r.subject_id, r.analyte_id, d.collected_at FROM draws d JOIN "
    + Result._meta.db_table + " r ON r.draw_id = d.id AND NOT r.superseded "
    f"JOIN cat ON cat.id = r.analyte_id WHERE d.before_exposure AND {DONE}), "
    "base AS MATERIALIZED (SELECT max(c.id) AS id FROM cand c JOIN (SELECT subject_id, analyte_id, "
    "max(collected_at) AS collected_at FROM cand GROUP BY subject_id, analyte_id) l "
    "ON l.subject_id = c.subject_id AND l.analyte_id = c.analyte_id AND l.collected_at = c.collected_at "
    "GROUP BY c.subject_id, c.analyte_id) "
)


WITH = (
    "WITH subj AS MATERIALIZED (SELECT u.*, " + day0s_sql("u.id") + " AS day0s FROM unnest(%(s_id)s::bigint[], "
    "%(s_rank)s::int[], %(s_usubjid)s::text[], %(s_tz)s::text[], %(s_first)s::date[], %(s_profile)s::int[]) "
    "AS u(id, rank, usubjid, tz, first_exposure, profile)), "
    "rng AS (SELECT * FROM unnest(%(r_analyte)s::bigint[], %(r_profile)s::int[], %(r_low)s::float8[], "
    "%(r_high)s::float8[]) AS g(analyte_id, profile, low, high)), "
    # Each test with its ranges by profile (element p + 1 for profile p; the ranges are every (test, profile)):
    # a row reads its own by subscript rather than by a join on the draw's profile, which PostgreSQL would push
    # into the scan of the ranges and so rebuild their hash table for every draw.
    "cat AS MATERIALIZED (SELECT c.*, " + number_sql("c.lloq") + " AS lloq_text, "
    + ", ".join(f"ARRAY(SELECT {sql} FROM rng g WHERE g.analyte_id = c.id ORDER BY g.profile) AS {name}"
                for name, sql in (("lows", "g.low"), ("highs", "g.high"), ("low_texts", number_sql("g.low")),
                                  ("high_texts", number_sql("g.high")))) + " "
    "FROM unnest(%(c_id)s::bigint[], %(c_rank)s::int[], %(c_testcd)s::text[], %(c_name)s::text[], "
    "%(c_unit)s::text[], %(c_loinc)s::text[], %(c_tox)s::text[], %(c_lloq)s::float8[]) "
    "AS c(id, rank, testcd, name, unit, loinc, tox, lloq)), "
    "vis AS (SELECT * FROM unnest(%(v_subject)s::bigint[], %(v_day)s::date[], %(v_num)s::int[], %(v_name)s::text[]) "
    "AS v(subject_id, day, visitnum, visit)), "
    + DRAWS + BASE + ", "
    "std AS MATERIALIZED (SELECT * FROM unnest(%(t_value)s::text[], %(t_text)s::text[]) AS x(value_text, text)) "
)


def _select(columns: list[str], *, record: bool = False) -> str:
    """The dataset's rows, ``columns`` their SQL. The draws are taken in subject order and each draw's results
    looked up by its index (``OFFSET 0`` keeps the lookup per draw), where every column but LBSEQ is computed;
    PostgreSQL then sorts each subject's rows by test, time and record in memory (an incremental sort), not the
    whole dataset on disk, and numbers them (LBSEQ). With ``record``, each row is one ``record_send`` of its
    columns, and the rows are only in subject order, as the draws are taken: the XPT puts each subject's rows in
    order itself (``_in_order``), which costs less than PostgreSQL's sort of the whole rows."""
    inner = [c for c in columns if SEQ not in c]
    outer = ", ".join(c if SEQ in c else f"x.c{inner.index(c)}" for c in columns)
    outer = f"record_send(ROW({outer}))" if record else outer
    return (
        f"{WITH}SELECT {outer} FROM (SELECT * FROM draws ORDER BY subject_rank) d CROSS JOIN LATERAL ("
        f"SELECT {', '.join(f'{c} AS c{i}' for i, c in enumerate(inner))}, cat.rank AS test_rank, r.id AS result_id "
        f"FROM {Result._meta.db_table} r JOIN cat ON cat.id = r.analyte_id "
        "LEFT JOIN std ON std.value_text = r.value_text AND r.value IS NULL "
        "WHERE r.draw_id = d.id AND NOT r.superseded OFFSET 0) x"
        + ("" if record else " ORDER BY d.subject_rank, x.test_rank, d.collected_at, x.result_id"))


def _text_sql(spec: FromSql, variable: Variable) -> str:
    """The variable as the csv module writes it: NULL for an empty text, numbers as ``number_text``."""
    expression = spec.expressions[variable.name]
    if variable.name in spec.texts:
        return spec.texts[variable.name]
    if variable.numeric:
        return expression if variable.name in spec.integers else number_sql(expression)
    return f"NULLIF({expression}, '')"


def csv_sql(spec: FromSql = LB_SQL) -> str:
    return _select([_text_sql(spec, v) for v in spec.variables])


# --- what Python sends -------------------------------------------------------------------------------


def _visit_days(ctx: Context, subject_ids: list[int]) -> dict[str, list[Any]]:
    """The protocol visit of each (subject, site-local date) with a lab draw (one query)."""
    out: dict[str, list[Any]] = {"v_subject": [], "v_day": [], "v_num": [], "v_name": []}
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT DISTINCT d.subject_id, {local_date_sql('d.collected_at', 'u.tz')} FROM "
            f"{LabDraw._meta.db_table} d JOIN unnest(%s::bigint[], %s::text[]) AS u(id, tz) ON u.id = d.subject_id",
            [subject_ids, [ctx.subjects[pk].tz.key for pk in subject_ids]])
        for subject_id, day in cursor.fetchall():
            visitnum, visit = ctx.visit(ctx.subjects[subject_id], day)
            if visitnum is not None:
                out["v_subject"].append(subject_id)
                out["v_day"].append(day)
                out["v_num"].append(visitnum)
                out["v_name"].append(visit)
    return out


def _standard_texts(subject_ids: list[int], db: BaseDatabaseWrapper = connection) -> dict[str, list[Any]]:
    """``str.strip().upper()`` of the non-numeric result texts of the subjects that are not printable ASCII (one
    query on ``db``: a scan of the subjects' results)."""
    with db.cursor() as cursor:
        cursor.execute(f"SELECT DISTINCT value_text FROM {Result._meta.db_table} WHERE subject_id = ANY(%s) "
                       "AND value IS NULL AND value_text !~ %s", [subject_ids, PRINTABLE_ASCII])
        texts = [text for (text,) in cursor.fetchall()]
    return {"t_value": texts, "t_text": [text.strip().upper() for text in texts]}


def params(ctx: Context, spec: FromSql = LB_SQL, *, texts: bool = True) -> dict[str, Any]:
    """The query's parameters: subjects, catalogue, ranges, visits and standard texts (see the docstring). Without
    ``texts`` the standard texts are none, for queries that do not read them (the draws, the tests) or until
    ``with_texts`` adds those of a part's subjects."""
    subjects = sorted(ctx.subjects.values(), key=subject_key)
    profiles: dict[tuple[str, int | None], int] = {}
    for s in subjects:
        profiles.setdefault((s.sex, s.age), len(profiles))
    tests = {pk: t for pk, t in catalogue().items() if (t.code in PC_ANALYTES) == spec.pc}
    ranked = sorted(tests, key=lambda pk: tests[pk].code)
    ranges = [] if spec.pc else [(pk, profile, *tests[pk].range_for(sex, age)) for pk in ranked
                                 for (sex, age), profile in profiles.items()]
    ids = [s.id for s in subjects]
    return {
        "studyid": ctx.studyid, "s_id": ids, "s_rank": list(range(len(subjects))),
        "s_usubjid": [s.usubjid for s in subjects], "s_tz": [s.tz.key for s in subjects],
        "s_first": [s.first_exposure for s in subjects], "s_profile": [profiles[(s.sex, s.age)] for s in subjects],
        "c_id": ranked, "c_rank": list(range(len(ranked))), "c_testcd": [tests[pk].testcd for pk in ranked],
        "c_name": [tests[pk].name for pk in ranked], "c_unit": [tests[pk].unit for pk in ranked],
        "c_loinc": [tests[pk].loinc for pk in ranked], "c_tox": [tests[pk].toxicity for pk in ranked],
        "c_lloq": [tests[pk].lloq for pk in ranked],
        "r_analyte": [r[0] for r in ranges], "r_profile": [r[1] for r in ranges], "r_low": [r[2] for r in ranges],
        "r_high": [r[3] for r in ranges], **_visit_days(ctx, ids),
        **(_standard_texts(ids) if texts else {"t_value": [], "t_text": []}),
    }


def with_texts(values: dict[str, Any], db: BaseDatabaseWrapper = connection) -> dict[str, Any]:
    """``values`` (from ``params`` without texts, or a part of them) with the standard texts of its subjects, read
    on ``db``: each part's connection reads its own subjects' at the same time."""
    return {**values, **_standard_texts(values["s_id"], db)}


SUBJECT_PARAMETERS = ("s_id", "s_rank", "s_usubjid", "s_tz", "s_first", "s_profile")


def parts(ctx: Context, values: dict[str, Any]) -> list[dict[str, Any]]:
    """The query's parameters for each part of the file read on its own connection (``exports.snapshot``): the
    subjects, in the file's order, cut in two of about the same number of draws, when the export's snapshot can be
    shared and the file is large; otherwise one part, ``values``. Every other parameter is keyed by subject or the
    same for all, so each part's rows are the file's rows of its subjects, numbered as in the whole file."""
    if ctx.scope.snapshot is None or len(values["s_id"]) < 2:
        return [values]
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT u.id, count(d.id) FROM unnest(%s::bigint[]) WITH ORDINALITY AS u(id, n) LEFT JOIN "
                       f"{LabDraw._meta.db_table} d ON d.subject_id = u.id GROUP BY u.id, u.n ORDER BY u.n",
                       [values["s_id"]])
        draws = [count for _, count in cursor.fetchall()]
    if sum(draws) < SPLIT_MIN_DRAWS:
        return [values]
    cut = halves(draws)
    return [{**values, **{k: values[k][:cut] for k in SUBJECT_PARAMETERS}},
            {**values, **{k: values[k][cut:] for k in SUBJECT_PARAMETERS}}]


# --- the files ---------------------------------------------------------------------------------------


def _requoted(line: bytes) -> bytes:
    """A line PostgreSQL quoted, as the csv module writes it."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow(next(csv.reader(io.StringIO(line.decode(), newline=""))))
    return buffer.getvalue().encode()


def csv_chunks(ctx: Context) -> Iterator[bytes]:
    """LB as CSV (``exports.sdtm.csv_chunks``' file)."""
    return _csv_chunks(ctx, LB_SQL)


def pc_csv_chunks(ctx: Context) -> Iterator[bytes]:
    """PC as CSV."""
    return _csv_chunks(ctx, PC_SQL)


def _csv_chunks(ctx: Context, spec: FromSql) -> Iterator[bytes]:
    head = io.StringIO()
    csv.writer(head, lineterminator="\n").writerow([v.name for v in spec.variables])
    yield head.getvalue().encode()
    query = f"COPY ({csv_sql(spec)}) TO STDOUT (FORMAT csv)"
    first, *rest = parts(ctx, params(ctx, spec, texts=False))
    if not rest:
        yield from _copied(connection, query, with_texts(first))
        return
    assert ctx.scope.snapshot is not None  # parts() cut only with a snapshot to share
    with beside(ctx.scope.snapshot, lambda other: _copied(other, query, with_texts(rest[0], other))) as second:
        yield from _copied(connection, query, with_texts(first))
        yield from second.chunks()


def _copied(db: BaseDatabaseWrapper, query: str, values: dict[str, Any]) -> Iterator[bytes]:
    """The lines of the query's CSV COPY on ``db`` (the export's connection or the second one), as the csv module
    writes them, ``FLUSH`` bytes at a time."""
    with db.cursor() as cursor, cursor.cursor.copy(query, values) as copy:
        lines: list[Block] = []
        size = 0
        append = lines.append
        for block in copy_out.rows(copy):  # one line per block
            append(block)
            size += len(block)
            if size >= FLUSH:
                yield _as_csv_module(lines)
                lines = []
                append = lines.append
                size = 0
        yield _as_csv_module(lines)


def _as_csv_module(lines: list[Block]) -> bytes:
    """PostgreSQL's lines as the csv module writes them: only a line holding a double quote can differ."""
    joined = b"".join(lines)
    if b'"' not in joined:
        return joined
    return b"".join(_requoted(line) if b'"' in line else line for line in map(bytes, lines))


Record = Callable[[tuple[Variable, ...]], None]


def xpt_chunks(ctx: Context, record: Record | None = None) -> Iterator[bytes]:
    """LB as SAS transport v5 (``exports.sdtm.xpt_chunks``' file), its variables fitted to the data (``fitted``) and
    given to ``record`` before the file's first bytes."""
    return _xpt_chunks(ctx, LB_SQL, record)


def pc_xpt_chunks(ctx: Context, record: Record | None = None) -> Iterator[bytes]:
    """PC as SAS transport v5."""
    return _xpt_chunks(ctx, PC_SQL, record)


def _xpt_sql(spec: FromSql, name: str) -> str:
    """A variable for the XPT's queries: a text (unpadded), or a number as a double (NULL is missing)."""
    numeric = next(v for v in spec.variables if v.name == name).numeric
    return f"({spec.expressions[name]})::float8" if numeric else spec.expressions[name]


def xpt_values_sql(spec: FromSql = LB_SQL) -> str:
    """The query of the XPT: one ``bytea`` per row, in PostgreSQL's binary form (``record_send``), of its draw's id,
    its test's rank, its result's id and the variables of the row (``FromSql.per_row``): texts unpadded
    (``xpt.text_table`` pads them; blank padding by PostgreSQL quadrupled the bytes it sends), numbers as doubles (NULL
    is missing). A chunk of rows is then a few Python objects, not one per value. The draw's and the test's
    variables are known before (``Draws``, ``_tests``). The rows come in subject order, each subject's rows put in
    order in Python (``_in_order``), then --SEQ counted (``_sequence``)."""
    return _select(["d.id", "cat.rank", "r.id", *(_xpt_sql(spec, v.name) for v in spec.per_row)], record=True)


def draws_sql(spec: FromSql = LB_SQL) -> str:
    """The draws with a row in the dataset, by id: id, subject rank, rank of the collection time (equal times, equal
    ranks), then the draw's variables (``per_draw``)."""
    return (f"{WITH}SELECT d.id, d.subject_rank, dense_rank() OVER (ORDER BY d.collected_at), "
            f"{', '.join(_xpt_sql(spec, name) for name in spec.per_draw)} "
            f"FROM draws d WHERE EXISTS (SELECT FROM {Result._meta.db_table} r WHERE r.draw_id = d.id "
            "AND NOT r.superseded AND r.analyte_id IN (SELECT id FROM cat) OFFSET 0) "  # by the draw's index
            "ORDER BY d.id")


def tests_sql(spec: FromSql = LB_SQL) -> str:
    """The test's variables (``per_test``) of each test of the catalogue, by rank."""
    return f"{WITH}SELECT {', '.join(_xpt_sql(spec, name) for name in spec.per_test)} FROM cat ORDER BY cat.rank"


@dataclass(frozen=True)
class Draws:
    """The draws with a row in the dataset (a fortieth of its rows at 40 results a draw): their ids in order, the
    rank of each one's subject and of its collection time, and its values of the dataset's draw variables
    (``per_draw``)."""

    ids: npt.NDArray[np.int64]
    subjects: npt.NDArray[np.int64]
    times: npt.NDArray[np.int64]
    values: list[tuple[Any, ...]]

    @classmethod
    def read(cls, spec: FromSql, values: dict[str, Any], db: BaseDatabaseWrapper = connection) -> Draws:
        with db.cursor() as cursor:
            cursor.execute(draws_sql(spec), values)
            rows = cursor.fetchall()
        ids, subjects, times = (np.array([row[i] for row in rows], dtype=np.int64) for i in range(3))
        return cls(ids, subjects, times, [tuple(row[3:]) for row in rows])

    def widths(self, spec: FromSql) -> dict[str, int]:
        """The width of each character variable of the draw (``xpt.text_width`` of its longest value)."""
        numeric = {v.name for v in spec.variables if v.numeric}
        return {name: max(map(text_width, {row[i] for row in self.values}), default=0)
                for i, name in enumerate(spec.per_draw) if name not in numeric}


def _ascii(column: str) -> str:
    return f"octet_length({column}) = char_length({column})"


def _longest(columns: list[str]) -> str:
    """Two columns per column: the octet length of its longest ASCII value, and its distinct values that are not
    ASCII (their width as written, transliterated, is Python's: ``xpt.text_width``)."""
    texts = [f"({c})::text" for c in columns]  # a literal ('LB') is of unknown type
    return ", ".join(f"max(octet_length({c})) FILTER (WHERE {_ascii(c)}), array_agg(DISTINCT {c}) FILTER "
                     f"(WHERE NOT {_ascii(c)})" for c in texts)


def _free_rows(spec: FromSql) -> str:
    """The dataset's rows (unordered) with its free texts as f0, f1, ... and whether each is the baseline (``OFFSET
    0``: each computed once per row, not once per use). The results are found by their subject, which is their
    draw's (the database checks it: ``assays.models.Result``), rather than by a join to the draws."""
    free = ", ".join(f"({spec.expressions[name]})::text AS f{i}" for i, name in enumerate(spec.free))
    return (f"SELECT r.*, r.id IN (SELECT id FROM base) AS in_base, {free} FROM {Result._meta.db_table} r "
            "JOIN cat ON cat.id = r.analyte_id LEFT JOIN std ON std.value_text = r.value_text AND r.value IS NULL "
            "WHERE r.subject_id = ANY(%(s_id)s::bigint[]) AND NOT r.superseded OFFSET 0")


def widths_sql(spec: FromSql = LB_SQL) -> str:
    """The query of the widths of the character variables that are not the draw's (``fitted``; those are measured
    on ``Draws``): one row of ``_longest``'s pairs for the grouped variables, then, per free text, the octet length
    of its longest ASCII value and whether one is not ASCII.

    Computing the grouped variables over every row costs more than the file saves (1,000,000 rows: several
    seconds): the rows are grouped by what they depend on (test, status, flag, grade, whether there is a value,
    whether the row is the baseline), which leaves a few hundred groups, and each grouped variable is computed on
    a row standing for its group (the group's first result id, which is in the baseline as the group is, and its
    least value, NULL as the group's values are). The free texts (LBORRES, LBORRESU, LBSTRESC) are measured on
    every row; those that are not ASCII (rare) are read by a second query (``non_ascii_sql``)."""
    count = range(len(spec.free))
    groups = (
        "SELECT x.analyte_id, x.status, x.flag, x.ctcae_grade, min(x.id) AS id, min(x.value) AS value, "
        + ", ".join(f"max(octet_length(x.f{i})) FILTER (WHERE {_ascii(f'x.f{i}')}) AS w{i}, "
                    f"bool_or(NOT {_ascii(f'x.f{i}')}) AS a{i}" for i in count)
        + f" FROM ({_free_rows(spec)}) x GROUP BY x.analyte_id, x.status, x.flag, x.ctcae_grade, x.value IS NULL, "
        "x.in_base")
    grouped = _longest([spec.expressions[name] for name in spec.grouped])
    free = ", ".join(f"max(r.w{i}), bool_or(r.a{i})" for i in count)
    return f"{WITH}SELECT {grouped}, {free} FROM ({groups}) r JOIN cat ON cat.id = r.analyte_id"


def non_ascii_sql(spec: FromSql = LB_SQL) -> str:
    """The distinct free texts that are not ASCII: (its index in ``free``, the text) rows."""
    texts = ", ".join(f"({i}, x.f{i})" for i in range(len(spec.free)))
    return (f"{WITH}SELECT DISTINCT u.i, u.text FROM ({_free_rows(spec)}) x CROSS JOIN LATERAL (VALUES {texts}) "
            f"AS u(i, text) WHERE NOT {_ascii('u.text')}")


def fitted(ctx: Context, spec: FromSql = LB_SQL, values: dict[str, Any] | None = None,
           draws: Draws | None = None) -> tuple[Variable, ...]:
    """The dataset's variables, each character variable as long as its longest value (``xpt.fit``): those of the
    draw measured on ``draws`` (read when not given), the others by a query (``_widths``) with the parameters of
    the dataset's query (``values``, computed when not given). The XPT measures its own rows instead (``_Spool``);
    this is for define.csv when the XPT is not written."""
    values = params(ctx, spec) if values is None else values
    draws = Draws.read(spec, values) if draws is None else draws
    return _fit(spec, _widths(spec, values), draws)


def _widths(spec: FromSql, values: dict[str, Any], db: BaseDatabaseWrapper = connection) -> dict[str, int]:
    """The width of each character variable that is not the draw's, over the rows of ``values``' subjects, by a
    query on ``db`` (``widths_sql``; a second when a free text is not ASCII)."""
    with db.cursor() as cursor:
        cursor.execute(widths_sql(spec), values)
        found: list[Any] = list(cursor.fetchone())
        others: list[list[str]] = [[] for _ in spec.free]
        if any(found[-1::-2][:len(spec.free)]):
            cursor.execute(non_ascii_sql(spec), values)
            for i, text in cursor.fetchall():
                others[i].append(text)
    found[2 * len(spec.grouped) + 1::2] = others  # the free texts' flags, replaced by their texts that are not ASCII
    return {name: max([found[2 * i] or 0, *(text_width(text) for text in found[2 * i + 1] or ())])
            for i, name in enumerate([*spec.grouped, *spec.free])}


def _fit(spec: FromSql, widths: dict[str, int], draws: Draws) -> tuple[Variable, ...]:
    """The dataset's variables fitted to ``widths`` and to the draws' own."""
    widths = {**widths, **draws.widths(spec)}
    return fit(spec.variables, [widths.get(v.name, 0) for v in spec.variables])


def pc_fitted(ctx: Context) -> tuple[Variable, ...]:
    return fitted(ctx, PC_SQL)


def _tests(spec: FromSql, values: dict[str, Any]) -> list[tuple[Any, ...]]:
    with connection.cursor() as cursor:
        cursor.execute(tests_sql(spec), values)
        return cursor.fetchall()


@dataclass
class _Layout:
    """Where each variable goes in a row of the file, and the tables the draw's and the test's variables are
    gathered from (one encoded line per draw, per test)."""

    variables: tuple[Variable, ...]
    draws: Draws
    draw_lines: npt.NDArray[np.uint8]
    test_lines: npt.NDArray[np.uint8]
    offsets: dict[str, int] = field(init=False)
    width: int = field(init=False)

    def __post_init__(self) -> None:
        self.offsets, position = {}, 0
        for v in self.variables:
            self.offsets[v.name] = position
            position += v.length
        self.width = position

    def gathers(self, names: tuple[str, ...]) -> list[tuple[int, int, int]]:
        """(place in the row, place in the table's line, length) of each of ``names``, in the table's order; two
        that follow each other both in the row and in the line are copied as one (STUDYID, DOMAIN and USUBJID;
        VISITNUM to --DY)."""
        lengths = {v.name: v.length for v in self.variables}
        out: list[tuple[int, int, int]] = []
        source = 0
        for name in names:
            target, length = self.offsets[name], lengths[name]
            if out and out[-1][0] + out[-1][2] == target and out[-1][1] + out[-1][2] == source:
                out[-1] = (out[-1][0], out[-1][1], out[-1][2] + length)
            else:
                out.append((target, source, length))
            source += length
        return out


def _xpt_chunks(ctx: Context, spec: FromSql, record: Record | None) -> Iterator[bytes]:
    """The header, then the observations of each part of the subjects (``parts``), then the blanks that end the
    file's last record. Each part's rows are read once, on its own connection, and spooled as far encoded as they
    can be before the widths of the file are known (``_Spool``), which measures them; the two parts are read at the
    same time. The file's variables are then fitted to both (``_variables``) and the spools copied into the
    file's rows (``_Encoding``)."""
    values = params(ctx, spec, texts=False)
    query = xpt_values_sql(spec)
    tests = _tests(spec, values)
    first, *rest = parts(ctx, values)
    if not rest:
        with closing(_read_part(spec, query, first)) as spool:
            yield from _xpt_file(spec, record, tests, [spool])
        return
    assert ctx.scope.snapshot is not None  # parts() cut only with a snapshot to share
    theirs: Future[_Spool] = Future()  # the second part's rows, spooled
    stopped = threading.Event()  # the file ended (or failed): the second part stops at its next chunk

    def halted() -> None:
        if stopped.is_set():
            raise _Stopped("The file ended before its second part was read.")

    def their_failure() -> None:  # the first part stops at its next chunk when the second has failed
        if theirs.done() and (err := theirs.exception()) is not None:
            raise err

    def second(db: BaseDatabaseWrapper) -> Iterator[bytes]:
        try:
            theirs.set_result(_read_part(spec, query, rest[0], db, check=halted))
        except BaseException as err:
            theirs.set_exception(err)
            raise
        return iter(())

    try:
        with beside(ctx.scope.snapshot, second) as other:
            try:
                with closing(_read_part(spec, query, first, check=their_failure)) as mine, \
                        closing(other.result(theirs)) as yours:
                    yield from _xpt_file(spec, record, tests, [mine, yours])
            finally:
                stopped.set()
    finally:  # the second part's spool, when this part failed after that one was read
        if theirs.done() and theirs.exception() is None:
            theirs.result().close()


class _Stopped(Exception):
    """A part's reading stopped because the file ended without it."""


def _read_part(spec: FromSql, query: str, values: dict[str, Any], db: BaseDatabaseWrapper = connection, *,
               check: Callable[[], None] = lambda: None) -> _Spool:
    """A part's draws, then its rows, spooled (``_Spool``), read on ``db``; ``check`` is called at each chunk of
    rows, and may stop the reading by raising."""
    spool = _Spool(spec, Draws.read(spec, values, db), len(values["c_id"]))
    try:
        # Closed here, on failure too: its cursor and its fetches end before the connection does.
        with closing(_server_side_chunks(db, query, with_texts(values, db))) as chunks:
            spool.fill(chunks, check)
    except BaseException:
        spool.close()
        raise
    return spool


def _variables(spec: FromSql, tests: list[tuple[Any, ...]], spools: list[_Spool]) -> tuple[Variable, ...]:
    """The dataset's variables, each character variable as long as its longest value in the parts' spools: those of
    the row measured on its rows, those of the draw on its draws (``Draws.widths``), those of the test on the tests
    with a row."""
    widths: dict[str, int] = {}

    def longest(name: str, width: int) -> None:
        widths[name] = max(widths.get(name, 0), width)

    tested = np.zeros(len(tests), dtype=bool)
    for spool in spools:
        for j, measured in zip(spool.texts, spool.widths, strict=True):
            longest(spec.per_row[j].name, int(measured))
        for name, width in spool.draws.widths(spec).items():
            longest(name, width)
        tested |= spool.tested
    numeric = {v.name for v in spec.variables if v.numeric}
    for i, name in enumerate(spec.per_test):
        if name not in numeric:
            longest(name, max((text_width(tests[rank][i]) for rank in np.flatnonzero(tested)), default=0))
    return fit(spec.variables, [widths.get(v.name, 0) for v in spec.variables])


def _xpt_file(spec: FromSql, record: Record | None, tests: list[tuple[Any, ...]], spools: list[_Spool]
              ) -> Iterator[bytes]:
    """The file: the header of its variables (given to ``record`` first), the observations of each spool, the last
    blanks."""
    variables = _variables(spec, tests, spools)
    if record is not None:
        record(variables)
    yield header(spec.dataset.name, spec.dataset.label, variables)
    written = 0
    for spool in spools:
        for chunk in _Encoding.of(spec, variables, spool.draws, tests).observations(spool):
            written += len(chunk)
            yield chunk
    yield b" " * (-written % RECORD)


class _Spool:
    """One part's rows of the XPT's query (``xpt_values_sql``, in subject order), each subject's put in order and
    numbered, then encoded as far as they can be before the file's widths are known, and kept (in memory up to
    ``SPOOL_MEMORY``, then in a temporary file: some 60 bytes a row of LB) until they are. A batch of rows is kept as
    its draws and tests (indexes into ``draws`` and the tests), its numbers (--SEQ first) as IBM doubles, and its
    texts as a table as wide as its own longest values (``xpt.text_table``). ``widths`` is the longest text of each
    of the row's own character variables (``texts``, indexes into ``per_row``), ``tested`` the tests with a row."""

    def __init__(self, spec: FromSql, draws: Draws, tests: int) -> None:
        self.spec, self.draws = spec, draws
        per_row = spec.per_row
        self.numeric = np.array([j for j, v in enumerate(per_row) if v.numeric], dtype=np.intp)
        self.texts = np.array([j for j, v in enumerate(per_row) if not v.numeric], dtype=np.intp)
        self._lengths = np.array([per_row[j].length for j in self.texts], dtype=np.intp)
        self.widths = np.zeros(len(self.texts), dtype=np.intp)
        self.tested = np.zeros(tests, dtype=bool)
        self._batches: list[tuple[int, tuple[int, ...]]] = []  # rows, and the widths of their texts' table
        self._file: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY)  # noqa: SIM115  (in close)

    def fill(self, chunks: Iterator[list[bytes]], check: Callable[[], None] = lambda: None) -> None:
        """Spool the query's rows (``chunks``): each subject's rows are spooled at once, a batch of complete
        subjects at a time; ``check()`` after each chunk read (it may raise, to stop)."""
        draws = self.draws
        after = -1  # the subject of the last row spooled: every subject's rows are spooled at once
        held: list[bytes] = []  # the rows of the last subject read, which may go on in the next chunk
        while True:
            read = next(chunks, None)
            check()
            last = read is None
            if read and held and not last and _same_subject(draws, held[0], read[-1]):
                held += read  # the held subject goes on through the chunk: nothing to spool yet
                continue
            records = held + (read or [])
            if not records:
                break
            data = np.frombuffer(b"".join(records), dtype=np.uint8)
            ends = np.cumsum(np.fromiter(map(len, records), dtype=np.intp, count=len(records)))
            starts, sizes = _fields(data, ends, 3 + len(self.spec.per_row))
            ids = unaligned(data, ">i8")[starts[0]]
            draw = np.minimum(np.searchsorted(draws.ids, ids), len(draws.ids) - 1)
            if not (draws.ids[draw] == ids).all():
                raise ValueError("A row's draw is not among the dataset's draws.")
            subjects = draws.subjects[draw]
            order, done = _in_order(subjects, unaligned(data, ">i4")[starts[1]], draws.times[draw],
                                    unaligned(data, ">i8")[starts[2]], last=last, after=after)
            held = records[done:]
            if done:
                self._spool(data, starts[:, order], sizes[:, order], draw[order], subjects[order])
                after = int(subjects[order[-1]])
            if last:
                break

    def _spool(self, data: npt.NDArray[np.uint8], starts: npt.NDArray[np.intp], sizes: npt.NDArray[np.intp],
               draw: npt.NDArray[np.intp], subjects: npt.NDArray[np.int64]) -> None:
        test = unaligned(data, ">i4")[starts[1]].astype(np.int32)
        self.tested[test] = True
        numbers = np.empty((1 + len(self.numeric), len(draw)), dtype=">u8")
        numbers[0] = ibm_floats(_sequence(subjects))
        for i, j in enumerate(self.numeric, start=1):
            numbers[i] = ibm_numbers(data, starts[3 + j], sizes[3 + j])
        table, widths = text_table(data, starts[3 + self.texts].T, sizes[3 + self.texts].T, self._lengths)
        np.maximum(self.widths, widths, out=self.widths)
        for array in (draw.astype(np.int32), test, numbers, table):
            self._file.write(array.tobytes())
        self._batches.append((len(draw), tuple(int(w) for w in widths)))

    def batches(self) -> Iterator[tuple[npt.NDArray[np.int32], npt.NDArray[np.int32], npt.NDArray[np.uint64],
                                        npt.NDArray[np.uint8], tuple[int, ...]]]:
        """The spooled batches: draws, tests, numbers, the texts' table and its widths."""
        self._file.seek(0)
        count = 1 + len(self.numeric)
        for rows, widths in self._batches:
            block = self._file.read(rows * (8 + 8 * count + sum(widths)))
            yield (np.frombuffer(block, dtype=np.int32, count=rows),
                   np.frombuffer(block, dtype=np.int32, count=rows, offset=4 * rows),
                   np.frombuffer(block, dtype=">u8", count=count * rows, offset=8 * rows).reshape(count, rows),
                   np.frombuffer(block, dtype=np.uint8, offset=8 * rows * (1 + count)).reshape(rows, sum(widths)),
                   widths)

    def close(self) -> None:
        self._file.close()


@dataclass
class _Encoding:
    """How a spool's batches become observations: the row's own numbers and texts copied into their places, those
    of its draw and its test from their encoded lines (``_Layout``)."""

    spec: FromSql
    layout: _Layout

    @classmethod
    def of(cls, spec: FromSql, variables: tuple[Variable, ...], draws: Draws, tests: list[tuple[Any, ...]]
           ) -> _Encoding:
        by_name = {v.name: v for v in variables}
        return cls(spec, _Layout(variables, draws, encoded([by_name[n] for n in spec.per_draw], draws.values),
                                 encoded([by_name[n] for n in spec.per_test], tests)))

    def observations(self, spool: _Spool) -> Iterator[bytes]:
        """The observations of the spool's rows, a batch at a time."""
        layout, per_row = self.layout, self.spec.per_row
        numbers = [layout.offsets[self.spec.sequence], *(layout.offsets[per_row[j].name] for j in spool.numeric)]
        texts = [layout.offsets[per_row[j].name] for j in spool.texts]
        draw_gathers, test_gathers = layout.gathers(self.spec.per_draw), layout.gathers(self.spec.per_test)
        for draw, test, words, table, widths in spool.batches():
            out = np.full((len(draw), layout.width), BLANK, dtype=np.uint8)
            for i, offset in enumerate(numbers):
                out[:, offset:offset + 8] = words[i].view(np.uint8).reshape(-1, 8)
            place_table(out, texts, table, widths)
            for lines, index, gathers in ((layout.draw_lines, draw, draw_gathers),
                                          (layout.test_lines, test, test_gathers)):
                taken = lines.take(index, axis=0)  # each row's line, gathered once, then copied piece by piece
                for target, source, length in gathers:
                    out[:, target:target + length] = taken[:, source:source + length]
            yield out.tobytes()


def _same_subject(draws: Draws, first: bytes, last: bytes) -> bool:
    """Whether two rows (``record_send``) are of the same subject: each row's first field, its draw's id, is at byte
    12 of it (after the field count, the field's OID and size). The rows come in subject order, so the rows between
    are of that subject too (``_in_order`` checks the order when they are written)."""
    ids = np.array([int.from_bytes(first[12:20], "big", signed=True), int.from_bytes(last[12:20], "big", signed=True)])
    draw = np.minimum(np.searchsorted(draws.ids, ids), len(draws.ids) - 1)
    return bool(draws.subjects[draw[0]] == draws.subjects[draw[1]])


def _in_order(subjects: npt.NDArray[np.int64], tests: npt.NDArray[np.int32], times: npt.NDArray[np.int64],
              results: npt.NDArray[np.int64], *, last: bool, after: int) -> tuple[npt.NDArray[np.intp], int]:
    """The rows read so far, which come in subject order (the draws' order), put in the dataset's order (subject,
    test, collection time, result): the order of the rows of the subjects that are complete, and how many they are
    (all, at the ``last`` chunk; otherwise all but the last subject's, which may go on in the next chunk). ``after``
    is the subject written last: a row of it or of an earlier subject means the query did not keep the order."""
    if len(subjects) and ((np.diff(subjects) < 0).any() or subjects[0] <= after):
        raise ValueError("The rows did not come in subject order.")
    done = len(subjects) if last else int(np.searchsorted(subjects, subjects[-1]))
    order = np.lexsort((results[:done], times[:done], tests[:done], subjects[:done]))
    return order, done


def _sequence(subjects: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    """--SEQ of rows in the dataset's order, each subject's rows all among them: each row's place among its
    subject's rows, from 1."""
    position = np.arange(len(subjects))
    new = np.ones(len(subjects), dtype=bool)
    new[1:] = subjects[1:] != subjects[:-1]
    return (position - np.maximum.accumulate(np.where(new, position, 0)) + 1).astype(np.float64)


def _server_side_chunks(db: BaseDatabaseWrapper, sql: str, values: dict[str, Any], *, ahead: int = 1
                        ) -> Generator[list[bytes], None, None]:
    """The query's single column (binary), ``XPT_CHUNK`` rows at a time, from a server-side cursor of ``db`` (the
    export's connection or the second one); up to ``ahead`` chunks are fetched (PostgreSQL works, psycopg waits
    without the GIL) while the caller encodes the current one."""
    with db.chunked_cursor() as cursor, ThreadPoolExecutor(max_workers=1) as fetcher:
        cursor.cursor.execute(sql, values, binary=True)  # psycopg's own cursor: bytea as it is
        fetch = partial(cursor.cursor.fetchmany, XPT_CHUNK)  # one fetch at a time, in order
        pending = deque(fetcher.submit(fetch) for _ in range(ahead))
        try:
            while rows := pending.popleft().result():
                pending.append(fetcher.submit(fetch))
                yield [record for (record,) in rows]
            for left in pending:  # past the end: each fetch gives no rows
                left.result()
        finally:
            for left in pending:  # stopped early: the fetches not begun are not made
                left.cancel()


def _fields(data: npt.NDArray[np.uint8], ends: npt.NDArray[np.intp], count: int
            ) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    """Where each field of each ``record_send`` row starts and its size (-1: NULL), a variable a line: a row is a
    32-bit field count, then each field as its type's 32-bit OID, its 32-bit size and its bytes, all big-endian."""
    words = unaligned(data, ">i4")
    starts = np.empty((count, len(ends)), dtype=np.intp)
    sizes = np.empty((count, len(ends)), dtype=np.intp)
    position = np.concatenate(([0], ends[:-1])) + 4
    for j in range(count):
        sizes[j] = words[position + 4]
        starts[j] = position = position + 8
        position = position + np.maximum(sizes[j], 0)
    if not (position == ends).all():
        raise ValueError("A row does not hold the query's columns.")
    return starts, sizes
