"""SDTM LB and PC written from SQL (``exports.sdtm.lb_sql``) are byte for byte the files the generic writers give
from ``findings.lb_rows`` and ``findings.pc_rows``, as CSV and as XPT, including the values where PostgreSQL and
Python write text apart."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pgtrigger
import pytest

from assays.models import Result
from assays.services import ingest_results
from exports.sdtm import (
    DATASETS,
    csv_chunks,
    fitted_variables,
    generic_csv_chunks,
    generic_xpt_chunks,
    lb_sql,
    xpt_chunks,
)
from exports.sdtm.common import Context, Dataset
from exports.sdtm.xpt import fitted
from tests.exports.test_sdtm import (  # noqa: F401  (the small trial of the SDTM tests)
    export,
    lab,
    of,
    scope_of,
    table,
    trial,
)

pytestmark = pytest.mark.django_db

LB: Dataset = next(d for d in DATASETS if d.name == "LB")
PC: Dataset = next(d for d in DATASETS if d.name == "PC")


def both(scope: Any, dataset: Dataset = LB) -> tuple[bytes, bytes, bytes, bytes]:
    return (b"".join(csv_chunks(dataset, scope)), b"".join(generic_csv_chunks(dataset, scope)),
            b"".join(xpt_chunks(dataset, scope)), b"".join(generic_xpt_chunks(dataset, scope)))


def assert_same(scope: Any, dataset: Dataset = LB) -> bytes:
    """The same files, and (so the XPT headers agree) the same variable lengths from SQL as from the rows."""
    fast_csv, generic_csv, fast_xpt, generic_xpt = both(scope, dataset)
    assert fast_csv == generic_csv
    assert fast_xpt == generic_xpt
    ctx = Context(scope)
    assert fitted_variables(dataset, ctx) == fitted(dataset.variables, dataset.rows(ctx))
    return fast_csv


def test_lb_and_pc_variables_are_fitted_to_their_longest_values(trial: Any) -> None:  # noqa: F811
    ctx = Context(scope_of(trial, trial.coordinator))
    for dataset in (LB, PC):
        variables = fitted_variables(dataset, ctx)
        assert [v.name for v in variables] == [v.name for v in dataset.variables]
        assert all(1 <= v.length <= d.length for v, d in zip(variables, dataset.variables, strict=True))
        assert sum(v.length for v in variables) < sum(v.length for v in dataset.variables) / 2
        recorded: list[Any] = []
        assert next(xpt_chunks(dataset, ctx.scope, recorded.append)).startswith(b"HEADER RECORD")
        assert recorded == [variables]
    lengths = {v.name: v.length for v in fitted_variables(LB, ctx)}
    assert (lengths["LBSTAT"], lengths["LBREASND"], lengths["LBDTC"]) == (1, 1, 16)  # nothing cancelled; minutes


def test_lb_from_sql_is_the_generic_file_on_the_small_trial(trial: Any) -> None:  # noqa: F811
    assert assert_same(scope_of(trial, trial.coordinator)).count(b"\n") == 5  # the header, four results (no qPCR)
    ingest_results(by=trial.coordinator, rows=[lab(trial.split, "B-1", -8, "ANC", "3000", "/uL"),
                                               lab(trial.split, "B-2", -6, "ANC", "2800", "/uL"),
                                               lab(trial.split, "B-3", -5, "CRP", "4", "mg/L")])
    with pgtrigger.ignore("assays.Result:result_no_rewrite"):  # stored results are append-only; planted here
        Result.objects.filter(source_ref="B-2").update(status=Result.Status.CANCELLED)  # the flag goes to B-1
    content = assert_same(scope_of(trial, trial.coordinator))
    assert content.count(b",Y,") == 2
    assert_same(scope_of(trial, trial.data_manager))


def test_pc_from_sql_is_the_generic_file_on_the_small_trial(trial: Any) -> None:  # noqa: F811
    content = assert_same(scope_of(trial, trial.coordinator), PC)
    assert content.count(b"\n") == 4  # the header, three qPCR results (one censored)
    assert content.count(b",QPCR,") == 3
    ingest_results(by=trial.coordinator, rows=[lab(trial.split, "Q-1", 9, "CAR_QPCR", "<LLOQ", "copies/ug"),
                                               lab(trial.split, "Q-2", 11, "CAR_QPCR", "9000", "copies/ug")])
    with pgtrigger.ignore("assays.Result:result_no_rewrite"):  # stored results are append-only; planted here
        Result.objects.filter(source_ref="Q-2").update(status=Result.Status.CANCELLED)
    assert b"NOT DONE" in assert_same(scope_of(trial, trial.coordinator), PC)
    assert_same(scope_of(trial, trial.data_manager), PC)


@pytest.mark.parametrize(("dataset", "analyte"), [(LB, "ANC"), (PC, "CAR_QPCR")], ids=["LB", "PC"])
@pytest.mark.parametrize(("value_text", "value", "censored", "unit_text", "status"), [
    ("a, \"quoted\"\nnote", None, "", "mg/L", "final"),
    ("  positive  ", None, "", "", "final"),
    ("Spuren \u00b5 \u2265 ß", None, "", "\u00b5g/L", "final"),
    ("\rcarriage", None, "", "x\ry", "final"),
    ("<0.5", 0.5, "<", "mg/L", "final"),
    ("0", -0.0, "", "", "final"),
    ("x", 1.5e-05, "", "", "final"),
    ("x", 1e15, "", "", "final"),
    ("x", 1000000000000000.5, "", "", "final"),
    ("x", -2.5e16, "", "", "final"),
    ("x", float("nan"), "", "", "final"),
    ("12", 12.0, "", "", "cancelled"),
    ("\u2265" * 25 + "\u00e9" * 15, None, "", "\u00b0" * 30, "final"),  # longer than the XPT widths in ASCII
])
def test_lb_and_pc_from_sql_write_every_value_as_the_generic_path(  # noqa: PLR0913
        trial: Any, value_text: str, value: float | None, censored: str, unit_text: str,  # noqa: F811
        status: str, dataset: Dataset, analyte: str) -> None:
    result = Result.objects.filter(subject=trial.split, analyte__code=analyte).order_by("pk").first()
    assert result is not None
    # Stored results are append-only (assays.models.Result); the test plants awkward values in one.
    with pgtrigger.ignore("assays.Result:result_no_rewrite"):
        Result.objects.filter(pk=result.pk).update(value_text=value_text, value=value, censored=censored,
                                                   unit_text=unit_text, status=status)
    assert_same(scope_of(trial, trial.coordinator), dataset)


def test_lb_from_sql_places_collection_times_with_seconds_and_outside_every_visit(trial: Any) -> None:  # noqa: F811
    result = Result.objects.filter(subject=trial.split, analyte__code="CRP").select_related("draw").get()
    result.draw.collected_at += dt.timedelta(days=3, seconds=7)
    result.draw.save()
    content = assert_same(scope_of(trial, trial.coordinator))
    assert b":07," in content


def test_the_baseline_is_the_last_result_done_before_exposure_by_time_then_record(trial: Any) -> None:  # noqa: F811
    """LBLOBXFL on ties and exclusions: two draws at the same time (the later record wins) and a later cancelled
    result (not done, so not the baseline), both in the SQL-written file and the generic one."""
    subject = trial.split
    for row in (lab(subject, "B-1", -8, "ANC", "3000", "/uL"),
                lab(subject, "B-2", -6, "ANC", "2800", "/uL", specimen="serum"),
                lab(subject, "B-3", -6, "ANC", "2700", "/uL"),  # the same time as B-2, a later record
                lab(subject, "B-4", -5, "ANC", "2600", "/uL", specimen="plasma")):
        ingest_results(by=trial.coordinator, rows=[row])
    with pgtrigger.ignore("assays.Result:result_no_rewrite"):
        Result.objects.filter(subject=subject, source_ref="B-4").update(status=Result.Status.CANCELLED)
    scope = scope_of(trial, trial.coordinator)
    assert_same(scope)
    anc = of(table(export(scope), "lb"), subject, LBTESTCD="NEUT")
    assert [(r["LBREFID"].rsplit("-", 1)[-1], r["LBDY"], r["LBSTAT"], r["LBLOBXFL"]) for r in anc][:4] == [
        ("pb", "-8", "", ""), ("serum", "-6", "", ""), ("pb", "-6", "", "Y"), ("plasma", "-5", "NOT DONE", "")]


@pytest.mark.parametrize(("chunk", "spool"), [(1, "memory"), (2, "disk"), (3, "memory"), (7, "disk")])
def test_lb_and_pc_xpt_are_the_generic_files_whatever_the_chunks_of_the_query(
        trial: Any, monkeypatch: pytest.MonkeyPatch, chunk: int, spool: str) -> None:  # noqa: F811
    """The XPT's query gives rows in subject order only: each subject's rows are put in order (test, time, record;
    two draws at the same time) and numbered across the chunks they come in, a subject's rows held back until its
    last one has come. The rows wait in the spool in memory, or in a temporary file past ``SPOOL_MEMORY``."""
    if spool == "disk":
        monkeypatch.setattr(lb_sql, "SPOOL_MEMORY", 1)
    rolled: list[bool] = []
    close = lb_sql._Spool.close

    def closed(self: Any) -> None:
        rolled.append(self._file._rolled)
        close(self)

    monkeypatch.setattr(lb_sql._Spool, "close", closed)
    for subject in (trial.split, trial.reinf):
        ref = f"C-{subject.code}-"
        for row in (lab(subject, ref + "1", -8, "ANC", "3000", "/uL"), lab(subject, ref + "2", -6, "CRP", "4", "mg/L"),
                    lab(subject, ref + "3", -6, "ANC", "2700", "/uL", specimen="serum"),
                    lab(subject, ref + "4", 9, "CAR_QPCR", "900", "copies/ug")):
            ingest_results(by=trial.coordinator, rows=[row])
    monkeypatch.setattr(lb_sql, "XPT_CHUNK", chunk)
    scope = scope_of(trial, trial.coordinator)
    assert assert_same(scope).count(b"\n") == 11  # the header, four results, three more of each subject
    assert_same(scope, PC)
    # Memory stays bounded: each subject's rows are spooled once its last row has come, not held to the end (with
    # these chunks, each subject's rows are a batch of their own).
    assert len(list(lb_sql.xpt_chunks(Context(scope)))) == 4  # the header, the two subjects, the padding
    assert rolled and set(rolled) == {spool == "disk"}
