"""A subject's lab results for the admin: a table by draw and analyte, and plots (matplotlib, Agg backend).

The table shows each current result (corrections supersede, cancellations drop out) with its reference
range indicator as SDTM LBNRIND names it (LOW, NORMAL, HIGH) and its CTCAE grade, both set at ingestion
(``assays.ranges``, ``assays.lab_grading``). Study days come from ``patients.timeline``.
"""

from __future__ import annotations

import datetime as dt
import io
from dataclasses import dataclass
from typing import Any

import matplotlib

matplotlib.use("Agg")  # a server: no display, and no GUI toolkit imported

from matplotlib.figure import Figure  # noqa: E402  (after the backend is chosen)

from assays.models import Result  # noqa: E402
from patients.models import AdverseEvent, Subject  # noqa: E402
from patients.timeline import Timeline, local_date, local_date_of, timeline_of  # noqa: E402

NRIND = {Result.Flag.LOW: "LOW", Result.Flag.NORMAL: "NORMAL", Result.Flag.HIGH: "HIGH"}
CRS_PANEL = ("CRP", "IL6", "FERRITIN", "ANC")
CAR_COPIES = "CAR_QPCR"
DAYS_BEFORE_CRS, DAYS_AFTER_CRS = 3, 14  # the window plotted around each CRS episode's onset
FORMATS = {"png": "image/png", "svg": "image/svg+xml"}


@dataclass(frozen=True)
class LabRow:
    """One draw: when (site time), its study day, and its results by analyte code."""

    accession: str
    collected: dt.datetime
    study_day: int | None
    cells: dict[str, Result]


def current_results(subject: Subject) -> list[Result]:
    """The subject's current results, with draw and analyte (one query)."""
    return list(Result.objects.filter(subject=subject, superseded=False).exclude(status=Result.Status.CANCELLED)
                .select_related("draw", "analyte").order_by("draw__collected_at", "draw_id", "analyte__code", "pk"))


def lab_table(subject: Subject) -> tuple[list[str], list[LabRow]]:
    """Analyte codes (the columns) and one row per draw, in time order."""
    results = current_results(subject)
    timeline, tz = timeline_of(subject), subject.site.tzinfo
    rows: dict[int, LabRow] = {}
    for result in results:
        draw = result.draw
        if draw.pk not in rows:
            collected = draw.collected_at.astimezone(tz)
            day = timeline.study_day(local_date_of(draw.collected_at, tz))
            rows[draw.pk] = LabRow(draw.accession_number, collected, day, {})
        rows[draw.pk].cells[result.analyte.code] = result
    return sorted({r.analyte.code for r in results}), list(rows.values())


def _series(results: list[Result], code: str, tz: Any) -> list[tuple[dt.date, float]]:
    points = []
    for r in results:
        day = local_date(r.draw.collected_at, tz)
        if r.analyte.code == code and r.value is not None and day is not None:
            points.append((day, r.value))
    return points


def _on_study_days(timeline: Timeline, points: list[tuple[dt.date, float]]) -> list[tuple[int, float]]:
    """(study day, value) of dated values; none before the subject has a day 0."""
    return [(x, value) for day, value in points if (x := timeline.study_day(day)) is not None]


def _crs_axes(fig: Figure, grid: Any, results: list[Result], episodes: list[dt.date], timeline: Timeline,
              tz: Any) -> None:
    for row, onset in enumerate(episodes):
        onset_day = timeline.study_day(onset)
        for col, code in enumerate(CRS_PANEL):
            ax = fig.add_subplot(grid[row, col])
            points = _on_study_days(timeline, [(day, value) for day, value in _series(results, code, tz)
                                               if -DAYS_BEFORE_CRS <= (day - onset).days <= DAYS_AFTER_CRS])
            ax.plot([x for x, _ in points], [y for _, y in points], marker="o")
            if onset_day is not None:
                ax.axvline(onset_day, color="tab:red", linestyle="--", linewidth=1)
                ax.set_xlim(onset_day - DAYS_BEFORE_CRS - 0.5, onset_day + DAYS_AFTER_CRS + 0.5)
            if not points:
                ax.text(0.5, 0.5, "no result", transform=ax.transAxes, ha="center", fontsize=8)
            ax.set_title(f"{code}, CRS onset {onset:%d %b %Y}", fontsize=8)
            ax.set_xlabel("study day", fontsize=7)
            ax.tick_params(labelsize=7)


def lab_figure(subject: Subject) -> Figure:
    """CRP, IL-6, ferritin and ANC around each CRS episode, and CAR transgene copies over time (log scale)."""
    results, timeline, tz = current_results(subject), timeline_of(subject), subject.site.tzinfo
    episodes = list(subject.adverse_events.filter(category=AdverseEvent.Category.CRS).order_by("onset_on")
                    .values_list("onset_on", flat=True))
    fig = Figure(figsize=(10.5, 3.2 * (len(episodes) + 1)), layout="constrained")  # fits a 1,366 px screen
    grid = fig.add_gridspec(len(episodes) + 1, len(CRS_PANEL))
    _crs_axes(fig, grid, results, episodes, timeline, tz)
    ax = fig.add_subplot(grid[len(episodes), :])
    copies = _on_study_days(timeline, [(day, value) for day, value in _series(results, CAR_COPIES, tz) if value > 0])
    ax.plot([x for x, _ in copies], [y for _, y in copies], marker="o")
    ax.set_yscale("log")
    ax.set_title(f"{subject.code}: CAR transgene (copies/µg DNA)" + ("" if episodes else "; no CRS episode recorded"),
                 fontsize=9)
    ax.set_xlabel("study day (day 0 = first CAR-T infusion)", fontsize=8)
    return fig


def render(fig: Figure, fmt: str) -> bytes:
    """The figure as PNG or SVG bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format=fmt, dpi=100)
    return buffer.getvalue()
