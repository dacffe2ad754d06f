"""An export's large files read in two parts, the second on another connection importing the export's snapshot
(``exports.snapshot``), are the files read in one part; the second connection sees what the export's transaction
sees, not what was committed after; its failure fails the file; a reader stopped early is cancelled.

These tests commit their data (``transaction=True``): another connection never sees a test transaction's writes."""

from __future__ import annotations

import csv
import dataclasses
import io
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pgtrigger
import pytest
from django.db import connection, connections, transaction

from assays.models import LabDraw, Result
from assays.services import ingest_results
from exports.crf import form_named
from exports.formats import csv_results
from exports.formats.csv_format import generic_form_chunks
from exports.models import State
from exports.sdtm import DATASETS, generic_csv_chunks, generic_xpt_chunks, lb_sql
from exports.services import create_export_job, run_export_job
from exports.snapshot import begin_sql, beside, halves
from patients.models import Subject
from tests.conftest import seed_catalogue
from tests.exports.conftest import package, stored_files
from tests.exports.test_sdtm import export, lab, scope_of, trial  # noqa: F401  (the small trial of the SDTM tests)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("restore_catalogue", "catalogue")]
FILES = ("sdtm/lb.csv", "sdtm/lb.xpt", "sdtm/pc.csv", "sdtm/pc.xpt")


@pytest.fixture
def catalogue(django_db_setup: Any, django_db_blocker: Any) -> None:
    """The catalogue the previous test's flush emptied, seeded again before the trial is built."""
    with django_db_blocker.unblock():
        seed_catalogue()


