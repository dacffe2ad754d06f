"""Natural keys: a lab draw is addressed by id or by accession number, as a subject is by id or code.

The contract (same as /subjects/{id}/): an all-digits value is the id; anything else is an accession
number among the caller's sites; a value two visible sites share is refused as ambiguous (use the id);
another site's accession number is a 404 with the same body as one that does not exist.
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from rest_framework.test import APIClient

from assays.models import LabDraw
from tests.api.support import api_client, post_results, result_row, token_client
from tests.factories import consented
from trials.services import issue_service_account

pytestmark = pytest.mark.django_db

DRAWS = "/api/v1/lab-draws/"
NOT_FOUND = {"code": "not_found", "message": "Not found.", "field_errors": {}}


def _post_draw(lab, subject, accession, ref):
    response = post_results(lab, result_row(subject, 0, source_ref=ref, accession_number=accession))
    assert response.status_code == 201, response.json()
    return LabDraw.objects.get(site=subject.site, accession_number=accession)


@pytest.fixture
def draws(world, lab):
    """Site A: draws A-0001 and SHARED-7; site B: draws B-0001 and SHARED-7 (accessions are unique per site)."""
    lab_b = token_client(issue_service_account(trial=world.trial, sites=[world.site_b], name="Lab B",
                                               by=world.data_manager)[1])
    subject_a = consented(trial=world.trial, site=world.site_a, coordinator=world.coordinator)
    subject_b = consented(trial=world.trial, site=world.site_b, coordinator=world.coordinator_b)
    return SimpleNamespace(
        a=_post_draw(lab, subject_a, "A-0001", "A-1"), shared_a=_post_draw(lab, subject_a, "SHARED-7", "A-2"),
        b=_post_draw(lab_b, subject_b, "B-0001", "B-1"), shared_b=_post_draw(lab_b, subject_b, "SHARED-7", "B-2"),
        subject_a=subject_a, lab_b=lab_b)


@pytest.fixture(params=["coordinator", "monitor", "token"])
def site_a_reader(request, world, lab):
    return lab if request.param == "token" else api_client(getattr(world, request.param))


def test_a_draw_is_found_by_its_accession_number_as_by_its_id(world, draws, site_a_reader):
    by_id = site_a_reader.get(f"{DRAWS}{draws.a.pk}/")
    by_accession = site_a_reader.get(f"{DRAWS}A-0001/")
    assert by_id.status_code == by_accession.status_code == 200, by_accession.json()
    assert by_accession.json() == by_id.json()
    assert by_accession.json() == {"id": draws.a.pk, "subject": draws.subject_a.code, "accession_number": "A-0001",
                                   "specimen": "serum", "collected_at": by_id.json()["collected_at"], "visit": None,
                                   "study_day": None, "course_number": None, "course_day": None}  # not infused


def test_another_sites_accession_number_is_404_like_an_unknown_one(world, draws, site_a_reader):
    other = site_a_reader.get(f"{DRAWS}B-0001/")
    unknown = site_a_reader.get(f"{DRAWS}NO-SUCH-ACCESSION/")
    assert other.status_code == unknown.status_code == 404
    assert other.json() == unknown.json() == NOT_FOUND  # nothing tells B-0001 exists elsewhere
    assert site_a_reader.get(f"{DRAWS}{draws.b.pk}/").status_code == 404


def test_an_accession_number_two_sites_share_resolves_to_the_callers_own_draw(world, draws, lab):
    for client, expected in [(api_client(world.coordinator), draws.shared_a), (lab, draws.shared_a),
                             (api_client(world.coordinator_b), draws.shared_b), (draws.lab_b, draws.shared_b)]:
        response = client.get(f"{DRAWS}SHARED-7/")
        assert response.status_code == 200, response.json()
        assert (response.json()["id"], response.json()["subject"]) == (expected.pk, expected.subject.code)


def test_a_trial_wide_caller_is_told_an_ambiguous_accession_number_and_uses_the_id(world, draws):
    client = api_client(world.data_manager)
    response = client.get(f"{DRAWS}SHARED-7/")
    assert response.status_code == 400
    assert response.json()["code"] == "ambiguous_accession"
    assert "use the id" in response.json()["message"]
    assert client.get(f"{DRAWS}{draws.shared_b.pk}/").json()["subject"] == draws.shared_b.subject.code
    assert client.get(f"{DRAWS}B-0001/").json()["id"] == draws.b.pk  # unique ones still resolve
    listed = client.get(DRAWS, {"accession_number": "SHARED-7"}).json()["results"]
    assert sorted(row["id"] for row in listed) == sorted([draws.shared_a.pk, draws.shared_b.pk])


def test_all_digits_is_always_the_id_and_a_numeric_accession_is_reached_by_the_list_filter(world, draws, lab):
    numeric = _post_draw(lab, draws.subject_a, str(draws.shared_a.pk), "A-3")  # accession equal to another's id
    client = api_client(world.coordinator)
    assert client.get(f"{DRAWS}{draws.shared_a.pk}/").json()["accession_number"] == "SHARED-7"
    listed = client.get(DRAWS, {"accession_number": str(draws.shared_a.pk)}).json()["results"]
    assert [row["id"] for row in listed] == [numeric.pk]


@pytest.mark.parametrize("value", ["9" * 30, "%C2%B2", "%D9%A1"], ids=["out-of-range-id", "superscript-two",
                                                                        "arabic-indic-one"])
def test_odd_draw_keys_are_404_not_errors(world, draws, value):
    response = api_client(world.coordinator).get(f"{DRAWS}{value}/")
    assert response.status_code == 404
    assert response.json() == NOT_FOUND


def test_accession_lookup_needs_authentication(draws):
    response = APIClient().get(f"{DRAWS}A-0001/")
    assert response.status_code == 401
    assert response.json()["code"] == "not_authenticated"


def test_schema_documents_the_draw_key_as_id_or_accession_number(client):
    schema = client.get("/api/schema/?format=json").json()
    detail = schema["paths"]["/api/v1/lab-draws/{id}/"]["get"]
    (key,) = [p for p in detail["parameters"] if p["in"] == "path"]
    assert (key["name"], key["schema"]["type"]) == ("id", "string")
    assert "accession number" in key["description"]
    assert {"200", "400", "401", "404"} <= set(detail["responses"])


# --- the subject key shares the contract ----------------------------------------------------------


@pytest.mark.parametrize("value", ["9" * 30, "%C2%B2"], ids=["out-of-range-id", "superscript-two"])
def test_odd_subject_keys_are_404_not_errors(world, draws, value):
    response = api_client(world.coordinator).get(f"/api/v1/subjects/{value}/")
    assert response.status_code == 404
    assert response.json() == NOT_FOUND


def test_a_subject_field_with_a_non_ascii_digit_is_a_400(world, draws):
    client = api_client(world.coordinator)
    response = client.post("/api/v1/collections/", {"subject": "²", "collection_id": "AP-ODD",
                                                    "collected_on": "2020-01-02"}, format="json")
    assert response.status_code == 400
    assert "subject" in response.json()["field_errors"]
