"""One way to filter every subject-level list: ``?subject=`` (code or id), ``?trial=`` and ``?site=`` (codes);
and every list of the API refuses a query parameter it does not know (400 ``unknown_parameter``, naming
it), instead of ignoring it and answering with everything."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from drf_spectacular.generators import SchemaGenerator

from dataqueries import services as queries
from locking.services import lock_scope
from patients.services import outcome, safety, treatment
from signatures.services import sign
from tests.api.support import api_client, post_results, result_row, token_client
from tests.factories import PASSWORD, at, consented, days_ago, enrolled_subject, infused_subject
from trials.services import issue_service_account

pytestmark = pytest.mark.django_db


def _people(world: Any, site: str) -> dict[str, Any]:
    if site == "a":
        return {"trial": world.trial, "site": world.site_a, "coordinator": world.coordinator}
    return {"trial": world.trial, "site": world.site_b, "coordinator": world.coordinator_b}


def _clinical(world: Any, site: str) -> dict[str, Any]:
    return {**_people(world, site), "investigator": world.investigator if site == "a" else world.investigator_b}


def _treated(world, site):
    return infused_subject(**_clinical(world, site))


def _bridged(world, site):
    subject = enrolled_subject(**_clinical(world, site))
    treatment.record_bridging(subject=subject, regimen="Dexamethasone", started_on=days_ago(15),
                              by=_people(world, site)["coordinator"])
    return subject


def _event(world, site):
    subject = consented(**_people(world, site))
    safety.record_adverse_event(subject=subject, by=_people(world, site)["coordinator"], data=safety.EventInput(
        category="ctcae", term="Nausea", grade=1, onset_on=days_ago(2), related_to_product="not_related",
        related_to_lymphodepletion="not_related"))
    return subject


def _medication(world, site):
    subject = consented(**_people(world, site))
    safety.record_medication(subject=subject, drug="paracetamol", dose=Decimal(500), dose_unit="mg", route="oral",
                             given_at=at(days_ago(1)), by=_people(world, site)["coordinator"])
    return subject


def _response(world, site):
    subject = _treated(world, site)
    outcome.record_response(subject=subject, assessed_on=days_ago(1), category="nr", marrow_blasts_pct=Decimal(40),
                            by=_people(world, site)["coordinator"])
    return subject


def _follow_up(world, site):
    subject = _treated(world, site)
    outcome.record_follow_up(subject=subject, kind="last_contact", event_on=days_ago(1), detail="Clinic",
                             by=_people(world, site)["coordinator"])
    return subject


def _lab(world, site):
    subject = consented(**_people(world, site))
    where = world.site_a if site == "a" else world.site_b
    _account, token = issue_service_account(trial=world.trial, sites=[where], name=f"Lab {site}",
                                            by=world.data_manager)
    row = result_row(subject, 1, source_ref=f"{subject.code}-1", accession_number=f"{subject.code}-ACC")
    assert post_results(token_client(token), row).status_code == 201
    return subject


def _query(world, site):
    subject = _event(world, site)
    queries.raise_query(subject=subject, record=subject.adverse_events.get(), field="term", text="Which nausea?",
                        by=world.data_manager)
    return subject


def _lock(world, site):
    subject = consented(**_people(world, site))
    lock_scope(trial=world.trial, level="freeze", reason="Interim analysis", subject=subject, by=world.data_manager)
    return subject


def _signature(world, site):
    subject = consented(**_people(world, site))
    sign(subject=subject, meaning="review", password=PASSWORD,
         by=world.investigator if site == "a" else world.investigator_b)
    return subject


SUBJECT_LISTS = {
    "collections": _treated, "lots": _treated, "bridging": _bridged, "lymphodepletion-courses": _treated,
    "infusions": _treated, "adverse-events": _event, "medications": _medication, "responses": _response,
    "follow-ups": _follow_up, "lab-draws": _lab, "results": _lab, "queries": _query, "locks": _lock,
    "signatures": _signature,
}


def _subjects_of(response) -> set[str]:
    assert response.status_code == 200, response.json()
    return {row["subject"] for row in response.json()["results"]}


@pytest.mark.parametrize("resource", SUBJECT_LISTS)
def test_subject_lists_filter_by_subject_code_or_id_trial_and_site(world, resource):
    make = SUBJECT_LISTS[resource]
    a, b = make(world, "a"), make(world, "b")
    client, url = api_client(world.data_manager), f"/api/v1/{resource}/"
    assert _subjects_of(client.get(url)) == {a.code, b.code}
    assert _subjects_of(client.get(url, {"subject": a.code})) == {a.code}
    assert _subjects_of(client.get(url, {"subject": str(b.pk)})) == {b.code}
    assert _subjects_of(client.get(url, {"site": "SB"})) == {b.code}
    assert _subjects_of(client.get(url, {"trial": world.trial.code})) == {a.code, b.code}
    assert _subjects_of(client.get(url, {"trial": "NO-SUCH-TRIAL"})) == set()
    assert _subjects_of(client.get(url, {"trial": world.trial.code, "site": "SA", "subject": a.code})) == {a.code}


@pytest.mark.parametrize("resource", SUBJECT_LISTS)
def test_another_sites_subject_code_gives_an_empty_list_like_an_unknown_code(world, resource):
    make = SUBJECT_LISTS[resource]
    make(world, "a")
    b = make(world, "b")
    client, url = api_client(world.coordinator), f"/api/v1/{resource}/"
    other = client.get(url, {"subject": b.code})
    unknown = client.get(url, {"subject": "NO-SUCH-SUBJECT"})
    by_site = client.get(url, {"site": "SB"})
    assert other.status_code == unknown.status_code == by_site.status_code == 200
    assert other.json() == unknown.json() == by_site.json() == {"count": 0, "count_is_lower_bound": False,
                                                                "next": None, "previous": None, "results": []}


def test_results_filter_by_analyte(world):
    subject = consented(**_people(world, "a"))
    _account, token = issue_service_account(trial=world.trial, sites=[world.site_a], name="Lab", by=world.data_manager)
    rows = [result_row(subject, 1), result_row(subject, 2, analyte="FERRITIN", value="800", unit="ng/mL")]
    assert post_results(token_client(token), {"results": rows}).status_code == 201
    client = api_client(world.coordinator)
    crp = client.get("/api/v1/results/", {"analyte": "CRP"}).json()["results"]
    assert [r["analyte"] for r in crp] == ["CRP"]
    assert client.get("/api/v1/results/", {"analyte": "IL6"}).json()["count"] == 0


def test_subjects_filter_by_trial_site_and_cohort_codes(world):
    consented(**_people(world, "a"))
    consented(**_people(world, "b"))
    client = api_client(world.data_manager)
    assert {s["site"] for s in client.get("/api/v1/subjects/", {"site": "SB"}).json()["results"]} == {"SB"}
    assert client.get("/api/v1/subjects/", {"trial": world.trial.code}).json()["count"] == 2
    assert client.get("/api/v1/subjects/", {"cohort": "ADULT"}).json()["count"] == 0


def test_an_unknown_parameter_is_refused_by_name(world):
    response = api_client(world.coordinator).get("/api/v1/results/", {"analyt": "CRP", "sort": "x", "page": 1})
    assert response.status_code == 400
    body = response.json()
    assert body["code"] == "unknown_parameter"
    assert set(body["field_errors"]) == {"analyt", "sort"}
    assert "analyt" in body["message"]


def test_pagination_and_format_are_known_everywhere(world):
    response = api_client(world.coordinator).get("/api/v1/infusions/", {"page": 1, "page_size": 5, "format": "json"})
    assert response.status_code == 200, response.json()


def test_detail_reads_are_not_checked(world):
    subject = consented(**_people(world, "a"))
    response = api_client(world.coordinator).get(f"/api/v1/subjects/{subject.code}/", {"anything": "1"})
    assert response.status_code == 200


# --- every list endpoint of the schema refuses an unknown parameter -----------------------------------


def _list_paths() -> list[str]:
    """GET operations answering a paginated list, straight from the v1 schema: a new list is covered."""
    schema = SchemaGenerator(api_version="v1").get_schema(request=None, public=True)
    found = []
    for path, operations in schema["paths"].items():
        get = operations.get("get")
        if get is None:
            continue
        ref = get["responses"].get("200", {}).get("content", {}).get("application/json", {}).get("schema", {})
        if ref.get("$ref", "").split("/")[-1].startswith("Paginated"):
            found.append(path)
    return sorted(found)


def test_the_schema_lists_every_known_list():
    paths = _list_paths()
    for expected in ("/api/v1/subjects/", "/api/v1/results/", "/api/v1/audit-events/", "/api/v1/trials/",
                     "/api/v1/trials/{code}/visits/", "/api/v1/signatures/", "/api/v1/analytes/"):
        assert expected in paths
    assert len(paths) >= 25


@pytest.mark.parametrize("path", _list_paths())
def test_every_list_refuses_an_unknown_parameter(world, path):
    url = path.replace("{code}", world.trial.code)
    assert "{" not in url, f"fill the path parameter of {path}"
    response = api_client(world.data_manager).get(url, {"no_such_filter": "1"})
    assert response.status_code == 400, (url, response.json())
    assert response.json()["code"] == "unknown_parameter"
    assert list(response.json()["field_errors"]) == ["no_such_filter"]


def test_audit_trail_filters_by_subject_code_and_hides_other_sites_subjects(world):
    a, b = consented(**_people(world, "a")), consented(**_people(world, "b"))
    dm, monitor = api_client(world.data_manager), api_client(world.monitor)
    by_code = dm.get("/api/v1/audit-events/", {"subject": a.code, "page_size": 500}).json()["results"]
    by_id = dm.get("/api/v1/audit-events/", {"subject": str(a.pk), "page_size": 500}).json()["results"]
    assert by_code and by_code == by_id
    assert {r["subject"] for r in by_code} == {a.code}
    other = monitor.get("/api/v1/audit-events/", {"subject": b.code})
    unknown = monitor.get("/api/v1/audit-events/", {"subject": "NO-SUCH-SUBJECT"})
    assert other.status_code == unknown.status_code == 200
    assert other.json() == unknown.json() == {"count": 0, "count_is_lower_bound": False, "next": None,
                                              "previous": None, "results": []}
