"""Reads are query-bounded: a page of the audit trail and the whole export cost the same number of
queries for N and 3N subjects (users, sites and subjects are joined, never fetched per row)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from audit.selectors import AuditFilters, iter_audit_entries, list_audit_entries
from tests.audit.conftest import amend, scope_of, screen
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

N = 2


def populate(world: Any, count: int) -> None:
    """``count`` subjects per site, each amended once, by different people."""
    for n in range(count):
        a = screen(world, prior_lines=n)
        amend(a, world.investigator, "correction", prior_lines=n + 1)
        screen(world, site=world.site_b, by=world.coordinator_b)


def queries(action: Callable[[], Any]) -> int:
    with CaptureQueriesContext(connection) as captured:
        action()
    return len(captured)


def test_a_page_of_entries_is_two_queries(world):
    populate(world, N)
    scope = scope_of(world.data_manager)

    def page() -> list[Any]:
        entries = list_audit_entries(scope=scope, newest_first=True)
        entries.count()
        return [(e.who, e.site_code, e.subject_code, e.changes) for e in entries[0:50]]

    assert queries(page) == 2  # the count and the page
    populate(world, 2 * N)
    assert queries(page) == 2
    assert len(page()) == 50


def test_the_export_is_one_query_for_any_size(world):
    populate(world, N)
    scope = scope_of(world.data_manager)

    def everything() -> int:
        return len(list(iter_audit_entries(scope=scope, filters=AuditFilters(), chunk_size=7)))

    assert queries(everything) == 1  # one server-side cursor, read in chunks
    first = everything()
    populate(world, 2 * N)
    assert queries(everything) == 1
    assert everything() == first + 2 * N * 7  # per pair: 2 subjects, 2 transitions, 2 site counters, 1 amendment


@pytest.mark.parametrize("url_name", ["admin:audit_auditevent_changelist", "admin:audit_export"])
def test_admin_pages_cost_the_same_for_n_and_3n_subjects(world, login, url_name):
    root = UserFactory(username="root", is_superuser=True)
    counts = {}
    for size in (N, 2 * N):
        populate(world, size)
        for user in (world.data_manager, world.monitor, root):
            client = login(user)

            def fetch(client: Any = client) -> None:
                response = client.get(reverse(url_name))
                assert response.status_code == 200
                if response.streaming:
                    b"".join(response.streaming_content)
                else:
                    response.render()

            counts[(size, user.username)] = queries(fetch)
    for user in (world.data_manager, world.monitor, root):
        assert counts[(N, user.username)] == counts[(2 * N, user.username)], counts


def test_subject_history_costs_the_same_for_few_and_many_records(world, login):
    subject = screen(world)
    client = login(world.data_manager)
    url = reverse("admin:audit_subject_history", args=[subject.pk])
    before = queries(lambda: client.get(url))
    for n in range(3):
        amend(subject, world.coordinator, f"correction {n}", prior_lines=n + 1)
    assert queries(lambda: client.get(url)) == before


def test_api_page_costs_the_same_for_n_and_3n_subjects(world, login):
    client = login(world.data_manager)
    populate(world, N)
    few = queries(lambda: client.get("/api/v1/audit-events/", {"page_size": 10}))
    populate(world, 2 * N)
    assert queries(lambda: client.get("/api/v1/audit-events/", {"page_size": 10})) == few