def cut_in_two(module: Any, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every file ``module`` writes in parts cut in two, whatever its size; the snapshots the second parts read."""
    monkeypatch.setattr(module, "SPLIT_MIN_DRAWS", 0)
    snapshots: list[str] = []
    real = module.beside

    def recorded(snapshot: str, produce: Any) -> Any:
        snapshots.append(snapshot)
        return real(snapshot, produce)

    monkeypatch.setattr(module, "beside", recorded)
    return snapshots


@pytest.fixture
def in_two_parts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every LB and PC file cut in two."""
    return cut_in_two(lb_sql, monkeypatch)


@pytest.mark.parametrize("pace", ["even", "slow here", "slow there"])
def test_lb_and_pc_in_two_parts_are_the_files_of_one_part(trial: Any, export_dir: Any,  # noqa: F811
                                                         in_two_parts: list[str], monkeypatch: pytest.MonkeyPatch,
                                                         pace: str) -> None:
    """Each connection reads and spools its part, at the same time, measuring its widths: the file's are the larger
    of the two, whichever connection ends first."""
    if pace != "even":
        read = lb_sql._read_part

        def slow(spec: Any, query: str, values: Any, db: Any = connection, **how: Any) -> Any:
            if (db is connection) == (pace == "slow here"):
                time.sleep(0.5)
            return read(spec, query, values, db, **how)

        monkeypatch.setattr(lb_sql, "_read_part", slow)
    # Results on both sides of the cut, each side with a text whose standard form is Python's (not ASCII): each
    # part reads its own subjects' standard texts.
    for subject, text in ((trial.split, "Spuren \u00b5 \u2265 \u00df"), (trial.reinf, "  n\u00e9gatif \ufb01 ")):
        ref = f"P-{subject.code}-"
        ingest_results(by=trial.coordinator, rows=[
            lab(subject, ref + "1", -8, "ANC", "3000", "/uL"), lab(subject, ref + "2", -6, "CRP", "4", "mg/L"),
            lab(subject, ref + "3", 9, "CAR_QPCR", "900", "copies/ug")])
        with pgtrigger.ignore("assays.Result:result_no_rewrite"):  # stored results are append-only
            Result.objects.filter(subject=subject, source_ref=ref + "2").update(value_text=text, value=None)
    job = run_export_job(create_export_job(by=trial.data_manager, trial=trial.trial, format_code="sdtm").pk)
    assert job.state == State.DONE, job.error
    with package(job) as archive:
        written = {name: archive.read(name) for name in FILES}
    assert len(in_two_parts) == 4 and len(set(in_two_parts)) == 1  # each file cut, on the job's one snapshot
    # The same files read in one part (no snapshot to share) with the job's cut-off, and by the generic writers.
    scope = dataclasses.replace(scope_of(trial, trial.data_manager), cutoff=job.cutoff)
    assert scope.snapshot is None
    one_part = export(scope)
    for name in FILES:
        assert written[name] == one_part[name], name
    lb, pc = (next(d for d in DATASETS if d.name == name) for name in ("LB", "PC"))
    assert written["sdtm/lb.csv"] == b"".join(generic_csv_chunks(lb, scope))
    assert written["sdtm/pc.xpt"] == b"".join(generic_xpt_chunks(pc, scope))
    # Both parts hold rows: the split subjects' rows and the re-infused subject's.
    usubjids = {line.split(b",")[2].decode() for line in written["sdtm/lb.csv"].splitlines()[1:]}
    for subject in (trial.split, trial.reinf):
        assert any(u.endswith(f"-{subject.code}") for u in usubjids), subject.code
    text = written["sdtm/lb.csv"].decode()
    # str.strip().upper(), as the generic writer: the micro sign becomes a capital mu, the ligature two letters.
    assert "SPUREN \u039c \u2265 SS" in text and "N\u00c9GATIF FI" in text


@pytest.mark.parametrize("selected", [False, True])
def test_the_results_csv_in_two_parts_is_the_file_of_one_part(trial: Any, export_dir: Any,  # noqa: F811
                                                              monkeypatch: pytest.MonkeyPatch, selected: bool) -> None:
    """The CSV export's results file, cut by subject like LB: the second part read on another connection on the
    job's snapshot; the file is the generic path's. The whole trial: results on both sides of the cut. Two
    selected subjects, the second (in code order) without draws: cut between them, the second part empty."""
    snapshots = cut_in_two(csv_results, monkeypatch)
    chosen = (trial.split, trial.other) if selected else None
    job = run_export_job(create_export_job(by=trial.data_manager, trial=trial.trial, format_code="csv",
                                           subject_codes=None if chosen is None else [s.code for s in chosen]).pk)
    assert job.state == State.DONE, job.error
    with package(job) as archive:
        written = archive.read("csv/results.csv")
    assert len(snapshots) == 1
    scope = dataclasses.replace(scope_of(trial, trial.data_manager), cutoff=job.cutoff,
                                subject_ids=None if chosen is None else tuple(s.pk for s in chosen))
    assert written == b"".join(generic_form_chunks(form_named("results"), scope))
    # Where the subjects were cut (by their draws, in code order).
    first, second = csv_results.parts(dataclasses.replace(scope, snapshot=snapshots[0]))
    assert first is not None and second is not None and first[1] == second[0]
    ranked = sorted({row["subject"] for row in csv.DictReader(io.StringIO(written.decode()))})
    if chosen is not None:
        assert not LabDraw.objects.filter(subject=trial.other).exists()
        assert (first, second) == ((0, 1), (1, 2)) and ranked == [trial.split.code]
        return
    codes = list(Subject.objects.filter(trial=trial.trial, site_id__in=scope.site_ids).order_by("code")
                 .values_list("code", flat=True))
    ranks = {codes.index(code) + 1 for code in ranked}
    assert any(r <= first[1] for r in ranks) and any(r > first[1] for r in ranks), (ranked, first)


def test_with_the_second_connection_off_no_snapshot_is_shared(trial: Any, export_dir: Any,  # noqa: F811
                                                               in_two_parts: list[str], settings: Any) -> None:
    settings.EXPORTS_SECOND_CONNECTION = False
    job = run_export_job(create_export_job(by=trial.data_manager, trial=trial.trial, format_code="sdtm").pk)
    assert job.state == State.DONE, job.error
    assert in_two_parts == []


def test_parts_cut_the_subjects_by_their_draws_only_with_a_snapshot_to_share(trial: Any,  # noqa: F811
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from exports.sdtm.common import Context

    monkeypatch.setattr(lb_sql, "SPLIT_MIN_DRAWS", 0)
    scope = scope_of(trial, trial.data_manager)
    ctx = Context(scope)
    values = lb_sql.params(ctx)
    assert lb_sql.parts(ctx, values) == [values]  # no snapshot: one part
    ctx.scope = dataclasses.replace(scope, snapshot="00000003-00000002-1")
    first, second = lb_sql.parts(ctx, values)
    assert first["s_id"] + second["s_id"] == values["s_id"] and first["s_id"] and second["s_id"]
    assert first["s_rank"] + second["s_rank"] == values["s_rank"]
    assert first["c_id"] == second["c_id"] == values["c_id"]  # everything not per subject is whole in each
    monkeypatch.setattr(lb_sql, "SPLIT_MIN_DRAWS", 10**6)
    assert lb_sql.parts(ctx, values) == [values]  # a small file: one part


@pytest.mark.parametrize(("weights", "cut"), [([1, 1, 1, 1], 2), ([10, 1, 1], 1), ([1, 1, 10], 2), ([0, 0], 1),
                                              ([5], 1), ([], 0), ([3, 1, 1, 1], 1), ([1, 2, 3, 4], 3)])
def test_halves_cuts_where_half_the_weight_is_reached(weights: list[int], cut: int) -> None:
    assert halves(weights) == cut


@pytest.mark.parametrize("where", ["there", "here"])
def test_a_failure_on_either_connection_fails_the_job_and_leaves_no_file(
        trial: Any, export_dir: Any, in_two_parts: list[str], monkeypatch: pytest.MonkeyPatch,  # noqa: F811
        where: str) -> None:
    read = lb_sql._read_part

    def failing(spec: Any, query: str, values: Any, db: Any = connection, **how: Any) -> Any:
        if (db is connection) == (where == "here"):
            with db.cursor() as cursor:
                cursor.execute("SELECT 1 / 0")
        return read(spec, query, values, db, **how)

    monkeypatch.setattr(lb_sql, "_read_part", failing)
    fails_leaving_no_file(trial, export_dir, "division by zero")


def fails_leaving_no_file(trial: Any, export_dir: Any, reason: str) -> None:  # noqa: F811
    """An SDTM export of the trial fails with ``reason`` and stores no file."""
    job = run_export_job(create_export_job(by=trial.data_manager, trial=trial.trial, format_code="sdtm").pk)
    assert job.state == State.FAILED
    assert reason in job.error
    assert not stored_files(export_dir)


@pytest.mark.parametrize("where", ["there", "here"])
def test_a_failure_amid_either_parts_rows_fails_the_job_and_leaves_no_file(
        trial: Any, export_dir: Any, in_two_parts: list[str], monkeypatch: pytest.MonkeyPatch,  # noqa: F811
        where: str) -> None:
    """The rows are read a row at a time; the second chunk of one part's fails (as a dropped connection would):
    the job fails with the reason, whichever part it is, and the other part's reading stops."""
    monkeypatch.setattr(lb_sql, "XPT_CHUNK", 1)
    real = lb_sql._server_side_chunks

    def failing(db: Any, sql: str, values: Any, *, ahead: int = 1) -> Iterator[list[bytes]]:
        chunks = real(db, sql, values, ahead=ahead)
        try:
            head = next(chunks, None)
            if head is None:  # a part without rows (PC's, for one)
                return
            yield head
            if (db is connection) == (where == "here"):
                raise RuntimeError("the connection was lost")
            yield from chunks
        finally:
            chunks.close()

    monkeypatch.setattr(lb_sql, "_server_side_chunks", failing)
    fails_leaving_no_file(trial, export_dir, "the connection was lost")
    assert in_two_parts  # the file was read in two parts


@pytest.mark.parametrize("where", ["there", "here"])
def test_when_one_part_fails_the_other_stops_reading(
        trial: Any, export_dir: Any, in_two_parts: list[str], monkeypatch: pytest.MonkeyPatch,  # noqa: F811
        where: str) -> None:
    """One part's rows fail at their first chunk while the other's come slowly, a row at a time: the other stops
    at its next chunk rather than reading its part to the end, and the job fails with the first one's reason."""
    for subject, by in ((trial.split, trial.coordinator), (trial.reinf, trial.coordinator),
                        (trial.other, trial.coordinator_b)):  # every subject has LB rows: both parts do
        ref = f"S-{subject.code}-"
        ingest_results(by=by, rows=[lab(subject, ref + "1", -8, "ANC", "3000", "/uL"),
                                    lab(subject, ref + "2", -6, "CRP", "4", "mg/L"),
                                    lab(subject, ref + "3", 2, "CRP", "9", "mg/L")])
    monkeypatch.setattr(lb_sql, "XPT_CHUNK", 1)
    real = lb_sql._server_side_chunks
    ended: list[str] = []  # how the slow part's reading ended
    reading = threading.Event()  # the slow part has read its first row

    def chunks(db: Any, sql: str, values: Any, *, ahead: int = 1) -> Iterator[list[bytes]]:
        if (db is connection) == (where == "here"):
            reading.wait(10)
            raise RuntimeError("the connection was lost")
        rows = real(db, sql, values, ahead=ahead)
        try:
            for chunk in rows:
                reading.set()
                time.sleep(0.2)
                yield chunk
            ended.append("read to the end")
        except BaseException:  # closed by its reader, or its query cancelled
            ended.append("stopped")
            raise
        finally:
            rows.close()

    monkeypatch.setattr(lb_sql, "_server_side_chunks", chunks)
    fails_leaving_no_file(trial, export_dir, "the connection was lost")
    assert ended == ["stopped"]


def _count_results(db: Any) -> Iterator[bytes]:
    with db.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {Result._meta.db_table}")
        yield str(cursor.fetchone()[0]).encode()


def test_the_second_connection_reads_the_exports_snapshot_not_later_commits(trial: Any) -> None:  # noqa: F811
    before = Result.objects.count()
    assert before
    more = [lab(trial.split, "LATE-1", 9, "CRP", "5", "mg/L")]
    with transaction.atomic():
        with connection.cursor() as cursor:
            for statement in begin_sql():
                cursor.execute(statement)
            cursor.execute("SELECT pg_export_snapshot()")
            snapshot = cursor.fetchone()[0]
        with ThreadPoolExecutor(max_workers=1) as writer:  # a site posting a result, committed after the snapshot
            writer.submit(_ingest_on_own_connection, trial.coordinator, more).result()
        with beside(snapshot, _count_results) as reader:
            assert b"".join(reader.chunks()) == str(before).encode()
    assert Result.objects.count() == before + 1


def _ingest_on_own_connection(by: Any, rows: list[Any]) -> None:
    try:
        ingest_results(by=by, rows=rows)
    finally:
        connections.close_all()  # this thread's connection


SETTINGS = ("SELECT current_setting('transaction_isolation'), current_setting('transaction_read_only'), "
            "current_setting('work_mem'), current_setting('cursor_tuple_fraction')")


def _settings(db: Any) -> Iterator[bytes]:
    with db.cursor() as cursor:
        cursor.execute(SETTINGS)
        yield repr(cursor.fetchone()).encode()


def test_both_connections_read_as_an_export_does(trial: Any) -> None:  # noqa: F811
    """Repeatable read, read only, the export's work_mem, and cursors planned to be read to their end."""
    with transaction.atomic():
        with connection.cursor() as cursor:
            for statement in begin_sql():
                cursor.execute(statement)
            cursor.execute(SETTINGS)
            own = cursor.fetchone()
            cursor.execute("SELECT pg_export_snapshot()")
            snapshot = cursor.fetchone()[0]
        with beside(snapshot, _settings) as reader:
            assert b"".join(reader.chunks()) == repr(own).encode()
    assert own == ("repeatable read", "on", "256MB", "1")


def _fails(db: Any) -> Iterator[bytes]:
    yield b"some bytes"
    with db.cursor() as cursor:
        cursor.execute("SELECT 1 / 0")
    yield b"never"


def test_a_failing_second_part_fails_the_file(trial: Any) -> None:  # noqa: F811
    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_export_snapshot()")
            snapshot = cursor.fetchone()[0]
        with beside(snapshot, _fails) as reader, pytest.raises(Exception, match="division by zero"):
            list(reader.chunks())


def test_a_second_part_abandoned_early_is_cancelled(trial: Any) -> None:  # noqa: F811
    started = threading.Event()

    def slow(db: Any) -> Iterator[bytes]:
        started.set()
        with db.cursor() as cursor:
            cursor.execute("SELECT pg_sleep(30)")
        yield b"late"

    with transaction.atomic():
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_export_snapshot()")
            snapshot = cursor.fetchone()[0]
        begun = time.monotonic()
        with beside(snapshot, slow):
            assert started.wait(10)
            time.sleep(0.2)  # the query is running
        assert time.monotonic() - begun < 10  # closed by cancelling it, not by waiting 30 s
