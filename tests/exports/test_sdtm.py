"""The SDTM export on a small trial, with hand-checked values.

Site A has two subjects: SPLIT (lymphodepleted on days -5..-3, a dose split over days 0, 1 and 2, CRS
assessed on days 2 and 3, tocilizumab, labs on days -3, 0 and 7, a day-7 MRD-negative remission) and
REINF (a second lymphodepletion course and infusion, labs in both courses). Site B has one infused
subject that a site-A export never shows. Day 0 is 14 days ago; the second course's day 0 is 8 days ago.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pandas as pd
import pyreadstat
import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from assays.services import ResultIn, ingest_results
from exports.formats import REGISTRY
from exports.scope import ExportScope, readable_site_ids
from exports.sdtm import DATASETS
from exports.sdtm.xpt import ascii_text
from patients.models import AdverseEvent, Subject
from patients.services import outcome, safety, treatment
from tests.factories import days_ago, infused_subject, lymphodepleted_subject, reinfusable_subject, reinfuse
from trials.models import Visit

pytestmark = pytest.mark.django_db

D0 = days_ago(14)  # day 0 of both site-A subjects
D2 = days_ago(8)  # day 0 of REINF's second course


def day(offset: int) -> dt.date:
    return D0 + dt.timedelta(days=offset)


def local(offset: int, hour: int) -> dt.datetime:
    """``hour`` o'clock on the site's clock (Asia/Shanghai, UTC+8) on day ``offset``."""
    return dt.datetime.combine(day(offset), dt.time(hour), tzinfo=dt.timezone(dt.timedelta(hours=8)))


def lab(subject: Subject, ref: str, offset: int, analyte: str, value: str, unit: str, **kw: Any) -> ResultIn:
    specimen = kw.pop("specimen", "pb")
    return ResultIn(source_ref=ref, subject=subject.code, accession_number=f"ACC-{subject.code}-{offset}-{specimen}",
                    specimen=specimen, collected_at=local(offset, 7), analyte=analyte, value=value, unit=unit, **kw)


def split_subject(world: Any) -> Subject:
    subject = lymphodepleted_subject(trial=world.trial, site=world.site_a, coordinator=world.coordinator,
                                     investigator=world.investigator, day0=D0)
    for fraction, cells in enumerate(("300000", "300000", "400000"), start=1):
        treatment.record_infusion(subject=subject, lot=subject.lots.get(), dose_level=world.trial.dose_levels.get(),
                                  cells_per_kg=Decimal(cells), infused_at=local(fraction - 1, 18),
                                  fraction_number=fraction, planned_fractions=3, by=world.coordinator)
    crs = safety.record_adverse_event(subject=subject, by=world.coordinator, data=safety.EventInput(
        category="crs", term="Cytokine release syndrome", onset_on=day(2), related_to_product="probable",
        related_to_lymphodepletion="unlikely"))
    safety.record_crs_assessment(event=crs, assessed_at=local(2, 20), components={"max_temp_c": Decimal("39.0")},
                                 by=world.coordinator)
    safety.record_medication(subject=subject, drug="tocilizumab", dose=Decimal("8"), dose_unit="mg/kg", route="iv",
                             given_at=local(2, 21), indication="CRS", adverse_event=crs, by=world.coordinator)
    safety.record_crs_assessment(event=crs, assessed_at=local(3, 8),
                                 components={"max_temp_c": Decimal("38.2"), "hypotension": True},
                                 by=world.coordinator)
    ingest_results(by=world.coordinator, rows=[
        lab(subject, "S-1", -3, "ANC", "2500", "/uL"),
        lab(subject, "S-2", 0, "ANC", "1.2", "10*9/L"),
        lab(subject, "S-3", 7, "ANC", "400", "/uL"),
        lab(subject, "S-4", 0, "CRP", "<LLOQ", "mg/L", specimen="serum"),
        lab(subject, "S-5", 7, "CAR_QPCR", "52000", "copies/ug"),
    ])
    outcome.record_response(subject=subject, assessed_on=day(7), category="cr_mrd_neg", by=world.coordinator,
                            marrow_blasts_pct=Decimal("0.4"), mrd_flow_pct=Decimal("0.001"))
    return subject


def reinfused_subject(world: Any) -> Subject:
    subject = reinfusable_subject(trial=world.trial, site=world.site_a, coordinator=world.coordinator,
                                  investigator=world.investigator, day0=D0, lot_released_on=days_ago(12))
    reinfuse(subject, by=world.coordinator, day0=D2)
    safety.record_adverse_event(subject=subject, by=world.coordinator, data=safety.EventInput(
        category="ctcae", term="Fièvre ≥ 39 °C", onset_on=day(1), resolved_on=day(4), grade=2,
        related_to_product="possible", related_to_lymphodepletion="not_related", meddra_code="10016558"))
    ingest_results(by=world.coordinator, rows=[
        lab(subject, "R-1", 7, "CAR_QPCR", "<LLOQ", "copies/ug"),
        lab(subject, "R-2", 13, "CAR_QPCR", "18000", "copies/ug"),
    ])
    return subject


@pytest.fixture
def trial(world: Any) -> Any:
    for code, target, before, after in (("D0", 0, 0, 0), ("D7", 7, 1, 1), ("D28", 28, 3, 3)):
        Visit.objects.create(trial=world.trial, code=code, name=f"Day {target}", target_day=target,
                             window_before_days=before, window_after_days=after)
    world.split = split_subject(world)
    world.reinf = reinfused_subject(world)
    world.other = infused_subject(trial=world.trial, site=world.site_b, coordinator=world.coordinator_b,
                                  investigator=world.investigator_b, day0=D0)
    return world


def scope_of(world: Any, user: Any) -> ExportScope:
    return ExportScope(trial=world.trial, site_ids=readable_site_ids(user, world.trial), user=user,
                       cutoff=timezone.now())


def export(scope: ExportScope) -> dict[str, bytes]:
    return {f.name: b"".join(f.chunks()) for f in REGISTRY["sdtm"].files(scope)}


def table(files: dict[str, bytes], name: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(files[f"sdtm/{name}.csv"].decode("utf-8"))))


def of(rows: list[dict[str, str]], subject: Subject, **match: str) -> list[dict[str, str]]:
    return [r for r in rows if r["USUBJID"].endswith(f"-{subject.code}")
            and all(r[k] == v for k, v in match.items())]


@pytest.fixture
def files(trial: Any) -> dict[str, bytes]:
    return export(scope_of(trial, trial.coordinator))


def test_the_export_lists_each_dataset_as_csv_and_xpt_with_its_metadata(files: Any) -> None:
    domains = ["dm", "ds", "ex", "cm", "ae", "suppae", "fa", "lb", "pc", "rs", "pp", "sv"]
    assert sorted(files) == sorted(["sdtm/define.csv"] + [f"sdtm/{d}.{ext}" for d in domains for ext in ("csv", "xpt")])
    define = table(files, "define")
    assert {r["DATASET"] for r in define} == {d.upper() for d in domains}
    lbtoxgr = next(r for r in define if (r["DATASET"], r["VARIABLE"]) == ("LB", "LBTOXGR"))
    assert (lbtoxgr["LABEL"], lbtoxgr["TYPE"], lbtoxgr["LENGTH"]) == ("Standard Toxicity Grade", "Char", "1")


def test_dm_has_one_row_per_subject_with_day_0_as_the_reference_start(trial: Any, files: Any) -> None:
    rows = table(files, "dm")
    assert [r["USUBJID"] for r in rows] == [f"{trial.trial.code}-SA-{s.code}" for s in (trial.split, trial.reinf)]
    (dm,) = of(rows, trial.split)
    assert dm["RFSTDTC"] == f"{D0}T18:00"  # the first fraction, on the site's clock
    assert (dm["RFXSTDTC"], dm["RFXENDTC"]) == (str(day(-5)), f"{day(2)}T18:00")
    assert (dm["RFICDTC"], dm["SITEID"], dm["SEX"], dm["AGE"], dm["AGEU"]) == (str(days_ago(29)), "SA", "F", "30",
                                                                             "YEARS")
    assert (dm["ARMCD"], dm["ACTARMCD"], dm["ARMNRS"], dm["DTHFL"], dm["COUNTRY"]) == ("ADULT", "ADULT", "", "", "CN")


def test_study_days_have_no_day_0_on_either_side_of_the_infusion(trial: Any, files: Any) -> None:
    anc = of(table(files, "lb"), trial.split, LBTESTCD="NEUT")
    assert [(r["LBDTC"], r["LBDY"]) for r in anc] == [
        (f"{day(-3)}T07:00", "-3"), (f"{day(0)}T07:00", "1"), (f"{day(7)}T07:00", "8")]
    ld = of(table(files, "ex"), trial.split, EXCAT="LYMPHODEPLETION")
    assert sorted({(r["EXTPT"], r["EXSTDY"]) for r in ld}) == [("DAY -3", "-3"), ("DAY -4", "-4"), ("DAY -5", "-5")]
    consent = of(table(files, "ds"), trial.split, DSDECOD="INFORMED CONSENT OBTAINED")
    assert [r["DSSTDY"] for r in consent] == ["-15"]  # 29 days ago, day 0 14 days ago


def test_a_split_infusion_is_one_ex_row_per_fraction(trial: Any, files: Any) -> None:
    cart = of(table(files, "ex"), trial.split, EXCAT="CAR-T")
    assert [(r["EXTPT"], r["EXDOSE"], r["EXDOSU"], r["EXDOSFRQ"], r["EXSTDTC"], r["EXSTDY"], r["EXLOT"])
            for r in cart] == [
        ("FRACTION 1 OF 3", "0.3", "10^6 cells/kg", "ONCE", f"{day(0)}T18:00", "1", f"LOT-{trial.split.code}"),
        ("FRACTION 2 OF 3", "0.3", "10^6 cells/kg", "ONCE", f"{day(1)}T18:00", "2", f"LOT-{trial.split.code}"),
        ("FRACTION 3 OF 3", "0.4", "10^6 cells/kg", "ONCE", f"{day(2)}T18:00", "3", f"LOT-{trial.split.code}")]
    ld = of(table(files, "ex"), trial.split, EXCAT="LYMPHODEPLETION", EXTPT="DAY -5")
    # BSA 1.818 m² (170 cm, 70 kg): 54.5 mg fludarabine and 454.5 mg cyclophosphamide given
    assert sorted((r["EXTRT"], r["EXDOSE"], r["EXDOSU"], r["EXDOSFRQ"]) for r in ld) == [
        ("CYCLOPHOSPHAMIDE", "250", "mg/m2", "QD"), ("FLUDARABINE", "29.98", "mg/m2", "QD")]
    assert [r["EXSEQ"] for r in of(table(files, "ex"), trial.split)] == [str(n) for n in range(1, 10)]


def test_a_reinfusion_course_has_its_own_ex_group_visits_and_keeps_counting_study_days(trial: Any, files: Any) -> None:
    ex = of(table(files, "ex"), trial.reinf)
    assert [(r["EXGRPID"], r["EXCAT"]) for r in ex].count(("COURSE 2", "LYMPHODEPLETION")) == 6
    (second,) = of(ex, trial.reinf, EXGRPID="COURSE 2", EXCAT="CAR-T")
    assert (second["EXLOT"], second["EXSTDY"], second["EXTPT"]) == ("LOT-R2", "7", "FRACTION 1 OF 1")
    pc = of(table(files, "pc"), trial.reinf)
    assert [(r["PCORRES"], r["PCSTRESC"], r["PCSTRESN"], r["PCDY"], r["VISIT"], r["VISITNUM"]) for r in pc] == [
        # Day 7 is already course 2's day 1 (no visit there); day 13 is course 2's day 7.
        ("<LLOQ", "<50", "", "8", "", ""), ("18000", "18000", "18000", "14", "COURSE 2 D7", "202")]
    assert [(r["PCTESTCD"], r["PCSTRESU"], r["PCLLOQ"], r["PCSPEC"]) for r in pc][0] == (
        "CARTGENE", "copies/ug", "50", "BLOOD")
    ds = of(table(files, "ds"), trial.reinf, DSDECOD="CAR-T INFUSION")
    assert [(r["DSTERM"], r["DSSTDY"]) for r in ds] == [("CAR-T INFUSION, COURSE 1", "1"),
                                                         ("CAR-T INFUSION, COURSE 2", "7")]


def test_pp_has_cmax_tmax_and_auc_0_28_of_each_course(trial: Any, files: Any, tmp_path: Any) -> None:
    # SPLIT: 52000 copies/ug on day 7, nothing quantified before: AUC (0,0)-(7,52000) = 7 x 26000 = 182000.
    # REINF: course 2 starts on study day 6; '<LLOQ' on course day 1 (before Tmax: 0), 18000 on course day 7:
    # AUC 1 x 0 + 6 x 9000 = 54000. Its first course has no sample (no parameter).
    pp = table(files, "pp")
    keys = ("PPGRPID", "PPTESTCD", "PPSTRESN", "PPSTRESU", "PPSTINT", "PPENINT")
    assert [tuple(r[k] for k in keys) for r in of(pp, trial.split)] == [
        ("COURSE 1", "CMAX", "52000", "copies/ug", "", ""), ("COURSE 1", "TMAX", "7", "day", "", ""),
        ("COURSE 1", "AUCINT", "182000", "day*copies/ug", "P0D", "P28D")]
    assert [(r["PPGRPID"], r["PPTESTCD"], r["PPSTRESN"], r["PPRFTDTC"]) for r in of(pp, trial.reinf)] == [
        ("COURSE 2", "CMAX", "18000", str(D2)), ("COURSE 2", "TMAX", "7", str(D2)),
        ("COURSE 2", "AUCINT", "54000", str(D2))]
    assert [r["PPSEQ"] for r in of(pp, trial.split)] == ["1", "2", "3"]
    path = tmp_path / "pp.xpt"
    path.write_bytes(files["sdtm/pp.xpt"])
    frame, meta = pyreadstat.read_xport(str(path))
    assert meta.table_name == "PP"
    assert sorted(frame["PPSTRESN"]) == [7.0, 7.0, 18000.0, 52000.0, 54000.0, 182000.0]


def test_a_crs_episode_carries_its_astct_grade_and_its_assessments(trial: Any, files: Any) -> None:
    (ae,) = of(table(files, "ae"), trial.split)
    assert (ae["AETERM"], ae["AEDECOD"], ae["AEPTCD"], ae["AECAT"], ae["AETOXGR"], ae["AESTDY"], ae["AEREL"]) == (
        "Cytokine release syndrome", "Cytokine release syndrome", "10052015", "CRS", "2", "3", "PROBABLY RELATED")
    supp = of(table(files, "suppae"), trial.split)
    assert {(r["IDVARVAL"], r["QNAM"], r["QVAL"]) for r in supp} == {
        ("1", "TOXGRSCL", "ASTCT 2019"), ("1", "AERELLD", "UNLIKELY RELATED")}
    fa = of(table(files, "fa"), trial.split)
    assert [(r["FALNKID"], r["FATESTCD"], r["FASTRESN"], r["FADTC"], r["FADY"]) for r in fa] == [
        (ae["AELNKID"], "ASTCTGR", "1", f"{day(2)}T20:00", "3"),
        (ae["AELNKID"], "ASTCTGR", "2", f"{day(3)}T08:00", "4")]
    (other,) = of(table(files, "ae"), trial.reinf)
    assert (other["AETOXGR"], other["AECAT"], other["AEPTCD"], other["AEENDY"]) == ("2", "", "10016558", "5")
    assert ("TOXGRSCL", "CTCAE v5.0") in {(r["QNAM"], r["QVAL"]) for r in of(table(files, "suppae"), trial.reinf)}
    (cm,) = of(table(files, "cm"), trial.split)
    assert (cm["CMTRT"], cm["CMDOSE"], cm["CMDOSU"], cm["CMROUTE"], cm["CMINDC"], cm["CMSTDY"]) == (
        "Tocilizumab", "8", "mg/kg", "INTRAVENOUS", "CRS", "3")


def test_lab_results_in_the_canonical_unit_with_range_grade_and_baseline(trial: Any, files: Any) -> None:
    anc = of(table(files, "lb"), trial.split, LBTESTCD="NEUT")
    assert [(r["LBORRES"], r["LBORRESU"], r["LBSTRESC"], r["LBSTRESN"], r["LBSTRESU"]) for r in anc] == [
        ("2500", "/uL", "2.5", "2.5", "10^9/L"), ("1.2", "10*9/L", "1.2", "1.2", "10^9/L"),
        ("400", "/uL", "0.4", "0.4", "10^9/L")]
    assert [(r["LBSTNRLO"], r["LBSTNRHI"], r["LBNRIND"], r["LBTOX"], r["LBTOXGR"]) for r in anc] == [
        ("2", "7.5", "NORMAL", "Neutrophil count decreased", "0"),
        ("2", "7.5", "LOW", "Neutrophil count decreased", "2"),
        ("2", "7.5", "LOW", "Neutrophil count decreased", "4")]
    # Baseline: the last result on or before the first lymphodepletion dose's date (day -5): none here but
    # the day -3 one is after it, so no ANC is flagged; the CRP of day 0 neither.
    assert [r["LBLOBXFL"] for r in anc] == ["", "", ""]
    assert [r["VISIT"] for r in anc] == ["", "COURSE 1 D0", "COURSE 1 D7"]
    (crp,) = of(table(files, "lb"), trial.split, LBTESTCD="CRP")
    assert (crp["LBORRES"], crp["LBSTRESC"], crp["LBSTRESN"], crp["LBSTRESU"], crp["LBNRIND"], crp["LBSPEC"],
            crp["LBLOINC"]) == ("<LLOQ", "<0.3", "", "mg/L", "NORMAL", "SERUM", "1988-5")
    assert not of(table(files, "lb"), trial.split, LBTESTCD="CARTGENE")  # transgene levels are in PC


def test_the_baseline_flag_is_the_last_result_before_first_exposure(trial: Any) -> None:
    subject = trial.split
    ingest_results(by=trial.coordinator, rows=[lab(subject, "B-1", -8, "ANC", "3000", "/uL"),
                                               lab(subject, "B-2", -6, "ANC", "2800", "/uL")])
    anc = of(table(export(scope_of(trial, trial.coordinator)), "lb"), subject, LBTESTCD="NEUT")
    assert [(r["LBDY"], r["LBLOBXFL"]) for r in anc] == [("-8", ""), ("-6", "Y"), ("-3", ""), ("1", ""), ("8", "")]


def test_response_with_mrd_and_visits_done(trial: Any, files: Any) -> None:
    rs = of(table(files, "rs"), trial.split)
    assert [(r["RSTESTCD"], r["RSORRES"], r["RSSTRESC"], r["RSDY"], r["VISIT"]) for r in rs] == [
        ("OVRLRESP", "CR, MRD-negative", "CR", "8", "COURSE 1 D7"),
        ("MRDSTAT", "0.001", "NEGATIVE", "8", "COURSE 1 D7")]
    sv = of(table(files, "sv"), trial.split)
    assert [(r["VISITNUM"], r["VISIT"], r["SVSTDTC"], r["SVSTDY"]) for r in sv] == [
        ("101", "COURSE 1 D0", str(day(0)), "1"), ("102", "COURSE 1 D7", str(day(7)), "8")]
    sv = of(table(files, "sv"), trial.reinf)
    assert [(r["VISITNUM"], r["VISIT"], r["SVSTDY"]) for r in sv] == [
        ("101", "COURSE 1 D0", "1"), ("201", "COURSE 2 D0", "7"), ("202", "COURSE 2 D7", "14")]


def test_another_sites_subject_never_appears(trial: Any) -> None:
    site_a = export(scope_of(trial, trial.coordinator))
    for name, content in site_a.items():
        assert trial.other.code.encode() not in content, name
    everything = export(scope_of(trial, trial.data_manager))
    assert len(table(everything, "dm")) == 3
    assert of(table(everything, "ex"), trial.other)


def test_non_ascii_text_is_kept_in_csv_and_transliterated_in_xpt(trial: Any, files: Any) -> None:
    (ae,) = of(table(files, "ae"), trial.reinf)
    assert ae["AETERM"] == "Fièvre ≥ 39 °C"
    assert b"Fievre >= 39 degC" in files["sdtm/ae.xpt"]


def test_two_exports_of_the_same_data_are_identical(trial: Any, files: Any) -> None:
    assert export(scope_of(trial, trial.coordinator)) == files


def _queries(make: Callable[[], Any]) -> int:
    with CaptureQueriesContext(connection) as queries:
        make()
    return len(queries)


def test_the_number_of_queries_does_not_grow_with_subjects(world: Any) -> None:
    def subject(n: int) -> None:
        s = infused_subject(trial=world.trial, site=world.site_a, coordinator=world.coordinator,
                            investigator=world.investigator, day0=D0)
        ingest_results(by=world.coordinator, rows=[lab(s, f"Q{n}-1", 1, "ANC", "1.1", "10*9/L"),
                                                   lab(s, f"Q{n}-2", 7, "CAR_QPCR", "900", "copies/ug")])
        event = safety.record_adverse_event(subject=s, by=world.coordinator, data=safety.EventInput(
            category="crs", term="CRS", onset_on=day(1), related_to_product="possible",
            related_to_lymphodepletion="unlikely"))
        safety.record_crs_assessment(event=event, assessed_at=local(1, 9), components={"max_temp_c": Decimal("38.5")},
                                     by=world.coordinator)

    subject(0)
    scope = scope_of(world, world.data_manager)
    one = _queries(lambda: export(scope))
    for n in range(1, 5):
        subject(n)
    assert AdverseEvent.objects.count() == 5
    assert _queries(lambda: export(scope)) == one


@pytest.mark.parametrize("reader", ["pyreadstat", "pandas"])
def test_every_xpt_reads_back_as_its_csv_with_labels_and_types(files: Any, tmp_path: Any, reader: Any) -> None:
    define = table(files, "define")
    for name in sorted({r["DATASET"] for r in define}):
        variables = [r for r in define if r["DATASET"] == name]
        path = tmp_path / f"{name}.xpt"
        path.write_bytes(files[f"sdtm/{name.lower()}.xpt"])
        if reader == "pyreadstat":
            frame, meta = pyreadstat.read_xport(str(path))
            assert meta.table_name == name
            assert meta.variable_storage_width == {v["VARIABLE"]: int(v["LENGTH"]) for v in variables}, name
            assert meta.column_names_to_labels == {v["VARIABLE"]: v["LABEL"] for v in variables}, name
            assert meta.readstat_variable_types == {
                v["VARIABLE"]: "double" if v["TYPE"] == "Num" else "string" for v in variables}, name
        else:
            frame = pd.read_sas(path, format="xport", encoding="ascii")
        assert list(frame.columns) == [v["VARIABLE"] for v in variables], name
        rows = table(files, name.lower())
        assert len(frame) == len(rows) > 0, name
        for v in variables:
            column, sent = list(frame[v["VARIABLE"]]), [r[v["VARIABLE"]] for r in rows]
            if v["TYPE"] == "Num":
                read = [None if math.isnan(x) else 0.0 if x == 2.0 ** -260 else x for x in column]
                assert read == [float(x) if x else None for x in sent], (name, v["VARIABLE"])
            else:
                width = int(v["LENGTH"])
                assert column == [ascii_text(x)[:width].rstrip() for x in sent], (name, v["VARIABLE"])
                # The length is the longest value as written (at least 1), within the declared length.
                declared = next(d for d in DATASETS if d.name == name).variables[int(v["ORDER"]) - 1].length
                assert width == max(1, min(declared, max((len(ascii_text(x)) for x in sent), default=0))), (
                    name, v["VARIABLE"])
