"""The admin summary page of a trial (linked from the trial's change page): the summary's tables, the per-subject
rows and the plots (SVG and PNG, downloadable), for the cohort and course chosen, from the user's sites only."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.contrib import admin
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.urls import path, reverse
from django.utils import timezone

from summaries.plots import CYTOKINES, FORMATS, PLOTS
from summaries.plots import render as render_plot
from summaries.selectors import load_trial_records
from summaries.summary import summarise
from trials.access import access_of
from trials.models import Cohort, Trial

COLUMNS = ["subject", "site", "cohort", "dose_cells_per_kg", "response", "mrd_negative", "crs_max_grade",
           "icans_max_grade", "anc_below_500_days", "cmax", "tmax_day", "auc_0_28", "persistence_day",
           "os_months", "os_event", "efs_months", "efs_event"]
PLOT_TITLES = {"expansion": "CAR-T expansion (log scale) per subject with the cohort median",
               "cytokines": "IL-6, CRP and ferritin around each CRS episode",
               "swimmer": "Swimmer plot: infusions, CRS/ICANS, response, relapse, HSCT, death",
               "survival": "Kaplan-Meier curves with censoring marks and numbers at risk"}


def trial_for(request: HttpRequest, pk: int) -> Trial:
    """The trial if the user holds a role in it; otherwise 404 (its existence is not confirmed)."""
    access = access_of(request.user)
    trial = Trial.objects.filter(pk=pk).first()
    if trial is None or not (access.is_superuser or trial.pk in access.trial_ids):
        raise Http404
    return trial


def choices(request: HttpRequest, trial: Trial) -> tuple[Cohort | None, int]:
    """The cohort and course chosen; an unknown cohort or course shows the whole trial's first course."""
    cohort = Cohort.objects.filter(trial=trial, code=request.GET.get("cohort") or "").first()
    course = 2 if request.GET.get("course") == "2" else 1
    return cohort, course


def summary_page(request: HttpRequest, pk: int) -> HttpResponse:
    trial = trial_for(request, pk)
    cohort, course = choices(request, trial)
    summary = summarise(load_trial_records(user=request.user, trial=trial, cohort=cohort), course, now=timezone.now())
    query = urlencode({"cohort": cohort.code if cohort else "", "course": course})
    plots = [{"title": PLOT_TITLES[name], **{fmt: f"{reverse('trial-summary-plot', args=[pk, name, fmt])}?{query}"
                                             for fmt in FORMATS}} for name in PLOTS]
    return render(request, "admin/summaries/summary.html", {
        **admin.site.each_context(request), "trial": trial, "summary": summary, "cohorts": trial.cohorts.all(),
        "courses": [1, 2], "query": query, "sections": sections(summary), "plots": plots, "columns": COLUMNS,
        "rows": [[row[c] for c in COLUMNS] for row in summary["subjects"]]})


def summary_plot(request: HttpRequest, pk: int, name: str, fmt: str) -> HttpResponse:
    if name not in PLOTS or fmt not in FORMATS:
        raise Http404
    trial = trial_for(request, pk)
    cohort, course = choices(request, trial)
    extra = CYTOKINES if name == "cytokines" else ()
    records = load_trial_records(user=request.user, trial=trial, cohort=cohort, extra_analytes=extra)
    response = HttpResponse(render_plot(PLOTS[name](records, course), fmt), content_type=FORMATS[fmt])
    if request.GET.get("download"):
        response["Content-Disposition"] = f'attachment; filename="{trial.code}-{name}-course{course}.{fmt}"'
    return response


def _stats(label: str, s: dict[str, Any]) -> tuple[str, int, str]:
    return label, s["n"], "—" if s["median"] is None else f"{s['median']:g} ({s['min']:g}–{s['max']:g})"


def _rate(label: str, r: dict[str, Any]) -> tuple[str, int, str]:
    return label, r["of"], f"{r['n']}/{r['of']}" + ("" if r["rate"] is None else f" ({r['rate']:.0%})")


def sections(summary: dict[str, Any]) -> list[dict[str, Any]]:
    """The summary as tables of (figure, n, value); medians with their ranges."""
    c, d, r, k = summary["characteristics"], summary["dosing"], summary["response"], summary["kinetics"]
    n = summary["n_subjects"]
    tox = [{"title": name.upper(), "rows": [
        *((f"Max grade {g}", n, v) for g, v in summary[name]["max_grade_counts"].items()),
        ("Grade ≥ 3", n, summary[name]["grade_3_or_more"]), _stats("Onset day", summary[name]["onset_day"]),
        _stats("Duration (days)", summary[name]["duration_days"]), ("Tocilizumab", n, summary[name]["tocilizumab"]),
        ("Corticosteroids", n, summary[name]["corticosteroids"])]} for name in ("crs", "icans")]
    km = [(f"{name.upper()}: events; median months (95% CI); 12-month rate", v["n"],
           f"{v['events']}; {v['median_months']} ({v['median_ci'][0]}–{v['median_ci'][1]}); {v['rate_12m']}")
          for name, v in summary["survival"].items()]
    return [
        {"title": "Characteristics", "rows": [
            _stats("Age (years)", c["age_years"]), *((f"Sex {key}", n, v) for key, v in c["sex"].items()),
            *((f"Product {key}", n, v) for key, v in c["product_source"].items()),
            _stats("Target antigen on blasts (%)", c["antigen_expression_pct"]), ("Prior HSCT", n, c["prior_hsct"]),
            ("Prior CAR-T", n, c["prior_car_t"])]},
        {"title": "Dosing", "rows": [_stats("Dose (cells/kg)", d["dose_cells_per_kg"]),
                                     ("Split doses", n, d["split_doses"]),
                                     ("Re-infused subjects", n, d["reinfused_subjects"])]},
        {"title": f"Response at {r['visit']}", "rows": [
            *((key, n, v) for key, v in r["counts"].items()), ("Not assessed", n, r["not_assessed"]),
            _rate("CR/CRi", r["cr_cri"]), _rate("MRD-negative", r["mrd_negative"])]},
        *tox,
        {"title": "Haematologic toxicity", "rows": [
            _stats("Days with ANC < 0.5", summary["haematologic"]["anc_below_500_days"]),
            _stats("Neutrophil recovery day", summary["haematologic"]["neutrophil_recovery_day"]),
            _stats("Platelet recovery day", summary["haematologic"]["platelet_recovery_day"])]},
        {"title": f"Kinetics ({k['analyte']})", "rows": [
            _stats("Baseline (log10)", k["baseline_log10"]), _stats("Cmax (log10)", k["cmax_log10"]),
            _stats("Tmax (day)", k["tmax_days"]), _stats("AUC 0-28", k["auc_0_28"]),
            _stats("Persistence (day)", k["persistence_days"]), _rate("B-cell aplasia", k["b_cell_aplasia"]),
            ("Below LLOQ", n, k["lloq_rule"])]},
        {"title": "Survival (Kaplan-Meier)", "rows": km},
    ]


urlpatterns = [
    path("trials/trial/<int:pk>/summary/", admin.site.admin_view(summary_page), name="trial-summary-page"),
    path("trials/trial/<int:pk>/summary/<str:name>.<str:fmt>", admin.site.admin_view(summary_plot),
         name="trial-summary-plot"),
]
