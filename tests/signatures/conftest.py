"""Signature fixtures: a consented subject at site A with an adverse event, and a laboratory token."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from patients.models import AdverseEvent, Subject
from patients.services import safety
from signatures import services
from signatures.models import Signature
from tests.api.support import token_client
from tests.factories import PASSWORD, consented, days_ago
from trials.services import issue_service_account


def ctcae(**overrides: Any) -> safety.EventInput:
    values: dict[str, Any] = {"category": "ctcae", "term": "Febrile neutropenia", "onset_on": days_ago(3),
                              "related_to_product": "possible", "related_to_lymphodepletion": "probable",
                              "grade": 3}
    return safety.EventInput(**{**values, **overrides})


def record_event(world: Any, subject: Subject, **overrides: Any) -> AdverseEvent:
    return safety.record_adverse_event(subject=subject, data=ctcae(**overrides), by=world.coordinator)


def sign(world: Any, subject: Subject, *, record: Any = None, meaning: str = "approval") -> Signature:
    """Site A's investigator signs with the right password."""
    return services.sign(subject=subject, meaning=meaning, password=PASSWORD, by=world.investigator, record=record)


def reload(signature: Signature) -> Signature:
    return Signature.objects.select_related("subject", "record_type").get(pk=signature.pk)


@pytest.fixture
def subject(world: Any) -> Subject:
    """Consented 29 days ago at site A, with one adverse event."""
    subject = consented(trial=world.trial, site=world.site_a, coordinator=world.coordinator)
    record_event(world, subject)
    return subject


@pytest.fixture
def lab(world: Any) -> APIClient:
    """A laboratory system's token bound to site A."""
    _account, token = issue_service_account(trial=world.trial, sites=[world.site_a], name="Lab A",
                                            by=world.data_manager)
    return token_client(token)
