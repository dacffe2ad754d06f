"""The admin's audit pages name records and people: "Subject SA-0001", a user's name, the label of a
choice; never "Subject 1", "Recorded by 2" or a content-type number."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.urls import reverse

from tests.audit.conftest import amend, screen
from tests.audit.test_audit_queries import queries

pytestmark = pytest.mark.django_db

TRAIL = reverse("admin:audit_auditevent_changelist")


def test_audit_pages_show_names_not_ids(world: Any, login: Any) -> None:
    world.coordinator.first_name, world.coordinator.last_name = "Li", "Wei"
    world.coordinator.save()
    subject = amend(screen(world, prior_lines=1), world.investigator, "typo", prior_lines=2)
    client = login(world.data_manager)
    for url in (TRAIL, reverse("admin:audit_subject_history", args=[subject.pk]),
                reverse("admin:audit_record_history", args=["patients.Subject", subject.pk])):
        html = client.get(url).content.decode()
        assert f"Subject {subject.code}" in html, url
        assert "Li Wei" in html, url  # who screened the subject, by name
        assert not re.search(rf">\s*Subject {subject.pk}\s*<", html), url
        assert "Screening" in html  # the status's label, not its code
    history = client.get(reverse("admin:audit_subject_history", args=[subject.pk])).content.decode()
    assert re.search(r'data-field="recorded_by_id">\s*<td[^>]*>Recorded by</td>\s*<td class="old">.*?</td>\s*'
                     r'<td class="new">Li Wei</td>', history, flags=re.S)


@pytest.mark.parametrize("url_name", ["admin:audit_auditevent_changelist"])
def test_naming_a_page_costs_one_query_whatever_its_size(world: Any, login: Any, url_name: str) -> None:
    client = login(world.data_manager)
    screen(world)
    small = queries(lambda: client.get(reverse(url_name)))
    for n in range(5):
        amend(screen(world, prior_lines=n), world.investigator, "typo", prior_lines=n + 1)
    assert queries(lambda: client.get(reverse(url_name))) == small
