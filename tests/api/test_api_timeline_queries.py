"""A subject's timeline through the API (the subject, its courses, infusions, draws and results, each row
with its study day and course day) and on the admin's subject page costs the same number of queries for a
subject with one course and one lab draw as for a re-infused subject with two courses and ten draws
(issue 14, registry scale: the count must not grow with the data). Also the results' collection-time filter
that the registry benchmark uses."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from tests.api.support import api_client, post_results, result_row
from tests.factories import days_ago, infused_subject, reinfusable_subject, reinfuse

pytestmark = pytest.mark.django_db

TIMELINE = ["/api/v1/subjects/{code}/", "/api/v1/subjects/{code}/transitions/",
            "/api/v1/lymphodepletion-courses/?subject={code}", "/api/v1/infusions/?subject={code}",
            "/api/v1/lab-draws/?subject={code}", "/api/v1/results/?subject={code}"]


def draws(lab: Any, subject: Any, n: int, *, first: dt.date) -> None:
    """``n`` draws twelve hours apart from 08:00 UTC on ``first``, two results each."""
    def collected(d: int) -> str:
        return (dt.datetime.combine(first, dt.time(8), tzinfo=dt.UTC) + dt.timedelta(hours=12 * d)).isoformat()

    rows = [result_row(subject, 10 * d + k, source_ref=f"{subject.code}-{d}-{k}",
                       accession_number=f"{subject.code}-{d}", collected_at=collected(d), analyte=analyte,
                       value="12.5", unit=unit)
            for d in range(n) for k, (analyte, unit) in enumerate((("CRP", "mg/L"), ("FERRITIN", "ng/mL")))]
    assert post_results(lab, {"results": rows}).status_code == 201


def short_and_long(world: Any, lab: Any) -> tuple[Any, Any]:
    people = {"trial": world.trial, "site": world.site_a, "coordinator": world.coordinator,
              "investigator": world.investigator}
    short = infused_subject(**people, day0=days_ago(14))
    draws(lab, short, 1, first=days_ago(3))
    long = reinfusable_subject(**people, day0=days_ago(14), lot_released_on=days_ago(12))
    reinfuse(long, by=world.coordinator, day0=days_ago(8))
    draws(lab, long, 10, first=days_ago(7))
    return short, long


def queries(client: Any, url: str) -> int:
    client.get(url)  # warm up (session, content types)
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(url)
    assert response.status_code == 200, response.content[:300]
    return len(ctx.captured_queries)


def test_timeline_reads_cost_the_same_queries_for_one_course_and_two(world, lab):
    short, long = short_and_long(world, lab)
    assert long.lab_draws.count() == 10 and long.infusions.count() == 2
    client = api_client(world.coordinator)
    for url in TIMELINE:
        assert queries(client, url.format(code=long.code)) == queries(client, url.format(code=short.code)), url


def test_admin_subject_page_costs_the_same_queries_for_one_course_and_two(world, lab, login):
    short, long = short_and_long(world, lab)
    client = login(world.coordinator)
    page = "admin:patients_subject_change"
    assert queries(client, reverse(page, args=[long.pk])) == queries(client, reverse(page, args=[short.pk]))


def test_results_filter_by_collection_time(world, lab):
    short, long = short_and_long(world, lab)
    client = api_client(world.coordinator)
    since = dt.datetime.combine(days_ago(5), dt.time(0), tzinfo=dt.UTC)
    response = client.get("/api/v1/results/", {"subject": long.code, "collected_after": since.isoformat(),
                                                "collected_before": (since + dt.timedelta(days=1)).isoformat()})
    assert response.status_code == 200
    assert {row["source_ref"] for row in response.json()["results"]} == {
        f"{long.code}-{d}-{k}" for d in (4, 5) for k in (0, 1)}
    bad = client.get("/api/v1/results/", {"collected_after": "yesterday"})
    assert bad.status_code == 400 and bad.json()["code"] == "invalid"
    assert "collected_after" in bad.json()["field_errors"]
