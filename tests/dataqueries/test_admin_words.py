"""Data query pages name the queried record and field in words and link to the record's admin page."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse
from django.utils.html import escape

from dataqueries import services
from tests.dataqueries.conftest import adverse_event
from tests.factories import days_ago

pytestmark = pytest.mark.django_db

LIST = reverse("admin:dataqueries_dataquery_changelist")


def test_a_query_names_its_record_and_field_and_links_to_the_record(world: Any, login: Any, subject_a: Any) -> None:
    event = adverse_event(subject_a, world.coordinator, days_ago(1))
    query = services.raise_query(subject=subject_a, record=event, field="grade", text="Grade 2 in the notes?",
                                 by=world.data_manager)
    words = f"Adverse event {event.pk} of subject {subject_a.code} — Grade"
    link = reverse("admin:patients_adverseevent_change", args=[event.pk])
    client = login(world.data_manager)
    for url in (LIST, reverse("admin:dataqueries_dataquery_change", args=[query.pk]),
                reverse("admin:dataqueries_dataquery_action", args=[query.pk, "close"])):
        html = client.get(url).content.decode()
        assert escape(words) in html and f'href="{link}"' in html, url
        assert "patients.adverseevent" not in html, url


def test_a_query_on_the_subject_itself_names_the_subject(world: Any, login: Any, subject_a: Any) -> None:
    services.raise_query(subject=subject_a, record=subject_a, field="marrow_blasts_pct", text="Source says 53%.",
                         by=world.data_manager)
    html = login(world.data_manager).get(LIST).content.decode()
    assert escape(f"Subject {subject_a.code} — ") in html and "patients.subject" not in html
