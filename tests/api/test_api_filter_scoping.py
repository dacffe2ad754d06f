"""List filters must not tell a caller whether another site's subject exists (DESIGN: a site never
sees, counts or guesses another site's patients): filtering by a subject of site B answers exactly
as filtering by a subject that does not exist."""

from __future__ import annotations

import pytest

from tests.api.support import api_client
from tests.factories import consented

pytestmark = pytest.mark.django_db

SUBJECT_FILTERED = ["collections", "lots", "bridging", "lymphodepletion-courses", "infusions", "adverse-events",
                    "medications", "responses", "follow-ups"]


@pytest.fixture
def subjects(world):
    a = consented(trial=world.trial, site=world.site_a, coordinator=world.coordinator)
    b = consented(trial=world.trial, site=world.site_b, coordinator=world.coordinator_b)
    return a, b


@pytest.mark.parametrize("resource", ["lab-draws", "results"])
def test_subject_code_filter_answers_alike_for_another_sites_and_an_unknown_subject(world, subjects, resource):
    _a, b = subjects
    client = api_client(world.coordinator)
    other = client.get(f"/api/v1/{resource}/", {"subject__code": b.code})
    unknown = client.get(f"/api/v1/{resource}/", {"subject__code": "NO-SUCH-SUBJECT"})
    assert other.status_code == unknown.status_code == 200
    assert other.json() == unknown.json() == {"count": 0, "count_is_lower_bound": False, "next": None,
                                              "previous": None, "results": []}


@pytest.mark.parametrize("resource", SUBJECT_FILTERED)
def test_subject_filter_answers_alike_for_another_sites_and_an_unknown_subject(world, subjects, resource):
    a, b = subjects
    client = api_client(world.coordinator)
    unknown_pk = max(a.pk, b.pk) + 1000
    other = client.get(f"/api/v1/{resource}/", {"subject": b.pk})
    unknown = client.get(f"/api/v1/{resource}/", {"subject": unknown_pk})
    assert (other.status_code, other.json()) == (unknown.status_code, unknown.json())
