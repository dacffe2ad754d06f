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


# --- 2. the API takes JSON only ----------------------------------------------------------------------


OTHER_MEDIA = [("application/x-www-form-urlencoded", b"term=x&grade=3"),
               ("text/plain", b'{"term": "x"}'),
               ("application/xml", b"<event><term>x</term></event>")]


@pytest.mark.parametrize(("content_type", "raw"), OTHER_MEDIA)
def test_a_write_with_another_media_type_is_415(subject, coordinator, content_type, raw):
    response = coordinator.generic("POST", EVENTS, raw, content_type=content_type)
    assert_error(response, 415, "unsupported_media_type")
    patch = coordinator.generic("PATCH", f"/api/v1/subjects/{subject.code}/", raw, content_type=content_type)
    assert_error(patch, 415, "unsupported_media_type")


def test_a_multipart_write_is_415(subject, coordinator):
    response = coordinator.post(EVENTS, {"subject": subject.code, "category": "ctcae"}, format="multipart")
    assert_error(response, 415, "unsupported_media_type")
    assert not AdverseEvent.objects.exists()


@pytest.mark.parametrize("fmt", ["multipart", "form"])
def test_results_in_another_media_type_are_415_with_a_session(subject, coordinator, fmt):
    row = result_row(subject, 1)
    if fmt == "multipart":
        response = coordinator.post("/api/v1/results/", row, format="multipart")
    else:
        response = coordinator.generic("POST", "/api/v1/results/", "source_ref=LIS-1",
                                       content_type="application/x-www-form-urlencoded")
    assert_error(response, 415, "unsupported_media_type")
    assert not Result.objects.exists()


def test_results_in_text_plain_are_415(subject, lab):
    response = lab.generic("POST", "/api/v1/results/", json.dumps(result_row(subject, 1)), content_type="text/plain")
    assert_error(response, 415, "unsupported_media_type")
    charset = lab.generic("POST", "/api/v1/results/", json.dumps(result_row(subject, 1)),
                          content_type="application/json; charset=utf-8")
    assert charset.status_code == 201, charset.json()


# --- 3. NUL characters -------------------------------------------------------------------------------


def test_a_lookup_with_a_nul_is_404(subject, coordinator):
    assert_error(coordinator.get("/api/v1/subjects/a%00/"), 404, "not_found")
    assert_error(coordinator.get("/api/v1/draws/ACC%00/"), 404, "not_found")


def test_a_query_parameter_with_a_nul_is_400_on_that_parameter(subject, coordinator):
    body = assert_error(coordinator.get("/api/v1/results/?subject=a%00"), 400, "invalid")
    assert list(body["field_errors"]) == ["subject"]


@pytest.mark.parametrize(("url", "body", "field"), [
    ("/api/v1/locks/", {"site": "a\u0000"}, "site"),
    (EVENTS, {"subject": "BJ\u0000", "category": "ctcae"}, "subject"),
    (EVENTS, {"term": "Fever\u0000", "category": "ctcae"}, "term"),
    (EVENTS, {"category": "ctcae", "nested": [{"k\u0000": 1}]}, "nested[0].k\u0000"),
])
def test_a_body_string_with_a_nul_is_400_on_the_field(subject, coordinator, url, body, field):
    response = post_json(coordinator, url, body)
    errors = assert_error(response, 400, "invalid")["field_errors"]
    assert errors == {field: ["Null characters are not allowed."]}


@pytest.mark.parametrize("name", ["source_ref", "accession_number", "subject", "analyte", "unit", "value"])
def test_a_result_with_a_nul_is_refused_on_its_row(subject, lab, name):
    row = {**result_row(subject, 1), name: "X\u0000"}
    body = assert_error(post_results(lab, {"results": [result_row(subject, 0), row]}), 400, "rows_invalid")
    assert body["field_errors"] == {f"results[1].{name}": ["Null characters are not allowed."]}
    assert not Result.objects.exists() and not LabDraw.objects.exists()


# --- 4. text longer than its column ------------------------------------------------------------------


@pytest.mark.parametrize(("name", "value", "limit"), [("source_ref", "R" * 81, 80),
                                                      ("accession_number", "A" * 41, 40),
                                                      ("value", int("9" * 50), 40),
                                                      ("unit", "u" * 31, 30)])
def test_a_result_text_longer_than_its_column_is_refused_on_its_row(subject, lab, name, value, limit):
    body = assert_error(post_results(lab, result_row(subject, 1, **{name: value})), 400, "rows_invalid")
    assert body["field_errors"] == {f"results[0].{name}": [f"At most {limit} characters."]}
    assert body["rows"][0]["code"] == "too_long"
    assert not Result.objects.exists() and not LabDraw.objects.exists()


