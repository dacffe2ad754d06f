"""Who sees and writes what through the API: site roles, the trial-wide data manager, service-account tokens."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from assays.models import LabDraw, Result
from patients.models import ApheresisCollection, Consent, Subject
from tests.api.support import api_client, post_results, result_row, token_client
from tests.factories import consented, days_ago, enrolled_subject
from trials.services import issue_service_account, revoke_service_account

pytestmark = pytest.mark.django_db

LISTS = ["/api/v1/subjects/", "/api/v1/results/", "/api/v1/lab-draws/", "/api/v1/collections/"]


@pytest.fixture
def two_sites(world, lab):
    """At each site an enrolled subject with an apheresis collection, one CRP result and its lab draw."""
    from patients.services import treatment

    def site_data(site, coordinator, investigator, client, prefix):
        subject = enrolled_subject(trial=world.trial, site=site, coordinator=coordinator, investigator=investigator)
        collection = treatment.record_collection(subject=subject, collection_id=f"AP-{prefix}",
                                                 collected_on=days_ago(19), by=coordinator)
        assert post_results(client, result_row(subject, 1, source_ref=f"{prefix}-1",
                                               accession_number=f"{prefix}-ACC")).status_code == 201
        result = Result.objects.get(source_ref=f"{prefix}-1")
        return SimpleNamespace(subject=subject, collection=collection, result=result, draw=result.draw)

    _account, token_b = issue_service_account(trial=world.trial, sites=[world.site_b], name="Lab B",
                                              by=world.data_manager)
    return SimpleNamespace(
        a=site_data(world.site_a, world.coordinator, world.investigator, lab, "A"),
        b=site_data(world.site_b, world.coordinator_b, world.investigator_b, token_client(token_b), "B"))


def detail_urls(data):
    return [f"/api/v1/subjects/{data.subject.code}/", f"/api/v1/subjects/{data.subject.pk}/",
            f"/api/v1/results/{data.result.pk}/", f"/api/v1/lab-draws/{data.draw.pk}/",
            f"/api/v1/collections/{data.collection.pk}/"]


def listed_ids(client, url):
    response = client.get(url)
    assert response.status_code == 200, response.json()
    return {row["id"] for row in response.json()["results"]}


def ids_of(data, url):
    return {"/api/v1/subjects/": data.subject.pk, "/api/v1/results/": data.result.pk,
            "/api/v1/lab-draws/": data.draw.pk, "/api/v1/collections/": data.collection.pk}[url]


@pytest.mark.parametrize("role", ["coordinator", "investigator", "monitor"])
@pytest.mark.parametrize("url", LISTS)
def test_site_roles_see_their_own_site_only(world, two_sites, role, url):
    client = api_client(getattr(world, role))
    assert listed_ids(client, url) == {ids_of(two_sites.a, url)}
    for own, other in zip(detail_urls(two_sites.a), detail_urls(two_sites.b), strict=True):
        assert client.get(own).status_code == 200, own
        refused = client.get(other)
        assert refused.status_code == 404, other
        assert refused.json()["code"] == "not_found"


@pytest.mark.parametrize("url", LISTS)
def test_trial_wide_data_manager_sees_both_sites(world, two_sites, url):
    client = api_client(world.data_manager)
    assert listed_ids(client, url) == {ids_of(two_sites.a, url), ids_of(two_sites.b, url)}
    for detail in detail_urls(two_sites.a) + detail_urls(two_sites.b):
        assert client.get(detail).status_code == 200, detail


def _screen(world, client, subject):
    return client.post("/api/v1/subjects/", {"trial": world.trial.code, "site": world.site_a.code,
                                             "screened_on": str(days_ago(1)), "sex": "F", "diagnosis": "b_all"},
                       format="json")


def _consent(world, client, subject):
    return client.post(f"/api/v1/subjects/{subject.code}/consent/",
                       {"version": "v2", "consented_on": str(days_ago(1)), "age_at_consent": 30}, format="json")


def _collect(world, client, subject):
    return client.post("/api/v1/collections/", {"subject": subject.code, "collection_id": "AP-X",
                                                "collected_on": str(days_ago(1))}, format="json")


def _result(world, client, subject):
    return post_results(client, result_row(subject, 99, accession_number="ACC-99"))


def _counts():
    return (Subject.objects.count(), Consent.objects.count(), ApheresisCollection.objects.count(),
            Result.objects.count(), LabDraw.objects.count())


@pytest.mark.parametrize("role", ["monitor", "data_manager"])
@pytest.mark.parametrize("write", [_screen, _consent, _collect, _result])
def test_monitor_and_data_manager_writes_are_forbidden(world, two_sites, role, write):
    before = _counts()
    response = write(world, api_client(getattr(world, role)), two_sites.a.subject)
    assert response.status_code == 403, response.json()
    assert response.json()["code"] == "not_permitted"
    assert _counts() == before


def test_site_a_token_never_reaches_site_b(world, two_sites, lab):
    for url in LISTS:
        assert listed_ids(lab, url) == {ids_of(two_sites.a, url)}, url
        assert ids_of(two_sites.b, url) not in listed_ids(lab, f"{url}?page_size=500"), url
    for other in detail_urls(two_sites.b):
        assert lab.get(other).status_code == 404, other
    assert lab.get("/api/v1/results/", {"subject__code": two_sites.b.subject.code}).json()["results"] == []
    # Writing for site B's subject is refused like an unknown subject; nothing is stored.
    before = _counts()
    response = post_results(lab, result_row(two_sites.b.subject, 7, accession_number="B-NEW"))
    assert response.status_code == 400
    assert [(e["code"], e["field"]) for e in response.json()["rows"]] == [("unknown_subject", "results[0].subject")]
    assert _counts() == before


def test_revoked_token_is_refused_and_writes_nothing(world):
    subject = consented(trial=world.trial, site=world.site_a, coordinator=world.coordinator)
    account, token = issue_service_account(trial=world.trial, sites=[world.site_a], name="Old LIS",
                                           by=world.data_manager)
    assert token_client(token).get("/api/v1/results/").status_code == 200
    revoke_service_account(account=account, by=world.data_manager)
    client = token_client(token)
    for url in [*LISTS, "/api/v1/analytes/"]:
        response = client.get(url)
        assert response.status_code == 401, url
        assert response.json()["code"] == "authentication_failed"
    assert post_results(client, result_row(subject, 1)).status_code == 401
    assert not Result.objects.exists()
    wrong_secret = token.split(".")[0] + ".not-the-secret"
    assert token_client(wrong_secret).get("/api/v1/subjects/").status_code == 401


def test_coordinator_of_site_b_cannot_write_for_site_a(world, two_sites):
    client = api_client(world.coordinator_b)
    before = _counts()
    consent = _consent(world, client, two_sites.a.subject)
    assert consent.status_code == 404 and consent.json()["code"] == "not_found"
    collect = _collect(world, client, two_sites.a.subject)
    assert collect.status_code == 400 and "subject" in collect.json()["field_errors"]
    assert _counts() == before
