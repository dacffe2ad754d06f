"""A trial summary (issue 12's contract): one row per subject and course, and the cohort's figures from the rows.

``summarise(records, course)`` is pure: ``summaries.selectors.load_trial_records`` loads the records.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any

from summaries import figures as f
from summaries.definitions import ANC, AUC_RULE, B_CELLS, LLOQ_RULE, PLATELETS, QPCR, antigen_analyte
from summaries.haematology import haematology
from summaries.kinetics import b_cell_aplasia, baseline_value, kinetics
from summaries.records import SubjectRecords, TrialRecords
from summaries.survival import event_free_survival, from_remission, kaplan_meier, overall_survival

SURVIVAL = ("os", "lfs", "efs", "dor")


def antigen_expression(subject: SubjectRecords, course: int, records: TrialRecords) -> float | None:
    antigens = next((fr.target_antigens for fr in subject.fractions if fr.course_number == course), ())
    for antigen in antigens:
        samples = subject.samples.get(antigen_analyte(antigen))
        if samples:
            return baseline_value(samples, subject.timeline, course)
    return None


def _characteristics(s: SubjectRecords, course: int, records: TrialRecords) -> dict[str, Any]:
    return {"subject": s.code, "site": s.site, "cohort": s.cohort, "course": course,
            "day0": s.timeline.day0_of(course), "age_years": s.age_years, "sex": s.sex,
            "product_source": f.product_source(s, course),
            "antigen_expression_pct": antigen_expression(s, course, records),
            "prior_hsct": s.prior_hsct, "prior_car_t": s.prior_car_t,
            "dose_cells_per_kg": f.course_dose(s, course), "fractions": f.course_fractions(s, course),
            "reinfused": len(s.timeline.day0s) > 1}


def _response(s: SubjectRecords, course: int, records: TrialRecords) -> dict[str, Any]:
    primary = f.primary_response(s, course, records.primary_visit)
    return {"response": f.response_key(primary), "response_category": primary.category if primary else None,
            "response_on": primary.assessed_on if primary else None,
            "mrd_negative": f.mrd_negative(primary, records.mrd_negative_below_pct)}


def _toxicities(s: SubjectRecords, course: int) -> dict[str, Any]:
    row: dict[str, Any] = {}
    for category in ("crs", "icans"):
        row.update({f"{category}_{k}": v for k, v in f.toxicity(s, course, category).items()})
    blood = haematology(s.samples.get(ANC, []), s.samples.get(PLATELETS, []), s.timeline, course)
    return {**row, "anc_below_500_days": blood.anc_below_500_days,
            "neutrophil_recovery_day": blood.neutrophil_recovery_day,
            "platelet_recovery_day": blood.platelet_recovery_day}


def _kinetics(s: SubjectRecords, course: int, records: TrialRecords) -> dict[str, Any]:
    k = kinetics(s.samples.get(QPCR, []), s.timeline, course, records.lloq.get(QPCR))
    return {"baseline_copies": k.baseline, "baseline_log10": f.number(f.log10(k.baseline)), "cmax": k.cmax,
            "cmax_log10": f.number(f.log10(k.cmax)), "tmax_day": k.tmax, "auc_0_28": f.number(k.auc_0_28, 1),
            "persistence_day": k.persistence_day,
            "b_cell_aplasia": b_cell_aplasia(s.samples.get(B_CELLS, []), s.timeline, course)}


def _survival(s: SubjectRecords, course: int, records: TrialRecords) -> dict[str, Any]:
    primary = f.primary_response(s, course, records.primary_visit)
    times = {"os": overall_survival(s, course), "efs": event_free_survival(s, course, primary),
             "lfs": from_remission(s, course, death_is_event=True),
             "dor": from_remission(s, course, death_is_event=False)}
    row: dict[str, Any] = {}
    for name, tte in times.items():
        row[f"{name}_months"] = None if tte is None else f.number(tte.months)
        row[f"{name}_event"] = None if tte is None else tte.event
        row[f"_{name}"] = tte
    return row


def subject_row(s: SubjectRecords, course: int, records: TrialRecords) -> dict[str, Any]:
    """Every per-subject figure behind the cohort's numbers (keys starting with _ are internal)."""
    return {**_characteristics(s, course, records), **_response(s, course, records), **_toxicities(s, course),
            **_kinetics(s, course, records), **_survival(s, course, records)}


