"""The trial summary page (admin) and each of its plots cost the same number of queries for one treated subject
as for five: the summary reads the trial's records in a fixed number of queries (STYLE §11)."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from summaries.plots import FORMATS, PLOTS
from tests.summaries.conftest import treated

pytestmark = pytest.mark.django_db


def urls(world: Any) -> list[str]:
    page = f"/admin/trials/trial/{world.trial.pk}/summary/"
    return [page, *(f"{page}{name}.{fmt}" for name in PLOTS for fmt in FORMATS)]


def counts(client: Any, world: Any) -> dict[str, int]:
    result = {}
    for url in urls(world):
        client.get(url, {"course": "1"})  # warm up (session, content types)
        with CaptureQueriesContext(connection) as ctx:
            response = client.get(url, {"course": "1"})
        assert response.status_code == 200, response.content[:300]
        result[url] = len(ctx.captured_queries)
    return result


def add_subjects(world: Any, numbers: range) -> None:
    for n in numbers:
        treated(world, site=world.site_a, coordinator=world.coordinator, investigator=world.investigator,
                number=f"A{n}")


def test_summary_page_and_plots_cost_the_same_queries_for_one_subject_and_five(trial_with_d12, login):
    world = trial_with_d12
    client = login(world.coordinator)
    add_subjects(world, range(1))
    one = counts(client, world)
    add_subjects(world, range(1, 5))
    five = counts(client, world)
    assert "5 subjects at your sites" in client.get(urls(world)[0], {"course": "1"}).content.decode()
    assert five == one
