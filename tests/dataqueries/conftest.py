"""Data query fixtures: a consented subject at each site, a query raised on a consent date, an adverse event."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from dataqueries import services
from dataqueries.models import DataQuery
from patients.models import AdverseEvent, CtcaeTerm, Subject
from patients.services import safety
from tests.factories import consented

TEXT = "The consent date differs from the signed form; please check."


@pytest.fixture
def subject_a(world: Any) -> Subject:
    return consented(trial=world.trial, site=world.site_a, coordinator=world.coordinator)


@pytest.fixture
def subject_b(world: Any) -> Subject:
    return consented(trial=world.trial, site=world.site_b, coordinator=world.coordinator_b)


def adverse_event(subject: Subject, by: Any, onset: dt.date, category: str = "ctcae",
                  coded: bool = True) -> AdverseEvent:
    """A CTCAE grade 1 nausea, or a CRS event (graded from its assessments), recorded through the service."""
    grade = 1 if category == "ctcae" else None
    # Coded unless asked, so the event raises no ae_uncoded query (a transactional test's flush empties the seeded
    # terms: get_or_create).
    term = None if category != "ctcae" or not coded else CtcaeTerm.objects.get_or_create(term="Nausea", defaults={
        "system_organ_class": "Gastrointestinal disorders", "allowed_grades": [1, 2, 3]})[0]
    return safety.record_adverse_event(subject=subject, data=safety.EventInput(
        category=category, term="Nausea" if category == "ctcae" else "Cytokine release syndrome", onset_on=onset,
        grade=grade, ctcae_term=term, related_to_product="possible", related_to_lymphodepletion="unlikely"), by=by)


def raise_on_consent(subject: Subject, by: Any, text: str = TEXT) -> DataQuery:
    return services.raise_query(subject=subject, record=subject.consents.get(), field="consented_on", text=text,
                                by=by)


@pytest.fixture
def query_a(world: Any, subject_a: Subject) -> DataQuery:
    """An open query on site A's subject, raised by the data manager."""
    return raise_on_consent(subject_a, world.data_manager)


@pytest.fixture
def query_b(world: Any, subject_b: Subject) -> DataQuery:
    return raise_on_consent(subject_b, world.data_manager)