def subject_rows(records: TrialRecords, course: int) -> list[dict[str, Any]]:
    """The subjects who received this course, in code order."""
    return [subject_row(s, course, records) for s in records.subjects if s.timeline.day0_of(course) is not None]


def summarise(records: TrialRecords, course: int, *, now: dt.datetime) -> dict[str, Any]:
    rows = subject_rows(records, course)
    return {"trial": records.trial, "cohort": records.cohort, "course": course, "data_cutoff": now.isoformat(),
            "n_subjects": len(rows), "characteristics": characteristics(rows), "dosing": dosing(rows),
            "response": response(rows, records), "crs": toxicity_block(rows, "crs"),
            "icans": toxicity_block(rows, "icans"), "haematologic": haematologic(rows), "kinetics": kinetic(rows),
            "survival": {name: kaplan_meier([r[f"_{name}"] for r in rows]) for name in SURVIVAL},
            "subjects": [public(r) for r in rows]}


def public(row: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.isoformat() if isinstance(v, dt.date) else v) for k, v in row.items() if not k.startswith("_")}


def characteristics(rows: list[dict[str, Any]]) -> dict[str, Any]:
    sexes = Counter(r["sex"] for r in rows)
    return {"age_years": f.stats(r["age_years"] for r in rows),
            "sex": {"M": sexes["M"], "F": sexes["F"], **({"U": sexes["U"]} if sexes["U"] else {})},
            "product_source": dict(sorted(Counter(r["product_source"] for r in rows).items())),
            "antigen_expression_pct": f.stats(r["antigen_expression_pct"] for r in rows),
            "prior_hsct": sum(1 for r in rows if r["prior_hsct"]),
            "prior_car_t": sum(1 for r in rows if r["prior_car_t"])}


def dosing(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {"dose_cells_per_kg": f.stats(r["dose_cells_per_kg"] for r in rows),
            "split_doses": sum(1 for r in rows if r["fractions"] > 1),
            "reinfused_subjects": sum(1 for r in rows if r["reinfused"])}


def response(rows: list[dict[str, Any]], records: TrialRecords) -> dict[str, Any]:
    counts = Counter(r["response"] for r in rows)
    responders = counts["CR"] + counts["CRi"]
    return {"visit": records.primary_visit.code if records.primary_visit else None,
            "counts": {key: counts[key] for key in ("CR", "CRi", "PR", "NR", "PD")},
            "not_assessed": counts[None], "cr_cri": f.rate(responders, len(rows)),
            "mrd_negative": f.rate(sum(1 for r in rows if r["mrd_negative"]), len(rows))}


def toxicity_block(rows: list[dict[str, Any]], category: str) -> dict[str, Any]:
    prefix = f"{category}_"
    return f.toxicity_summary([{k[len(prefix):]: v for k, v in r.items() if k.startswith(prefix)} for r in rows])


def haematologic(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {key: f.stats(r[key] for r in rows)
            for key in ("anc_below_500_days", "neutrophil_recovery_day", "platelet_recovery_day")}


def kinetic(rows: list[dict[str, Any]]) -> dict[str, Any]:
    aplasia = [r["b_cell_aplasia"] for r in rows if r["b_cell_aplasia"] is not None]
    return {"analyte": QPCR, "baseline_log10": f.stats(r["baseline_log10"] for r in rows),
            "cmax_log10": f.stats(r["cmax_log10"] for r in rows), "tmax_days": f.stats(r["tmax_day"] for r in rows),
            "auc_0_28": f.stats(r["auc_0_28"] for r in rows),
            "persistence_days": f.stats(r["persistence_day"] for r in rows),
            "b_cell_aplasia": f.rate(sum(aplasia), len(aplasia)), "lloq_rule": LLOQ_RULE, "auc_rule": AUC_RULE}
