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
LBSEQ as a window function over the dataset's order, LBLOBXFL from the set of baselines (``BASE``), numbers
as ``codes.number_text`` writes them (those of the catalogue and ranges once per row of them).

The XPT's character variables are as long as their longest values (``fitted``): measured by two queries
before the file's (``widths_sql``), the header coming first.

PostgreSQL quotes a CSV field holding a carriage return, the csv module (lines ended by LF) does not: a line
PostgreSQL quoted (one holding a double quote) is written again by the csv module.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import numpy.typing as npt
from django.db import connection

from assays.models import LabDraw, Result
from exports.formats.csv_results import Block, python_float_sql
from exports.sdtm.codes import SPECIMEN, catalogue
from exports.sdtm.common import Context, Dataset, subject_key
from exports.sdtm.findings import CANCELLED, DATASETS, NRIND, PC_ANALYTES
from exports.sdtm.xpt import RECORD, Variable, fit, header, observations, text_width, unaligned
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
    # The character variables of the draw (``widths_sql``) and the texts of the result itself (not the same for
    # every result of a test, status, flag and grade). Any other character variable may read of the result only
    # its test, status, flag, grade, whether it has a value and whether it is the baseline (``grouped``).
    per_draw: tuple[str, ...] = ()
    free: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if list(self.expressions) != [v.name for v in self.variables] or not set(self.texts) <= set(self.expressions):
            raise ValueError(f"The SQL of {self.dataset.name} does not have the dataset's variables.")
        texts = {v.name for v in self.variables if not v.numeric}
        if not set(self.per_draw) | set(self.free) <= texts or set(self.per_draw) & set(self.free):
            raise ValueError(f"{self.dataset.name}: per-draw and free variables are distinct character variables.")

    @property
    def grouped(self) -> tuple[str, ...]:
        """The other character variables: the same for every result of a group (``widths_sql``)."""
        return tuple(v.name for v in self.variables
                     if not v.numeric and v.name not in self.per_draw and v.name not in self.free)

    @property
    def variables(self) -> tuple[Variable, ...]:
        return self.dataset.variables


STRESN_TEXT = f"(CASE WHEN {MEASURED} AND r.censored = '' THEN {number_sql('r.value')} END)"
LB_SQL = FromSql(LB, EXPRESSIONS, ("LBSEQ", "VISITNUM", "LBDY"), pc=False, texts={
    "LBSTRESN": STRESN_TEXT, "LBSTNRLO": f"(CASE WHEN {MEASURED} THEN cat.low_texts[d.profile + 1] END)",
    "LBSTNRHI": f"(CASE WHEN {MEASURED} THEN cat.high_texts[d.profile + 1] END)"},
    per_draw=("USUBJID", "LBREFID", "LBSPEC", "VISIT", "LBDTC"), free=("LBORRES", "LBORRESU", "LBSTRESC"))
PC_SQL = FromSql(PC, PC_EXPRESSIONS, ("PCSEQ", "VISITNUM", "PCDY"), pc=True,
                 texts={"PCSTRESN": STRESN_TEXT, "PCLLOQ": "cat.lloq_text"},
                 per_draw=("USUBJID", "PCREFID", "PCSPEC", "VISIT", "PCDTC"), free=("PCORRES", "PCORRESU", "PCSTRESC"))


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
    columns, made at the level of the ORDER BY, so the order is the query's own."""
    inner = [c for c in columns if SEQ not in c]
    outer = ", ".join(c if SEQ in c else f"x.c{inner.index(c)}" for c in columns)
    outer = f"record_send(ROW({outer}))" if record else outer
    return (
        f"{WITH}SELECT {outer} FROM (SELECT * FROM draws ORDER BY subject_rank) d CROSS JOIN LATERAL ("
        f"SELECT {', '.join(f'{c} AS c{i}' for i, c in enumerate(inner))}, cat.rank AS test_rank, r.id AS result_id "
        f"FROM {Result._meta.db_table} r JOIN cat ON cat.id = r.analyte_id "
        "LEFT JOIN std ON std.value_text = r.value_text AND r.value IS NULL "
        "WHERE r.draw_id = d.id AND NOT r.superseded OFFSET 0) x "
        "ORDER BY d.subject_rank, x.test_rank, d.collected_at, x.result_id")


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


