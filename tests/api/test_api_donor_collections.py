"""Donor collections and donor-derived lots through /api/v1/: created by the site's coordinator or its system
token, refused with the rule's code (400, or 409 for a taken bag ID) and nothing written, scoped to the
caller's sites (another site's donor collection is neither listed, read nor usable for a lot)."""

from __future__ import annotations

import pytest

from patients.models import DonorCollection, ProductLot, Subject, SubjectStatus
from patients.services import treatment
from tests.api.support import CALLERS, api_client, caller_for, post_json, read_back
from tests.factories import apheresed_subject, days_ago, enrolled_subject

pytestmark = pytest.mark.django_db

URL, LOTS = "/api/v1/donor-collections/", "/api/v1/lots/"


@pytest.fixture(params=CALLERS)
def caller(request, world):
    return caller_for(world, request.param)


def enrolled(world, site=None, coordinator=None, investigator=None, **kwargs):
    return enrolled_subject(trial=world.trial, site=site or world.site_a, coordinator=coordinator or world.coordinator,
                            investigator=investigator or world.investigator, **kwargs)


def allow_allogeneic(world):
    product = world.trial.products.get()
    product.allowed_sources = ["autologous", "allogeneic"]
    product.save()
    return product


def body(recipient, **overrides):
    return {"subject": recipient.code, "donor_code": "D-2024-017", "donor_type": "new_donor", "hla_matched": 5,
            "hla_total": 10, "collection_id": "DC-1", "collected_on": str(days_ago(10)), **overrides}


def counts():
    return (DonorCollection.objects.count(), ProductLot.objects.count(),
            sorted(Subject.objects.values_list("pk", "status")))


def test_records_a_donor_collection(world, caller):
    subject = enrolled(world)
    response = post_json(caller.client, URL, body(subject))
    assert response.status_code == 201, response.json()
    created = response.json()
    # Collected before any infusion: no study day or course yet.
    assert created == {"id": created["id"], **body(subject), "study_day": None, "course_number": None,
                       "course_day": None}
    stored = DonorCollection.objects.get(pk=created["id"])
    assert (stored.subject, stored.donor_code, stored.hla_match, stored.recorded_by) == (
        subject, "D-2024-017", "5/10", caller.user)
    subject.refresh_from_db()
    assert subject.status == SubjectStatus.APHERESED
    assert read_back(caller.client, URL, stored.pk) == created


@pytest.mark.parametrize(("overrides", "status", "code", "field"), [
    ({"donor_code": "Jane Doe"}, 400, "invalid", "donor_code"),
    ({"donor_type": "sibling"}, 400, "invalid", "donor_type"),
    ({"hla_total": None}, 400, "hla_match_incomplete", "hla_total"),
    ({"hla_matched": 11}, 400, "hla_match_above_total", "hla_matched"),
    ({"donor_type": "hsct_donor"}, 400, "no_prior_hsct", "donor_type"),
    ({"collected_on": str(days_ago(21))}, 400, "before_enrolment", "collected_on"),
    ({"collected_on": "2999-01-01"}, 400, "date_in_future", "collected_on"),
    ({"subject": "NO-SUCH"}, 400, "invalid", "subject"),
])
def test_refusals_report_code_and_field_and_write_nothing(world, overrides, status, code, field):
    subject = enrolled(world)
    client = api_client(world.coordinator)
    before = counts()
    response = post_json(client, URL, body(subject, **overrides))
    assert response.status_code == status, response.json()
    assert response.json()["code"] == code
    assert field in response.json()["field_errors"]
    assert counts() == before


def test_a_taken_bag_id_is_a_conflict(world):
    subject = enrolled(world)
    client = api_client(world.coordinator)
    assert post_json(client, URL, body(subject)).status_code == 201
    before = counts()
    response = post_json(client, URL, body(subject, donor_code="D-2024-018"))
    assert response.status_code == 409, response.json()
    assert (response.json()["code"], list(response.json()["field_errors"])) == ("duplicate_collection_id",
                                                                               ["collection_id"])
    assert counts() == before


def test_subject_not_enrolled_is_a_conflict(world):
    subject = enrolled(world)
    treatment.record_donor_collection(subject=subject, collection_id="DC-0", collected_on=days_ago(10),
                                      donor_code="D-1", donor_type="new_donor", by=world.coordinator)
    from patients.services import enrolment

    enrolment.take_off_study(subject=subject, off_on=days_ago(1), reason="investigator_decision",
                             by=world.coordinator)
    response = post_json(api_client(world.coordinator), URL, body(subject))
    assert response.status_code == 409 and response.json()["code"] == "subject_not_ready"


