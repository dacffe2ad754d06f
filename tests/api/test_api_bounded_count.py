"""A list counts its rows only up to a cap (README "API overview", pagination): below it ``count`` is exact and
the pages are Django's; above it ``count`` is the cap with ``count_is_lower_bound`` true, ``next`` still leads
page by page to the last row, and a page costs the same number of queries either way. The cap (10,000 rows)
is lowered here so that a handful of rows crosses it."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from config.api import COUNT_CAP, BoundedCountPaginator
from tests.api.support import api_client, post_results, result_row, token_client
from tests.factories import consented
from trials.services import issue_service_account

pytestmark = pytest.mark.django_db

ROWS = 7


@pytest.fixture
def results(world: Any, lab: Any) -> Any:
    """Seven results of one subject at site A, and another site's result that no count may include."""
    subject = consented(trial=world.trial, site=world.site_a, coordinator=world.coordinator)
    rows = [result_row(subject, i, source_ref=f"R-{i}", accession_number=f"ACC-{i}") for i in range(ROWS)]
    assert post_results(lab, {"results": rows}).status_code == 201
    other = consented(trial=world.trial, site=world.site_b, coordinator=world.coordinator_b)
    _account, token = issue_service_account(trial=world.trial, sites=[world.site_b], name="Lab B",
                                            by=world.data_manager)
    assert post_results(token_client(token), {"results": [result_row(other, 99, source_ref="B-99")]}
                        ).status_code == 201
    return subject


def follow(client: Any, url: str) -> list[dict[str, Any]]:
    """Every page from ``url`` by its next links."""
    pages = []
    while url:
        response = client.get(url)
        assert response.status_code == 200, response.json()
        pages.append(response.json())
        url = pages[-1]["next"]
    return pages


def test_below_the_cap_the_count_is_exact_and_the_last_page_is_known(world, results):
    assert COUNT_CAP == 10_000
    client = api_client(world.coordinator)
    body = client.get("/api/v1/results/", {"page_size": 3}).json()
    assert (body["count"], body["count_is_lower_bound"], len(body["results"])) == (ROWS, False, 3)
    last = client.get("/api/v1/results/", {"page_size": 3, "page": "last"}).json()
    assert (last["count"], len(last["results"]), last["next"]) == (ROWS, 1, None)


def test_above_the_cap_the_count_is_a_lower_bound_and_next_reaches_every_row(world, results, monkeypatch):
    monkeypatch.setattr(BoundedCountPaginator, "cap", 5)
    client = api_client(world.coordinator)
    pages = follow(client, "/api/v1/results/?page_size=3")
    assert [len(p["results"]) for p in pages] == [3, 3, 1]
    assert {(p["count"], p["count_is_lower_bound"]) for p in pages} == {(5, True)}
    assert len({r["id"] for p in pages for r in p["results"]}) == ROWS  # the other site's result is not there
    assert pages[-1]["previous"] and pages[0]["previous"] is None
    previous = client.get(pages[-1]["previous"]).json()
    assert previous["results"] == pages[1]["results"]


def test_above_the_cap_a_page_past_the_end_and_the_last_page_are_not_found(world, results, monkeypatch):
    monkeypatch.setattr(BoundedCountPaginator, "cap", 5)
    client = api_client(world.coordinator)
    for page in ("4", "last"):
        response = client.get("/api/v1/results/", {"page_size": 3, "page": page})
        assert (response.status_code, response.json()["code"]) == (404, "not_found")
    response = client.get("/api/v1/results/", {"page_size": 3, "page": "0"})
    assert response.status_code == 404


def test_a_filtered_list_under_the_cap_stays_exact(world, results, monkeypatch):
    monkeypatch.setattr(BoundedCountPaginator, "cap", 5)
    client = api_client(world.coordinator)
    draws = client.get("/api/v1/lab-draws/", {"subject": results.code, "accession_number": "ACC-1"}).json()
    assert (draws["count"], draws["count_is_lower_bound"], len(draws["results"])) == (1, False, 1)
    every = client.get("/api/v1/lab-draws/").json()
    assert (every["count"], every["count_is_lower_bound"]) == (5, True)


def page_queries(client: Any, url: str) -> int:
    client.get(url)  # the session and memberships, cached for the measured request as for any other
    with CaptureQueriesContext(connection) as queries:
        assert client.get(url).status_code == 200
    return len(queries)


def test_a_page_costs_the_same_queries_below_and_above_the_cap(world, results, monkeypatch):
    client = api_client(world.coordinator)
    below = page_queries(client, "/api/v1/results/?page_size=3&page=2")
    monkeypatch.setattr(BoundedCountPaginator, "cap", 5)
    assert page_queries(client, "/api/v1/results/?page_size=3&page=2") == below
