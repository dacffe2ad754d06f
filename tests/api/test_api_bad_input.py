"""Hardening: no input gives a 500. Missing required fields, other media types, NUL bytes, oversized text,
invalid UTF-8, impossible dates, deep nesting, non-finite or negative numbers and non-ASCII digits are all
answered 400 (415, 404) in the API's error shape, and nothing is stored."""

from __future__ import annotations

import json
from typing import Any

import pytest

from assays.models import LabDraw, Result
from patients.models import AdverseEvent
from tests.api.support import api_client, post_json, post_results, result_row
from tests.factories import consented, days_ago

pytestmark = pytest.mark.django_db

EVENTS = "/api/v1/adverse-events/"


@pytest.fixture
def subject(world: Any) -> Any:
    return consented(trial=world.trial, site=world.site_a, coordinator=world.coordinator)


@pytest.fixture
def coordinator(world: Any) -> Any:
    return api_client(world.coordinator)


def assert_error(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.content[:500]
    body = response.json()
    assert set(body) >= {"code", "message", "field_errors"}, body
    assert body["code"] == code, body
    return body


# --- 1. a field the service needs is required --------------------------------------------------------


def test_an_adverse_event_without_category_is_refused_naming_the_field(subject, coordinator):
    response = post_json(coordinator, EVENTS, {"subject": subject.code, "onset_on": str(days_ago(2)),
                                               "term": "Febrile neutropenia", "grade": 3,
                                               "related_to_product": "probable",
                                               "related_to_lymphodepletion": "unlikely"})
    body = assert_error(response, 400, "invalid")
    assert "category" in body["field_errors"]
    assert not AdverseEvent.objects.exists()