def test_another_sites_donor_collection_is_invisible(world):
    other = enrolled(world, site=world.site_b, coordinator=world.coordinator_b, investigator=world.investigator_b)
    theirs = treatment.record_donor_collection(subject=other, collection_id="DC-B", collected_on=days_ago(10),
                                               donor_code="D-9", donor_type="new_donor", by=world.coordinator_b)
    client = api_client(world.coordinator)
    listed = client.get(URL)
    assert listed.status_code == 200 and listed.json()["results"] == [] and listed.json()["count"] == 0
    assert client.get(f"{URL}{theirs.pk}/").status_code == 404
    assert client.get(URL, {"subject": other.pk}).json()["results"] == []
    response = post_json(client, URL, body(other))
    assert response.status_code == 400 and "subject" in response.json()["field_errors"]
    assert api_client(world.coordinator_b).get(f"{URL}{theirs.pk}/").status_code == 200


# --- donor-derived lots -------------------------------------------------------------------------------


def donor_subject(world, bag="DC-1"):
    allow_allogeneic(world)
    subject = enrolled(world)
    collection = treatment.record_donor_collection(subject=subject, collection_id=bag, collected_on=days_ago(10),
                                                   donor_code="D-2024-017", donor_type="third_party",
                                                   by=world.coordinator)
    return subject, collection


@pytest.mark.parametrize("by", ["id", "bag"])
def test_donor_derived_lot_names_its_donor_collection_by_id_or_bag_id(world, by):
    subject, collection = donor_subject(world)
    client = api_client(world.coordinator)
    reference = collection.pk if by == "id" else collection.collection_id
    response = post_json(client, LOTS, {"subject": subject.code, "product": world.trial.products.get().pk,
                                        "lot_number": "ALLO-1", "source": "allogeneic",
                                        "donor_collection": reference, "donor_type": "unrelated"})
    assert response.status_code == 201, response.json()
    created = response.json()
    assert (created["donor_collection"], created["collection"], created["donor_type"]) == (
        collection.collection_id, None, "third_party")  # shown by its bag id; the type comes from the collection
    lot = ProductLot.objects.get(pk=created["id"])
    assert (lot.donor_collection, lot.donor_type) == (collection, "third_party")
    assert read_back(client, LOTS, lot.pk) == created


def test_donor_derived_lot_without_donor_collection_refused(world):
    subject, _collection = donor_subject(world)
    before = counts()
    response = post_json(api_client(world.coordinator), LOTS, {
        "subject": subject.code, "product": world.trial.products.get().pk, "lot_number": "ALLO-1",
        "source": "allogeneic"})
    assert response.status_code == 400, response.json()
    assert response.json()["code"] == "donor_required" and "donor_collection" in response.json()["field_errors"]
    assert counts() == before


def test_autologous_lot_cannot_name_a_donor_collection(world):
    allow_allogeneic(world)
    subject = apheresed_subject(trial=world.trial, site=world.site_a, coordinator=world.coordinator,
                                investigator=world.investigator)
    collection = treatment.record_donor_collection(subject=subject, collection_id="DC-1", collected_on=days_ago(10),
                                                   donor_code="D-1", donor_type="new_donor", by=world.coordinator)
    before = counts()
    response = post_json(api_client(world.coordinator), LOTS, {
        "subject": subject.code, "product": world.trial.products.get().pk, "lot_number": "AUTO-1",
        "source": "autologous", "collection": subject.collections.get().pk, "donor_collection": collection.pk})
    assert response.status_code == 400, response.json()
    assert response.json()["code"] == "donor_for_autologous"
    assert "donor_collection" in response.json()["field_errors"]
    assert counts() == before


def test_lot_cannot_use_another_sites_donor_collection(world):
    allow_allogeneic(world)
    other = enrolled(world, site=world.site_b, coordinator=world.coordinator_b, investigator=world.investigator_b)
    theirs = treatment.record_donor_collection(subject=other, collection_id="DC-B", collected_on=days_ago(10),
                                               donor_code="D-9", donor_type="new_donor", by=world.coordinator_b)
    subject, _own = donor_subject(world)
    client = api_client(world.coordinator)
    before = counts()
    for reference in (theirs.pk, theirs.collection_id):
        response = post_json(client, LOTS, {"subject": subject.code, "product": world.trial.products.get().pk,
                                            "lot_number": "ALLO-1", "source": "allogeneic",
                                            "donor_collection": reference})
        assert response.status_code == 400, response.json()
        assert response.json()["field_errors"]["donor_collection"] == [f"No donor collection {reference} here."]
    assert counts() == before
