"""Answers are what the schema says: a blank choice is null (no enumeration holds ""), a nested input's
refusal is named by its path, an unrouted API path answers in the API's error body, and the schema marks
what can be null."""

from __future__ import annotations

import datetime as dt

import pytest
from drf_spectacular.generators import SchemaGenerator

from patients.models import Subject
from patients.services import treatment
from tests.api.support import api_client, post_json
from tests.factories import apheresed_subject, consented, days_ago, screened

pytestmark = pytest.mark.django_db


def test_blank_choices_and_no_cohort_are_null(world):
    subject = screened(trial=world.trial, site=world.site_a, coordinator=world.coordinator)
    body = api_client(world.coordinator).get(f"/api/v1/subjects/{subject.pk}/").json()
    assert (body["off_study_reason"], body["prior_cart_target"], body["prior_cart_scfv_origin"], body["cohort"]) == (
        None, None, None, None)
    assert Subject.objects.get(pk=subject.pk).off_study_reason == ""


def test_an_autologous_lot_has_no_donor_type(world):
    subject = apheresed_subject(trial=world.trial, site=world.site_a, coordinator=world.coordinator,
                                investigator=world.investigator)
    lot = treatment.register_lot(subject=subject, product=world.trial.products.get(), lot_number="LOT-A",
                                 source="autologous", collection=subject.collections.get(), by=world.coordinator)
    assert api_client(world.coordinator).get(f"/api/v1/lots/{lot.pk}/").json()["donor_type"] is None


def test_a_blank_choice_is_given_as_null_or_empty(world):
    client = api_client(world.coordinator)
    for n, blank in enumerate((None, "")):
        response = post_json(client, "/api/v1/subjects/", {
            "trial": world.trial.code, "site": world.site_a.code, "screened_on": str(days_ago(3)),
            "screening_number": f"SCR-{n}", "sex": "F", "diagnosis": "b_all", "prior_cart_target": blank})
        assert response.status_code == 201, response.json()
        assert response.json()["prior_cart_target"] is None
    assert set(Subject.objects.values_list("prior_cart_target", flat=True)) == {""}


def test_refusals_inside_a_list_or_an_object_are_named_by_path(world):
    subject = apheresed_subject(trial=world.trial, site=world.site_a, coordinator=world.coordinator,
                                investigator=world.investigator)
    treatment.register_lot(subject=subject, product=world.trial.products.get(), lot_number="LOT-B",
                           source="autologous", collection=subject.collections.get(), by=world.coordinator)
    day0 = days_ago(2)
    course = treatment.start_lymphodepletion(subject=subject, regimen=world.trial.regimens.get(),
                                             planned_infusion_on=day0, by=world.coordinator)
    agent = course.regimen.agents.order_by("pk").first()
    client = api_client(world.coordinator)
    dose = {"agent": agent.pk, "given_on": str(day0 + dt.timedelta(days=agent.days[0])), "administered_mg": "50"}
    response = post_json(client, f"/api/v1/lymphodepletion-courses/{course.pk}/doses/",
                         [dose, {**dose, "administered_mg": "many"}])  # type: ignore[arg-type]
    assert response.status_code == 400
    assert response.json()["field_errors"] == {"doses[1].administered_mg": ["A valid number is required."]}
    assert not course.doses.exists()
    other = consented(trial=world.trial, site=world.site_a, coordinator=world.coordinator)
    response = post_json(client, f"/api/v1/subjects/{other.code}/eligibility/",
                         {"assessed_on": str(days_ago(25)), "answers": {"I1": "perhaps"}})
    assert response.status_code == 400
    assert list(response.json()["field_errors"]) == ["answers.I1"]


def test_an_unrouted_api_path_is_the_apis_404(world, client):
    api = api_client(world.coordinator)
    for path in ("/api/v1/signatures/1.5/", "/api/v1/no-such-list/"):
        response = api.get(path)
        assert response.status_code == 404
        assert response.json() == {"code": "not_found", "message": "Not found.", "field_errors": {}}
    assert client.get("/no-such-page/")["Content-Type"].startswith("text/html")


def test_the_schema_marks_what_can_be_null_and_what_is_not_paginated():
    schema = SchemaGenerator(api_version="v1").get_schema(request=None, public=True)
    measurements = schema["paths"]["/api/v1/subjects/{id}/body-measurements/"]["get"]
    assert measurements["responses"]["200"]["content"]["application/json"]["schema"]["type"] == "array"
    assert [p["name"] for p in measurements["parameters"]] == ["id"]  # no page, no page_size
    schemas = schema["components"]["schemas"]
    assert schemas["Signature"]["properties"]["record_type"]["nullable"] is True
    assert schemas["Subject"]["properties"]["cohort"]["nullable"] is True
    off_study = schemas["Subject"]["properties"]["off_study_reason"]
    assert off_study["nullable"] is True and {"$ref": "#/components/schemas/BlankEnum"} not in off_study["oneOf"]
