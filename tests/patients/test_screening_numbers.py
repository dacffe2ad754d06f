"""A site's own screening number on the subject: optional, unique at the site within the trial, given at
screening, corrected with a reason, and a way to find the subject (API filter, lookup endpoint, subject
references written ``<site code>/<screening number>``, admin search). A taken number is a 409
``duplicate_screening_number`` that writes nothing; another site's subjects are never found."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse
from rest_framework.test import APIClient

from config.errors import DomainError
from patients.models import ApheresisCollection, Subject
from patients.services import enrolment
from tests.admin_forms import change_form_data
from tests.factories import PASSWORD, days_ago, enrolled_subject, screened
from trials.models import TrialSite

pytestmark = pytest.mark.django_db

SUBJECTS = "/api/v1/subjects/"


def api(user: Any) -> APIClient:
    client = APIClient()
    assert client.login(username=user.username, password=PASSWORD)
    return client


def at_site_a(world: Any, number: str = "", **kwargs: Any) -> Subject:
    return screened(trial=world.trial, site=world.site_a, coordinator=world.coordinator, screening_number=number,
                    **kwargs)


def at_site_b(world: Any, number: str = "") -> Subject:
    return screened(trial=world.trial, site=world.site_b, coordinator=world.coordinator_b, screening_number=number)


def screening_body(world: Any, **overrides: Any) -> dict[str, Any]:
    return {"trial": world.trial.code, "site": world.site_a.code, "screened_on": str(days_ago(1)), "sex": "F",
            "diagnosis": "b_all", **overrides}


# --- the rule ----------------------------------------------------------------------------------------


def test_screening_number_is_stored_and_optional(world):
    assert at_site_a(world, "SCR-017").screening_number == "SCR-017"
    assert at_site_a(world).screening_number == at_site_a(world).screening_number == ""  # blanks never clash


def test_same_number_at_another_site_is_accepted(world):
    at_site_a(world, "SCR-1")
    assert at_site_b(world, "SCR-1").screening_number == "SCR-1"


def test_duplicate_at_the_site_is_a_conflict_and_writes_nothing(world):
    at_site_a(world, "SCR-1")
    before = (Subject.objects.count(), TrialSite.objects.get(trial=world.trial, site=world.site_a).last_subject_number)
    with pytest.raises(DomainError) as err:
        at_site_a(world, "SCR-1")
    assert (err.value.code, err.value.field, err.value.http_status) == (
        "duplicate_screening_number", "screening_number", 409)
    after = (Subject.objects.count(), TrialSite.objects.get(trial=world.trial, site=world.site_a).last_subject_number)
    assert after == before


def test_amended_with_a_reason_and_refused_when_taken(world):
    first, second = at_site_a(world, "SCR-1"), at_site_a(world)
    enrolment.amend_subject(subject=second, changes={"screening_number": "SCR-2"}, reason="Log number entered late",
                            by=world.coordinator)
    second.refresh_from_db()
    assert second.screening_number == "SCR-2"
    with pytest.raises(DomainError) as err:
        enrolment.amend_subject(subject=second, changes={"screening_number": "SCR-1"}, reason="Typo",
                                by=world.coordinator)
    assert err.value.code == "duplicate_screening_number"
    with pytest.raises(DomainError) as err:
        enrolment.amend_subject(subject=first, changes={"screening_number": "SCR-9"}, reason="", by=world.coordinator)
    assert err.value.code == "reason_required"
    first.refresh_from_db()
    second.refresh_from_db()
    assert (first.screening_number, second.screening_number) == ("SCR-1", "SCR-2")


# --- the API -------------------------------------------------------------------------------------------


def test_screening_through_the_api_takes_the_number(world):
    client = api(world.coordinator)
    response = client.post(SUBJECTS, screening_body(world, screening_number="SCR-5"), format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["screening_number"] == "SCR-5"
    before = Subject.objects.count()
    again = client.post(SUBJECTS, screening_body(world, screening_number="SCR-5"), format="json")
    assert again.status_code == 409, again.json()
    assert again.json()["code"] == "duplicate_screening_number"
    assert "screening_number" in again.json()["field_errors"]
    assert Subject.objects.count() == before


def test_malformed_screening_number_is_a_400(world):
    response = api(world.coordinator).post(SUBJECTS, screening_body(world, screening_number="SCR 5/6"),
                                           format="json")
    assert response.status_code == 400 and response.json()["code"] == "invalid"
    assert "screening_number" in response.json()["field_errors"]
    assert not Subject.objects.exists()


def test_patch_corrects_the_number_and_refuses_a_taken_one(world):
    at_site_a(world, "SCR-1")
    subject = at_site_a(world, "SCR-2")
    client = api(world.coordinator)
    taken = client.patch(f"{SUBJECTS}{subject.pk}/", {"screening_number": "SCR-1", "reason_for_change": "Typo"},
                         format="json")
    assert taken.status_code == 409 and taken.json()["code"] == "duplicate_screening_number"
    fixed = client.patch(f"{SUBJECTS}{subject.pk}/", {"screening_number": "SCR-3", "reason_for_change": "Typo"},
                         format="json")
    assert fixed.status_code == 200 and fixed.json()["screening_number"] == "SCR-3"


def test_filter_and_lookup_find_only_own_sites_subjects(world):
    own = at_site_a(world, "SCR-1")
    theirs = at_site_b(world, "SCR-9")
    client = api(world.coordinator)
    listed = client.get(SUBJECTS, {"screening_number": "SCR-1"}).json()["results"]
    assert [row["code"] for row in listed] == [own.code]
    assert client.get(SUBJECTS, {"screening_number": "SCR-9"}).json()["results"] == []
    found = client.get(f"{SUBJECTS}by-screening-number/{world.site_a.code}/SCR-1/")
    assert found.status_code == 200 and found.json()["id"] == own.pk
    for url in (f"{SUBJECTS}by-screening-number/{world.site_b.code}/SCR-9/",
                f"{SUBJECTS}by-screening-number/{world.site_a.code}/SCR-404/"):
        missing = client.get(url)
        assert missing.status_code == 404 and missing.json()["code"] == "not_found"
    assert api(world.coordinator_b).get(f"{SUBJECTS}by-screening-number/{world.site_b.code}/SCR-9/").json()[
        "id"] == theirs.pk


def test_a_record_names_its_subject_by_site_and_screening_number(world):
    subject = enrolled_subject(trial=world.trial, site=world.site_a, coordinator=world.coordinator,
                               investigator=world.investigator, screening_number="SCR-7")
    client = api(world.coordinator)
    reference = f"{world.site_a.code}/SCR-7"
    response = client.post("/api/v1/collections/", {"subject": reference, "collection_id": "AP-1",
                                                    "collected_on": str(days_ago(1))}, format="json")
    assert response.status_code == 201, response.json()
    assert response.json()["subject"] == subject.code  # shown by its code, as every subject reference
    other = enrolled_subject(trial=world.trial, site=world.site_b, coordinator=world.coordinator_b,
                             investigator=world.investigator_b, screening_number="SCR-7")
    refused = client.post("/api/v1/collections/", {"subject": f"{world.site_b.code}/SCR-7", "collection_id": "AP-2",
                                                   "collected_on": str(days_ago(1))}, format="json")
    assert refused.status_code == 400
    assert refused.json()["field_errors"]["subject"] == [f"No subject {world.site_b.code}/SCR-7 in your sites."]
    assert not ApheresisCollection.objects.filter(subject=other).exists()
    by_code = client.post("/api/v1/collections/", {"subject": subject.code, "collection_id": "AP-3",
                                                   "collected_on": str(days_ago(1))}, format="json")
    assert by_code.status_code == 201  # a code still names the subject


# --- the admin -----------------------------------------------------------------------------------------


def test_admin_screens_with_a_number_refuses_a_taken_one_and_searches_by_it(world, login):
    at_site_a(world, "SCR-1")
    client = login(world.coordinator)
    add = reverse("admin:patients_subject_add")

    def post(number: str) -> Any:
        page = client.get(add)
        return client.post(add, change_form_data(page, trial=world.trial.pk, site=world.site_a.pk,
                                                 screened_on=days_ago(3).isoformat(), sex="F", diagnosis="b_all",
                                                 cns_status="CNS1", prior_lines="0", screening_number=number))

    refused = post("SCR-1")
    assert refused.status_code == 200
    assert any("already used" in e for e in refused.context["adminform"].form.errors["screening_number"])
    assert Subject.objects.count() == 1
    assert post("SCR-2").status_code == 302
    listing = client.get(reverse("admin:patients_subject_changelist"), {"q": "SCR-2"})
    assert [s.screening_number for s in listing.context["cl"].result_list] == ["SCR-2"]
    at_site_b(world, "SCR-B")
    hidden = client.get(reverse("admin:patients_subject_changelist"), {"q": "SCR-B"})
    assert list(hidden.context["cl"].result_list) == []
