"""A summary's queries do not grow with its subjects and results, a site sees only its own subjects' figures,
and a bad cohort or course is refused by field."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from tests.api.support import api_client
from tests.summaries.conftest import treated

pytestmark = pytest.mark.django_db
def summary_queries(world: Any) -> tuple[int, dict[str, Any]]:
    client = api_client(world.data_manager)
    client.get("/api/v1/trials/")  # the session and the caller's memberships, as any request
    with CaptureQueriesContext(connection) as queries:
        response = client.get(f"/api/v1/trials/{world.trial.code}/summary/")
    assert response.status_code == 200, response.json()
    return len(queries), response.json()


def test_a_summary_takes_as_many_queries_for_ten_subjects_as_for_two(trial_with_d12):
    world = trial_with_d12
    for n in range(2):
        treated(world, site=world.site_a, coordinator=world.coordinator, investigator=world.investigator,
                number=f"A{n}")
    two, body = summary_queries(world)
    assert body["n_subjects"] == 2
    for n in range(2, 10):
        treated(world, site=world.site_a, coordinator=world.coordinator, investigator=world.investigator,
                number=f"A{n}")
    ten, body = summary_queries(world)
    assert (body["n_subjects"], body["crs"]["tocilizumab"], body["kinetics"]["cmax_log10"]["n"]) == (10, 10, 10)
    assert ten == two


def test_a_site_sees_only_its_own_subjects_figures(trial_with_d12):
    world = trial_with_d12
    mine = treated(world, site=world.site_a, coordinator=world.coordinator, investigator=world.investigator,
                   number="A1")
    theirs = treated(world, site=world.site_b, coordinator=world.coordinator_b, investigator=world.investigator_b,
                     number="B1")
    url = f"/api/v1/trials/{world.trial.code}/summary/"
    site_a = api_client(world.coordinator).get(url).json()
    assert (site_a["n_subjects"], [r["subject"] for r in site_a["subjects"]]) == (1, [mine.code])
    assert site_a["crs"]["max_grade_counts"]["1"] == 1 and site_a["survival"]["os"]["n"] == 1
    assert theirs.code not in api_client(world.coordinator).get(f"{url}subjects.csv").content.decode()
    everyone = api_client(world.data_manager).get(url).json()
    assert sorted(r["subject"] for r in everyone["subjects"]) == sorted([mine.code, theirs.code])


def test_another_trial_is_not_found(trial_with_d12, world):
    response = api_client(world.coordinator).get("/api/v1/trials/NO-SUCH/summary/")
    assert (response.status_code, response.json()["code"]) == (404, "not_found")


@pytest.mark.parametrize(("params", "field"), [({"cohort": "NOPE"}, "cohort"), ({"course": "3"}, "course"),
                                               ({"course": "first"}, "course")])
def test_a_bad_cohort_or_course_is_refused_by_field(trial_with_d12, world, params, field):
    for path in ("summary/", "summary/subjects.csv"):
        response = api_client(world.coordinator).get(f"/api/v1/trials/{world.trial.code}/{path}", params)
        assert response.status_code == 400
        body = response.json()
        assert (body["code"], list(body["field_errors"])) == ("invalid", [field])


def test_an_unknown_parameter_is_refused(trial_with_d12, world):
    response = api_client(world.coordinator).get(f"/api/v1/trials/{world.trial.code}/summary/", {"cohrot": "PED"})
    assert (response.status_code, response.json()["code"]) == (400, "unknown_parameter")