# --- 5. bodies and times no decoder or clock takes ---------------------------------------------------


def test_results_in_invalid_utf8_are_400(subject, lab):
    raw = json.dumps(result_row(subject, 1)).encode().replace(b"LIS-1", b"LIS-\xff\xfe")
    response = lab.generic("POST", "/api/v1/results/", raw, content_type="application/json")
    assert_error(response, 400, "invalid")


def test_a_collection_in_year_one_is_400(subject, lab):
    row = result_row(subject, 1, collected_at="0001-01-01T00:30:00+08:00")
    body = assert_error(post_results(lab, row), 400, "rows_invalid")
    assert body["rows"][0]["code"] == "time_out_of_range"


@pytest.mark.parametrize("url", ["/api/v1/results/", EVENTS])
def test_json_nested_two_thousand_deep_is_400(subject, lab, url):
    raw = '{"results": ' + "[" * 2000 + "]" * 2000 + "}"
    response = lab.generic("POST", url, raw, content_type="application/json")
    assert response.status_code == 400, response.content[:300]
    assert response.json()["code"] in ("invalid", "parse_error")


# --- 6. numbers: finite, non-negative, ASCII ---------------------------------------------------------


@pytest.mark.parametrize(("value", "unit"), [("1e308", "mg/dL"), ("-1", "mg/L"), ("-0.5", "mg/dL"),
                                             ("١٢", "mg/L"), ("<١٢", "mg/L"), ("1_000", "mg/L"), ("inf", "mg/L"),
                                             ("nan", "mg/L")])
def test_a_value_that_is_not_a_finite_non_negative_ascii_number_is_refused(subject, lab, value, unit):
    body = assert_error(post_results(lab, result_row(subject, 1, value=value, unit=unit)), 400, "rows_invalid")
    assert body["rows"][0]["code"] == "invalid_value"
    assert not Result.objects.exists()


def test_large_finite_values_are_stored_and_listed(subject, lab):
    response = post_results(lab, {"results": [result_row(subject, 1, value="1e307", unit="mg/dL"),
                                              result_row(subject, 2, value="0", unit="mg/L")]})
    assert response.status_code == 201, response.json()
    listed = lab.get("/api/v1/results/")
    assert listed.status_code == 200
    assert sorted(r["value"] for r in listed.json()["results"]) == [0.0, 1e308]


@pytest.mark.parametrize(("field", "value"), [("grade", "٣"), ("onset_on", "٢٠٢٦-٠١-٠١")])
def test_non_ascii_digits_are_refused_in_numbers_and_dates(subject, coordinator, field, value):
    body = {"subject": subject.code, "category": "ctcae", "term": "Febrile neutropenia", "grade": 3,
            "onset_on": str(days_ago(2)), "related_to_product": "probable", "related_to_lymphodepletion": "unlikely"}
    response = post_json(coordinator, EVENTS, {**body, field: value})
    errors = assert_error(response, 400, "invalid")["field_errors"]
    assert field in errors
    assert not AdverseEvent.objects.exists()


# --- 7. an unexpected error is still the API's JSON ---------------------------------------------------


def test_an_unexpected_error_is_a_json_500_with_the_request_id(subject, coordinator, settings, monkeypatch):
    from patients.api import views

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom")

    settings.DEBUG = False
    monkeypatch.setattr(views.SubjectViewSet, "retrieve", broken)
    coordinator.raise_request_exception = False
    response = coordinator.get(f"/api/v1/subjects/{subject.code}/")
    body = assert_error(response, 500, "server_error")
    assert response["Content-Type"].startswith("application/json")
    assert response["X-Request-ID"] and response["X-Request-ID"] in body["message"]
    assert "boom" not in response.content.decode()


@pytest.mark.parametrize("when", ["0001-01-01T00:30:00+08:00", "9999-12-31T23:00:00-05:00"])
def test_a_time_at_the_ends_of_the_calendar_is_400_on_its_field(subject, coordinator, when):
    body = {"subject": subject.code, "category": "ctcae", "term": "Febrile neutropenia", "grade": 3, "serious": True,
            "sae_hospitalisation": True, "onset_on": str(days_ago(2)), "site_aware_at": when,
            "related_to_product": "probable", "related_to_lymphodepletion": "unlikely"}
    errors = assert_error(post_json(coordinator, EVENTS, body), 400, "invalid")["field_errors"]
    assert "site_aware_at" in errors