def _standard_texts(subject_ids: list[int]) -> dict[str, list[Any]]:
    """``str.strip().upper()`` of the non-numeric result texts that are not printable ASCII (one query)."""
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT DISTINCT value_text FROM {Result._meta.db_table} WHERE subject_id = ANY(%s) "
                       "AND value IS NULL AND value_text !~ %s", [subject_ids, PRINTABLE_ASCII])
        texts = [text for (text,) in cursor.fetchall()]
    return {"t_value": texts, "t_text": [text.strip().upper() for text in texts]}


def params(ctx: Context, spec: FromSql = LB_SQL) -> dict[str, Any]:
    """The query's parameters: subjects, catalogue, ranges, visits and standard texts (see the docstring)."""
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
        "r_high": [r[3] for r in ranges], **_visit_days(ctx, ids), **_standard_texts(ids),
    }


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
    with connection.cursor() as cursor, cursor.cursor.copy(query, params(ctx, spec)) as copy:
        lines: list[Block] = []
        size = 0
        for block in copy:  # one line per block
            lines.append(block)
            size += len(block)
            if size >= FLUSH:
                yield _as_csv_module(lines)
                lines, size = [], 0
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


def xpt_values_sql(spec: FromSql = LB_SQL) -> str:
    """The query of the XPT: one ``bytea`` per row, its variables in PostgreSQL's binary form (``record_send``): texts
    unpadded (``xpt.observations`` pads them; blank padding by PostgreSQL quadrupled the bytes it sends), numbers as
    doubles (NULL is missing). A chunk of rows is then a few Python objects, not one per value."""
    return _select([f"({spec.expressions[v.name]})::float8" if v.numeric else spec.expressions[v.name]
                    for v in spec.variables], record=True)


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


def widths_sql(spec: FromSql = LB_SQL) -> tuple[str, str]:
    """The two queries of the widths of the character variables (``fitted``), each one row of ``_longest``'s pairs
    (the second one then, per free text, whether one is not ASCII).

    The variables of the draw (``per_draw``), over the draws with a row in the dataset; then, over the rows, the
    other variables (``grouped``, then ``free``). Computing each over every row costs more than the file saves
    (1,000,000 rows: several seconds): the rows are grouped by what the grouped variables depend on (test,
    status, flag, grade, whether there is a value, whether the row is the baseline), which leaves a few hundred
    groups, and each grouped variable is computed on a row standing for its group (the group's first result id,
    which is in the baseline as the group is, and its least value, NULL as the group's values are). The free
    texts (LBORRES, LBORRESU, LBSTRESC) are measured on every row; those that are not ASCII (rare) are read by a
    third query (``non_ascii_sql``)."""
    draws = (f"{WITH}SELECT {_longest([spec.expressions[name] for name in spec.per_draw])} FROM draws d WHERE EXISTS "
             f"(SELECT FROM {Result._meta.db_table} r WHERE r.draw_id = d.id AND NOT r.superseded "
             "AND r.analyte_id IN (SELECT id FROM cat) OFFSET 0)")  # each draw's results by its index, to the first
    count = range(len(spec.free))
    groups = (
        "SELECT x.analyte_id, x.status, x.flag, x.ctcae_grade, min(x.id) AS id, min(x.value) AS value, "
        + ", ".join(f"max(octet_length(x.f{i})) FILTER (WHERE {_ascii(f'x.f{i}')}) AS w{i}, "
                    f"bool_or(NOT {_ascii(f'x.f{i}')}) AS a{i}" for i in count)
        + f" FROM ({_free_rows(spec)}) x GROUP BY x.analyte_id, x.status, x.flag, x.ctcae_grade, x.value IS NULL, "
        "x.in_base")
    grouped = _longest([spec.expressions[name] for name in spec.grouped])
    free = ", ".join(f"max(r.w{i}), bool_or(r.a{i})" for i in count)
    return draws, f"{WITH}SELECT {grouped}, {free} FROM ({groups}) r JOIN cat ON cat.id = r.analyte_id"


