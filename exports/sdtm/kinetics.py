"""PP (Pharmacokinetic Parameters): Cmax, Tmax and AUC day 0-28 of the CAR transgene per subject and infusion
course, derived by the very functions of the trial summary (``summaries.kinetics``, DOMAIN 5.5), so the export
and the summary can never disagree. One query for the results; days are course days from patients.timeline.
"""

from __future__ import annotations

from collections.abc import Iterator

from assays.models import Analyte, Result
from exports.sdtm.codes import number_text
from exports.sdtm.common import STUDYID, USUBJID, Context, Dataset, Row, char, domain_var, dtc, num, numbered, seq
from exports.sdtm.common import subject_key as sdtm_order
from patients.timeline import local_date
from summaries.definitions import AUC_END_DAY, QPCR
from summaries.kinetics import Kinetics, kinetics
from summaries.records import Sample

PP_VARIABLES = (
    STUDYID, domain_var("PP"), USUBJID, seq("PP"),
    char("PPGRPID", "Group ID", 20, "COURSE n: the parameters of one infusion course."),
    char("PPTESTCD", "Parameter Short Name", 8, "CMAX, TMAX, AUCINT (day 0 to 28)."),
    char("PPTEST", "Parameter Name", 40),
    char("PPCAT", "Parameter Category", 40, "The analyte: CAR TRANSGENE (QPCR)."),
    char("PPORRES", "Result or Finding in Original Units", 40),
    char("PPORRESU", "Original Units", 30),
    char("PPSTRESC", "Character Result/Finding in Std Format", 40),
    num("PPSTRESN", "Numeric Result/Finding in Standard Units"),
    char("PPSTRESU", "Standard Units", 30, "copies/ug; day; day*copies/ug."),
    char("PPSPEC", "Specimen Material Type", 20),
    char("PPRFTDTC", "Date/Time of Reference Point", 10, "Day 0 of the course (its first fraction)."),
    char("PPSTINT", "Planned Start of Assessment Interval", 10, "AUCINT only: P0D."),
    char("PPENINT", "Planned End of Assessment Interval", 10, "AUCINT only: P28D."),
)
PARAMETERS = (("CMAX", "Max Conc", "copies/ug"), ("TMAX", "Time of CMAX", "day"),
              ("AUCINT", "AUC from T1 to T2", "day*copies/ug"))


def _series(ctx: Context) -> dict[int, list[Sample]]:
    samples: dict[int, list[Sample]] = {}
    rows = (Result.objects.filter(subject__in=ctx.subject_ids(), analyte__code=QPCR, superseded=False)
            .exclude(status=Result.Status.CANCELLED).order_by("draw__collected_at", "pk")
            .values_list("subject_id", "draw__collected_at", "value", "censored"))
    for subject_id, collected_at, value, censored in rows.iterator(chunk_size=2000):
        tz = ctx.subjects[subject_id].tz
        samples.setdefault(subject_id, []).append(Sample(local_date(collected_at, tz), value, censored))  # type: ignore[arg-type]
    return samples


def _values(k: Kinetics) -> tuple[float | int | None, ...]:
    return k.cmax, k.tmax, k.auc_0_28


def pp_rows(ctx: Context) -> Iterator[Row]:
    lloq = Analyte.objects.filter(code=QPCR).values_list("lloq", flat=True).first()
    series = _series(ctx)
    for s in sorted(ctx.subjects.values(), key=sdtm_order):
        for course, day0 in enumerate(s.timeline.day0s, start=1):
            k = kinetics(series.get(s.id, []), s.timeline, course, lloq)
            for (testcd, test, unit), value in zip(PARAMETERS, _values(k), strict=True):
                if value is None:
                    continue
                text = number_text(float(value))
                interval = ("P0D", f"P{AUC_END_DAY}D") if testcd == "AUCINT" else ("", "")
                yield (ctx.studyid, "PP", s.usubjid, None, f"COURSE {course}", testcd, test, "CAR TRANSGENE (QPCR)",
                       text, unit, text, float(value), unit, "BLOOD", dtc(day0), *interval)


def _pp_numbered(ctx: Context) -> Iterator[Row]:
    return numbered(pp_rows(ctx))


DATASETS = (
    Dataset("PP", "Pharmacokinetics Parameters", PP_VARIABLES, _pp_numbered,
            "One record per CAR transgene parameter per subject and infusion course"),
)
