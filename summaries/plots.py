"""The summary's figures, drawn server-side with matplotlib (Agg) as SVG or PNG.

Every element drawn for one subject or episode carries an id (``gid``: "subject-<code>", "episode-<code>-<n>"),
so an SVG can be checked, and read, per subject. Course days come from the subjects' timelines.
"""

from __future__ import annotations

import io
import statistics
from collections.abc import Callable
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: render to files only

from matplotlib.figure import Figure  # noqa: E402  (after the backend is chosen)

from summaries.definitions import DAYS_PER_MONTH, QPCR  # noqa: E402
from summaries.figures import course_episodes  # noqa: E402
from summaries.kinetics import after_day0, quantified  # noqa: E402
from summaries.records import SubjectRecords, TrialRecords  # noqa: E402
from summaries.summary import subject_rows  # noqa: E402

CYTOKINES = ("IL6", "CRP", "FERRITIN")
FORMATS = {"svg": "image/svg+xml", "png": "image/png"}


def render(figure: Figure, fmt: str) -> bytes:
    out = io.BytesIO()
    figure.savefig(out, format=fmt, dpi=100, bbox_inches="tight", metadata={"Date": None} if fmt == "svg" else None)
    return out.getvalue()


def treated(records: TrialRecords, course: int) -> list[SubjectRecords]:
    return [s for s in records.subjects if s.timeline.day0_of(course) is not None]


def expansion(records: TrialRecords, course: int) -> Figure:
    """CAR transgene copies/ug after day 0 per subject on a log scale, with the cohort median per course day."""
    figure = Figure(figsize=(8, 5))
    axes = figure.subplots()
    lloq = records.lloq.get(QPCR)
    by_day: dict[int, list[float]] = {}
    for s in treated(records, course):
        points = [(p.day, p.sample.value or 0.0) for p in after_day0(s.samples.get(QPCR, []), s.timeline, course)
                  if quantified(p.sample, lloq)]
        for d, v in points:
            by_day.setdefault(d, []).append(v)
        axes.plot([d for d, _ in points], [v for _, v in points], marker="o", linewidth=1, alpha=0.6,
                  label=s.code, gid=f"subject-{s.code}")
    days = sorted(by_day)
    axes.plot(days, [statistics.median(by_day[d]) for d in days], color="black", linewidth=3, label="median",
              gid="cohort-median")
    if lloq:
        axes.axhline(lloq, color="grey", linestyle=":", label="LLOQ")
    axes.set_yscale("log")
    axes.set(xlabel=f"Day after infusion (course {course})", ylabel="CAR transgene (copies/µg gDNA)",
             title=f"{records.trial}: CAR-T expansion and persistence")
    axes.legend(fontsize="x-small", ncol=2)
    return figure


def cytokines(records: TrialRecords, course: int) -> Figure:
    """IL-6, CRP and ferritin from 3 days before to 14 days after the onset of each CRS episode."""
    figure = Figure(figsize=(12, 4))
    panels = figure.subplots(1, len(CYTOKINES))
    for s in treated(records, course):
        for n, episode in enumerate(course_episodes(s, course, "crs"), start=1):
            for axes, code in zip(panels, CYTOKINES, strict=True):
                points = [(s.timeline.study_day(x.on), x.value) for x in s.samples.get(code, [])
                          if x.value is not None]
                onset = s.timeline.study_day(episode.onset_on) or 0
                near = [(d - onset, v) for d, v in points if d is not None and -3 <= d - onset <= 14]
                axes.plot([d for d, _ in near], [v for _, v in near], marker=".", label=f"{s.code} #{n}",
                          gid=f"episode-{s.code}-{n}-{code}")
    for axes, code in zip(panels, CYTOKINES, strict=True):
        axes.axvline(0, color="grey", linestyle=":")
        axes.set(yscale="log", title=code, xlabel="Day from CRS onset")
    figure.suptitle(f"{records.trial}: cytokines around CRS (course {course})")
    return figure


