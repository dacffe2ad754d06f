"""A subject's lab results page and its plots (admin) cost the same number of queries for one draw as for ten:
the table, the PNG and the SVG read the subject's results in a fixed number of queries (STYLE §11)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from assays.services import ResultIn, ingest_results
from patients.models import AdverseEvent
from patients.services import safety
from tests.factories import days_ago, infused_subject

pytestmark = pytest.mark.django_db

PAGES = [("admin:patients_subject_labs", ()), ("admin:patients_subject_lab_plot", ("png",)),
         ("admin:patients_subject_lab_plot", ("svg",))]


def with_draws(world: Any, n: int) -> Any:
    """An infused subject with a CRS episode and ``n`` draws twelve hours apart, each with CRP, ANC and CAR
    transgene copies (graded, flagged and plotted)."""
    subject = infused_subject(trial=world.trial, site=world.site_a, coordinator=world.coordinator,
                              investigator=world.investigator, day0=days_ago(10))
    safety.record_adverse_event(subject=subject, by=world.coordinator, data=safety.EventInput(
        category=AdverseEvent.Category.CRS, term="Cytokine release syndrome", onset_on=days_ago(8),
        related_to_product="probable", related_to_lymphodepletion="not_related"))
    start = dt.datetime.combine(days_ago(9), dt.time(8), tzinfo=dt.UTC)
    rows = [ResultIn(source_ref=f"{subject.code}-{d}-{code}", subject=subject.code,
                     accession_number=f"ACC-{subject.code}-{d}", specimen="pb",
                     collected_at=start + dt.timedelta(hours=12 * d), analyte=code, value=value, unit=unit)
            for d in range(n) for code, value, unit in (("CRP", "85", "mg/L"), ("ANC", "0.3", "10*9/L"),
                                                        ("CAR_QPCR", str(1000 * (d + 1)), "{copies}/ug"))]
    ingest_results(rows=rows, by=world.coordinator)
    return subject


def queries(client: Any, url: str) -> int:
    client.get(url)  # warm up (session, content types)
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url)
    assert response.status_code == 200, response.content[:300]
    return len(ctx.captured_queries)


def test_lab_results_page_and_plots_cost_the_same_queries_for_one_draw_and_ten(world, login):
    one, ten = with_draws(world, 1), with_draws(world, 10)
    assert (one.lab_draws.count(), ten.lab_draws.count()) == (1, 10)
    client = login(world.coordinator)
    for name, args in PAGES:
        assert queries(client, reverse(name, args=[ten.pk, *args])) == queries(
            client, reverse(name, args=[one.pk, *args])), name
    page = client.get(reverse("admin:patients_subject_labs", args=[ten.pk])).content.decode()
    assert all(f"ACC-{ten.code}-{d}" in page for d in range(10))