def non_ascii_sql(spec: FromSql = LB_SQL) -> str:
    """The distinct free texts that are not ASCII: (its index in ``free``, the text) rows."""
    texts = ", ".join(f"({i}, x.f{i})" for i in range(len(spec.free)))
    return (f"{WITH}SELECT DISTINCT u.i, u.text FROM ({_free_rows(spec)}) x CROSS JOIN LATERAL (VALUES {texts}) "
            f"AS u(i, text) WHERE NOT {_ascii('u.text')}")


def fitted(ctx: Context, spec: FromSql = LB_SQL, values: dict[str, Any] | None = None) -> tuple[Variable, ...]:
    """The dataset's variables, each character variable as long as its longest value (``xpt.fit``): two queries
    (``widths_sql``; a third when a free text is not ASCII) with the parameters of the dataset's query (``values``,
    computed when not given)."""
    values = params(ctx, spec) if values is None else values
    found: list[Any] = []
    with connection.cursor() as cursor:
        for sql in widths_sql(spec):
            cursor.execute(sql, values)
            found.extend(cursor.fetchone())
        others: list[list[str]] = [[] for _ in spec.free]
        if any(found[-1::-2][:len(spec.free)]):
            cursor.execute(non_ascii_sql(spec), values)
            for i, text in cursor.fetchall():
                others[i].append(text)
    pairs = len(spec.per_draw) + len(spec.grouped)
    found[2 * pairs + 1::2] = others  # the free texts' flags, replaced by their texts that are not ASCII
    names = [*spec.per_draw, *spec.grouped, *spec.free]
    widths = {name: max([found[2 * i] or 0, *(text_width(text) for text in found[2 * i + 1] or ())])
              for i, name in enumerate(names)}
    return fit(spec.variables, [widths.get(v.name, 0) for v in spec.variables])


def pc_fitted(ctx: Context) -> tuple[Variable, ...]:
    return fitted(ctx, PC_SQL)


def _xpt_chunks(ctx: Context, spec: FromSql, record: Record | None) -> Iterator[bytes]:
    """The header, then the observations of each chunk of rows encoded at once (``xpt.observations``)."""
    values = params(ctx, spec)
    variables = fitted(ctx, spec, values)
    if record is not None:
        record(variables)
    yield header(spec.dataset.name, spec.dataset.label, variables)
    written = 0
    for records in _server_side_chunks(xpt_values_sql(spec), values):
        data = np.frombuffer(b"".join(records), dtype=np.uint8)
        ends = np.cumsum(np.fromiter(map(len, records), dtype=np.intp, count=len(records)))
        encoded = observations(variables, data, *_fields(data, ends, len(variables)))
        written += len(encoded)
        yield encoded
    yield b" " * (-written % RECORD)


def _server_side_chunks(sql: str, values: dict[str, Any]) -> Iterator[list[bytes]]:
    """The query's single column (binary), ``XPT_CHUNK`` rows at a time, from a server-side cursor; the next chunk
    is fetched (PostgreSQL works, psycopg waits without the GIL) while the caller encodes the current one."""
    with connection.chunked_cursor() as cursor, ThreadPoolExecutor(max_workers=1) as fetcher:
        cursor.cursor.execute(sql, values, binary=True)  # psycopg's own cursor: bytea as it is
        fetch = partial(cursor.cursor.fetchmany, XPT_CHUNK)  # one fetch at a time, in order
        pending = fetcher.submit(fetch)
        while rows := pending.result():
            pending = fetcher.submit(fetch)
            yield [record for (record,) in rows]


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