def swimmer(records: TrialRecords, course: int) -> Figure:
    """One lane per subject from day 0 to the last record: infusions, CRS/ICANS, response, relapse, HSCT, death."""
    subjects = treated(records, course)
    figure = Figure(figsize=(9, max(3, 0.4 * len(subjects) + 1)))
    axes = figure.subplots()
    for lane, s in enumerate(subjects):
        _lane(axes, lane, s, course)
    axes.set_yticks(range(len(subjects)), [s.code for s in subjects], fontsize="small")
    axes.set(xlabel=f"Day after infusion (course {course})", title=f"{records.trial}: course of each subject")
    handles = {str(h.get_label()): h for h in axes.get_lines() if not str(h.get_label()).startswith("_")}
    axes.legend(list(handles.values()), list(handles), fontsize="x-small", loc="lower right")
    return figure


MARKS: dict[str, tuple[str, str]] = {"infusion": ("v", "tab:blue"), "crs": ("^", "tab:orange"),
                                     "icans": ("s", "tab:purple"), "response": ("o", "tab:green"),
                                     "relapse": ("X", "tab:red"), "allo_hsct": ("D", "tab:cyan"),
                                     "death": ("*", "black")}


def _lane(axes: Any, lane: int, s: SubjectRecords, course: int) -> None:
    day: Callable[[Any], int | None] = lambda on: s.timeline.course_day(on, course)  # noqa: E731
    marks = [("infusion", f.infused_on) for f in s.fractions]
    marks += [(e.category, e.onset_on) for e in s.episodes]
    marks += [("relapse" if a.category in ("relapse", "pd") else "response", a.assessed_on) for a in s.assessments]
    marks += [(e.kind, e.on) for e in s.events if e.kind in ("allo_hsct", "death")]
    days = [d for _k, on in marks if (d := day(on)) is not None]
    end = max([0, *days, *(d for e in s.events if (d := day(e.on)) is not None)])
    axes.barh(lane, end, left=0, height=0.5, color="lightgrey", gid=f"subject-{s.code}")
    for kind, on in marks:
        marker, colour = MARKS[kind]
        axes.plot([day(on)], [lane], marker=marker, color=colour, linestyle="", label=kind)


def kaplan_meier_curves(records: TrialRecords, course: int) -> Figure:
    """OS, EFS, LFS and DOR: Kaplan-Meier curves with censoring marks and numbers at risk."""
    from lifelines import KaplanMeierFitter

    rows = subject_rows(records, course)
    figure = Figure(figsize=(11, 9))
    for i, name in enumerate(("os", "efs", "lfs", "dor"), start=1):
        axes = figure.add_subplot(2, 2, i)
        times = [r[f"_{name}"] for r in rows if r[f"_{name}"] is not None]
        axes.set(title=name.upper(), xlabel="Months", ylabel="Probability", ylim=(0, 1.05))
        if not times:
            continue
        fitter = KaplanMeierFitter(label=name.upper()).fit([t.days / DAYS_PER_MONTH for t in times],
                                                           [t.event for t in times])
        fitter.plot_survival_function(ax=axes, show_censors=True, ci_show=True)
        at_risk_row(axes, [t.days / DAYS_PER_MONTH for t in times])
    figure.suptitle(f"{records.trial}: survival (course {course})")
    figure.tight_layout()
    return figure


def at_risk_row(axes: Any, months: list[float]) -> None:
    """Numbers at risk (subjects whose time is at or after the tick) under each tick of the time axis.
    (lifelines' add_at_risk_counts does not run on pandas 3.)"""
    ticks = [t for t in axes.get_xticks() if 0 <= t <= max(months)]
    axes.set_xticks(ticks)
    for tick in ticks:
        axes.text(tick, -0.22, str(sum(1 for m in months if m >= tick)), transform=axes.get_xaxis_transform(),
                  ha="center", fontsize="small", gid="at-risk")
    axes.text(0, -0.3, "At risk", transform=axes.get_xaxis_transform(), ha="left", fontsize="small")


PLOTS: dict[str, Callable[[TrialRecords, int], Figure]] = {
    "expansion": expansion, "cytokines": cytokines, "swimmer": swimmer, "survival": kaplan_meier_curves}
