"""The contract of every endpoint in the v1 schema: scoping of reads, one success and one refusal per write,
query counts that do not grow with rows, and a valid schema that documents the error bodies."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from django.core.management import call_command
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from assays.models import LabDraw, Result
from patients.models import (
    AdverseEvent,
    ApheresisCollection,
    BodyMeasurement,
    BridgingTherapy,
    ConcomitantMedication,
    Consent,
    CrsAssessment,
    EligibilityAssessment,
    FollowUp,
    IcansAssessment,
    Infusion,
    LymphodepletionCourse,
    LymphodepletionDose,
    ProductLot,
    ResponseAssessment,
    Subject,
    SubjectTransition,
)
from patients.services import safety, treatment
from tests.api.support import api_client, post_results, result_row, token_client
from tests.factories import (
    apheresed_subject,
    assessed,
    at,
    consented,
    days_ago,
    eligible_subject,
    enrolled_subject,
    infused_subject,
    screened,
)
from trials.models import EligibilityCriterion
from trials.services import issue_service_account

pytestmark = pytest.mark.django_db

WRITTEN = [Subject, SubjectTransition, Consent, BodyMeasurement, EligibilityAssessment, ApheresisCollection,
           ProductLot, BridgingTherapy, LymphodepletionCourse, LymphodepletionDose, Infusion, AdverseEvent,
           CrsAssessment, IcansAssessment, ConcomitantMedication, ResponseAssessment, FollowUp, LabDraw, Result]


def snapshot():
    """Row counts of every written table, and every subject's status and lot states."""
    counts = tuple(model.objects.count() for model in WRITTEN)
    return (counts, sorted(Subject.objects.values_list("pk", "status")),
            sorted(ProductLot.objects.values_list("pk", "status")))


def _event(subject, by):
    return safety.record_adverse_event(subject=subject, by=by, data=safety.EventInput(
        category="ctcae", term="Nausea", grade=1, onset_on=days_ago(2), related_to_product="not_related",
        related_to_lymphodepletion="not_related"))


def _site(world, site, coordinator, investigator, lab):
    subject = infused_subject(trial=world.trial, site=site, coordinator=coordinator, investigator=investigator)
    event = _event(subject, coordinator)
    bridging_subject = apheresed_subject(trial=world.trial, site=site, coordinator=coordinator,
                                         investigator=investigator)
    bridging = treatment.record_bridging(subject=bridging_subject, regimen="Dexamethasone",
                                         started_on=days_ago(15), by=coordinator)
    medication = safety.record_medication(subject=subject, drug="tocilizumab", dose=8, dose_unit="mg/kg",
                                          route="iv", given_at=at(days_ago(1)), by=coordinator)
    from patients.services import outcome

    follow_up = outcome.record_follow_up(subject=subject, kind="last_contact", event_on=days_ago(1),
                                         by=coordinator)
    assert post_results(lab, result_row(subject, 1, source_ref=f"{site.code}-1",
                                        accession_number=f"{site.code}-ACC")).status_code == 201
    result = Result.objects.get(source_ref=f"{site.code}-1")
    return SimpleNamespace(
        subject=subject, event=event, bridging=bridging, medication=medication, follow_up=follow_up,
        result=result, draw=result.draw, collection=subject.collections.get(), lot=subject.lots.get(),
        course=subject.lymphodepletion_courses.get() if hasattr(subject, "lymphodepletion_courses")
        else LymphodepletionCourse.objects.get(subject=subject),
        infusion=subject.infusions.get())


@pytest.fixture
def sites(world):
    """A treated subject (and its records) at each site, entered by that site's own staff and laboratory."""
    lab_a = token_client(issue_service_account(trial=world.trial, sites=[world.site_a], name="Lab A",
                                               by=world.data_manager)[1])
    lab_b = token_client(issue_service_account(trial=world.trial, sites=[world.site_b], name="Lab B",
                                               by=world.data_manager)[1])
    return SimpleNamespace(a=_site(world, world.site_a, world.coordinator, world.investigator, lab_a),
                           b=_site(world, world.site_b, world.coordinator_b, world.investigator_b, lab_b))


# (list url, attribute of the site's records, detail url builder)
RESOURCES = [
    ("/api/v1/subjects/", "subject", lambda d: f"/api/v1/subjects/{d.subject.pk}/"),
    ("/api/v1/collections/", "collection", lambda d: f"/api/v1/collections/{d.collection.pk}/"),
    ("/api/v1/lots/", "lot", lambda d: f"/api/v1/lots/{d.lot.pk}/"),
    ("/api/v1/bridging/", "bridging", lambda d: f"/api/v1/bridging/{d.bridging.pk}/"),
    ("/api/v1/lymphodepletion-courses/", "course", lambda d: f"/api/v1/lymphodepletion-courses/{d.course.pk}/"),
    ("/api/v1/infusions/", "infusion", lambda d: f"/api/v1/infusions/{d.infusion.pk}/"),
    ("/api/v1/adverse-events/", "event", lambda d: f"/api/v1/adverse-events/{d.event.pk}/"),
    ("/api/v1/medications/", "medication", lambda d: f"/api/v1/medications/{d.medication.pk}/"),
    ("/api/v1/follow-ups/", "follow_up", lambda d: f"/api/v1/follow-ups/{d.follow_up.pk}/"),
    ("/api/v1/results/", "result", lambda d: f"/api/v1/results/{d.result.pk}/"),
    ("/api/v1/lab-draws/", "draw", lambda d: f"/api/v1/lab-draws/{d.draw.pk}/"),
]
SUBJECT_LISTS = ["transitions", "consents", "body-measurements", "eligibility-assessments"]


@pytest.mark.parametrize(("url", "attr", "detail"), RESOURCES, ids=[r[0].split("/")[3] for r in RESOURCES])
def test_list_and_detail_are_scoped_to_the_callers_site(world, sites, url, attr, detail):
    client = api_client(world.coordinator)
    response = client.get(url)
    assert response.status_code == 200, response.json()
    body = response.json()
    model = type(getattr(sites.a, attr))
    site_field = "site" if model in (Subject, Result, LabDraw) else "subject__site"
    own_ids = sorted(model.objects.filter(**{site_field: world.site_a}).values_list("pk", flat=True))
    assert getattr(sites.a, attr).pk in own_ids
    assert [row["id"] for row in body["results"]] == own_ids
    assert body["count"] == len(own_ids)
    assert model.objects.exclude(**{site_field: world.site_a}).exists()  # site B has rows that are not listed
    own = client.get(detail(sites.a))
    assert own.status_code == 200 and own.json()["id"] == getattr(sites.a, attr).pk
    other = client.get(detail(sites.b))
    assert other.status_code == 404 and other.json()["code"] == "not_found"
    for anonymous_url in (url, detail(sites.a)):
        refused = APIClient().get(anonymous_url)
        assert refused.status_code == 401, anonymous_url
        assert refused.json()["code"] == "not_authenticated"


@pytest.mark.parametrize("action", SUBJECT_LISTS)
def test_subject_sub_lists_are_scoped(world, sites, action):
    client = api_client(world.coordinator)
    own = client.get(f"/api/v1/subjects/{sites.a.subject.code}/{action}/")
    assert own.status_code == 200 and isinstance(own.json(), list) and own.json()
    assert client.get(f"/api/v1/subjects/{sites.b.subject.code}/{action}/").status_code == 404
    assert client.get(f"/api/v1/subjects/{sites.b.subject.pk}/{action}/").status_code == 404
    assert APIClient().get(f"/api/v1/subjects/{sites.a.subject.pk}/{action}/").status_code == 401


def test_response_assessments_list_is_scoped(world, sites):
    # No responses yet at either site: the list is empty and a missing id is a 404.
    client = api_client(world.coordinator)
    assert client.get("/api/v1/responses/").json()["results"] == []
    assert APIClient().get("/api/v1/responses/").status_code == 401


def test_analyte_catalogue_is_readable_by_every_authenticated_caller(world):
    client = api_client(world.coordinator)
    listed = client.get("/api/v1/analytes/", {"page_size": 500})
    assert listed.status_code == 200
    assert {"CRP", "ANC", "HGB"} <= {row["code"] for row in listed.json()["results"]}
    crp = client.get("/api/v1/analytes/CRP/").json()
    assert crp["canonical_unit"] == "mg/L" and crp["units"]["mg/dL"] == 10.0
    assert client.get("/api/v1/analytes/NOPE/").status_code == 404
    assert APIClient().get("/api/v1/analytes/").status_code == 401


# --- writes: one success and one refusal each ------------------------------------------------------


def W(world):  # noqa: N802 - a short alias for readability of the table below
    return dict(trial=world.trial, site=world.site_a, coordinator=world.coordinator)


def build_screened(world):
    return screened(**W(world))


def build_consented(world):
    return consented(**W(world))


def build_assessed(world):
    return assessed(**W(world))[0]


def build_eligible(world):
    return eligible_subject(**W(world), investigator=world.investigator)


def build_enrolled(world):
    return enrolled_subject(**W(world), investigator=world.investigator)


def build_apheresed(world):
    return apheresed_subject(**W(world), investigator=world.investigator)


# (id, subject builder, user attribute, url builder, success payload builder, expected status, response check,
#  refusal payload builder, refusal status, refusal code, refusal field)
def _sub(action):
    return lambda s: f"/api/v1/subjects/{s.code}/{action}/"


WRITES = [
    ("screen", build_screened, "coordinator", lambda s: "/api/v1/subjects/",
     lambda w, s: {"trial": w.trial.code, "site": w.site_a.code, "screened_on": str(days_ago(1)), "sex": "F",
                   "diagnosis": "b_all"},
     201, ("status", "screening"),
     lambda w, s: {"trial": w.trial.code, "site": w.site_b.code, "screened_on": str(days_ago(1)), "sex": "F",
                   "diagnosis": "b_all"},
     403, "not_permitted", "site"),
    ("consent", build_screened, "coordinator", _sub("consent"),
     lambda w, s: {"version": "v1", "consented_on": str(days_ago(1)), "age_at_consent": 40},
     200, ("age_at_consent", 40),
     lambda w, s: {"version": "v1", "consented_on": "2999-01-01", "age_at_consent": 40},
     400, "date_in_future", "consented_on"),
    ("measurements", build_consented, "coordinator", _sub("measurements"),
     lambda w, s: {"measured_on": str(days_ago(1)), "height_cm": "170", "weight_kg": "70"},
     200, ("code", None),
     lambda w, s: {"measured_on": str(days_ago(1)), "height_cm": "170"},
     400, "invalid", "weight_kg"),
    ("eligibility", build_consented, "coordinator", _sub("eligibility"),
     lambda w, s: {"assessed_on": str(days_ago(1)),
                   "answers": {str(c.pk): c.kind == "inclusion" for c in EligibilityCriterion.objects.filter(
                       trial=w.trial)}},
     200, ("status", "screening"),
     lambda w, s: {"assessed_on": str(days_ago(1)), "answers": {"999999999": True}},
     400, "unknown_criterion", "answers"),
    ("confirm-eligibility", build_assessed, "investigator", _sub("confirm-eligibility"),
     lambda w, s: {}, 200, ("status", "eligible"),
     None, 403, "investigator_required", None),  # refused when the coordinator confirms
    ("enrol", build_eligible, "coordinator", _sub("enrol"),
     lambda w, s: {"cohort": "ADULT", "enrolled_on": str(days_ago(1))}, 200, ("status", "enrolled"),
     lambda w, s: {"cohort": "ADULT"}, 400, "invalid", "enrolled_on"),
    ("screen-failure", build_consented, "coordinator", _sub("screen-failure"),
     lambda w, s: {"failed_on": str(days_ago(1)), "reason": "Blasts < 5%"}, 200, ("status", "screen_failed"),
     lambda w, s: {"failed_on": "2999-01-01", "reason": "x"}, 400, "date_in_future", "failed_on"),
    ("withdraw-consent", build_consented, "coordinator", _sub("withdraw-consent"),
     lambda w, s: {"withdrawn_on": str(days_ago(1)), "reason": "Moved"}, 200, ("status", "off_study"),
     lambda w, s: {"withdrawn_on": "not a date", "reason": "Moved"}, 400, "invalid", "withdrawn_on"),
    ("off-study", build_enrolled, "coordinator", _sub("off-study"),
     lambda w, s: {"off_on": str(days_ago(1)), "reason": "investigator_decision"}, 200, ("status", "off_study"),
     lambda w, s: {"off_on": str(days_ago(1)), "reason": "bored"}, 400, "invalid", "reason"),
    ("collections", build_enrolled, "coordinator", lambda s: "/api/v1/collections/",
     lambda w, s: {"subject": s.code, "collection_id": "AP-NEW", "collected_on": str(days_ago(1))},
     201, ("collection_id", "AP-NEW"),
     lambda w, s: {"subject": "NO-SUCH", "collection_id": "AP-NEW", "collected_on": str(days_ago(1))},
     400, "invalid", "subject"),
    ("bridging", build_enrolled, "coordinator", lambda s: "/api/v1/bridging/",
     lambda w, s: {"subject": s.code, "regimen": "Vincristine", "started_on": str(days_ago(2)),
                   "ended_on": str(days_ago(1))}, 201, ("regimen", "Vincristine"),
     lambda w, s: {"subject": s.code, "regimen": "Vincristine", "started_on": str(days_ago(1)),
                   "ended_on": str(days_ago(2))}, 400, "ends_before_start", "ended_on"),
    ("follow-ups", build_consented, "coordinator", lambda s: "/api/v1/follow-ups/",
     lambda w, s: {"subject": s.code, "kind": "death", "event_on": str(days_ago(1)), "cause_of_death": "Sepsis"},
     201, ("kind", "death"),
     lambda w, s: {"subject": s.code, "kind": "death", "event_on": str(days_ago(1)), "cause_of_death": ""},
     400, "cause_required", "cause_of_death"),
    ("adverse-events", build_consented, "coordinator", lambda s: "/api/v1/adverse-events/",
     lambda w, s: {"subject": s.code, "category": "ctcae", "term": "Headache", "grade": 1,
                   "onset_on": str(days_ago(1)), "related_to_product": "not_related",
                   "related_to_lymphodepletion": "not_related"}, 201, ("term", "Headache"),
     lambda w, s: {"subject": s.code, "category": "ctcae", "term": "Headache", "grade": 1,
                   "onset_on": "2999-01-01", "related_to_product": "not_related",
                   "related_to_lymphodepletion": "not_related"}, 400, "date_in_future", "onset_on"),
    ("medications", build_consented, "coordinator", lambda s: "/api/v1/medications/",
     lambda w, s: {"subject": s.code, "drug": "tocilizumab", "dose": "8", "dose_unit": "mg/kg", "route": "iv",
                   "given_at": at(days_ago(1)).isoformat()}, 201, ("drug", "tocilizumab"),
     lambda w, s: {"subject": s.code, "drug": "tocilizumab", "dose_unit": "mg/kg", "route": "iv",
                   "given_at": at(days_ago(1)).isoformat()}, 400, "invalid", "dose"),
    ("lots", build_apheresed, "coordinator", lambda s: "/api/v1/lots/",
     lambda w, s: {"subject": s.code, "product": w.trial.products.get().pk, "lot_number": "LOT-NEW",
                   "source": "autologous", "collection": s.collections.get().pk}, 201, ("status", None),
     lambda w, s: {"subject": s.code, "product": w.trial.products.get().pk, "lot_number": "LOT-NEW",
                   "source": "autologous", "collection": 0}, 400, "invalid", "collection"),
]


@pytest.mark.parametrize("row", WRITES, ids=[w[0] for w in WRITES])
def test_write_succeeds(world, row):
    _id, build, user, url, payload, status, (field, value), *_ = row
    subject = build(world)
    response = api_client(getattr(world, user)).post(url(subject), payload(world, subject), format="json")
    assert response.status_code == status, response.json()
    if value is not None:
        assert response.json()[field] == value
    else:
        assert "id" in response.json()


@pytest.mark.parametrize("row", WRITES, ids=[w[0] for w in WRITES])
def test_write_refusal_reports_the_code_and_field_and_writes_nothing(world, row):
    _id, build, user, url, _payload, _status, _check, refusal, status, code, field = row
    subject = build(world)
    before = snapshot()
    body = refusal(world, subject) if refusal else {}
    refused_user = "coordinator" if _id == "confirm-eligibility" else user
    response = api_client(getattr(world, refused_user)).post(url(subject), body, format="json")
    assert response.status_code == status, response.json()
    assert response.json()["code"] == code
    if field:
        assert field in response.json()["field_errors"]
    assert snapshot() == before


@pytest.mark.parametrize("row", [w for w in WRITES if "{" not in w[3](SimpleNamespace(code="X"))
                                 and "subjects/X/" in w[3](SimpleNamespace(code="X"))],
                         ids=lambda w: w[0])
def test_subject_actions_on_another_sites_subject_are_404(world, row):
    build, url, payload = row[1], row[3], row[4]
    other = build(SimpleNamespace(**{**world.__dict__, "site_a": world.site_b, "coordinator": world.coordinator_b,
                                     "investigator": world.investigator_b}))
    before = snapshot()
    response = api_client(getattr(world, row[2])).post(url(other), payload(world, other), format="json")
    assert response.status_code == 404 and response.json()["code"] == "not_found"
    assert snapshot() == before


def _lot_action(world, action):
    subject = build_apheresed(world)
    lot = treatment.register_lot(subject=subject, product=subject.trial.products.get(), lot_number="LOT-1",
                                 source="autologous", collection=subject.collections.get(), by=world.coordinator)
    return lot, f"/api/v1/lots/{lot.pk}/{action}/"


def test_lot_release_success_and_refusal(world):
    lot, url = _lot_action(world, "release")
    client = api_client(world.coordinator)
    before = snapshot()
    refused = client.post(url, {"release_date": str(days_ago(1)), "viability_pct": "150", "car_positive_pct": "40",
                                "total_viable_car_cells": "200000000", "qc_pass": True}, format="json")
    assert refused.status_code == 400 and refused.json()["code"] == "invalid"
    assert "viability_pct" in refused.json()["field_errors"]
    assert snapshot() == before
    released = client.post(url, {"release_date": str(days_ago(1)), "viability_pct": "92", "car_positive_pct": "40",
                                 "total_viable_car_cells": "200000000", "qc_pass": True}, format="json")
    assert released.status_code == 200, released.json()
    assert released.json()["status"] == "released"


def test_lot_failure_success_and_refusal(world):
    lot, url = _lot_action(world, "failure")
    client = api_client(world.coordinator)
    before = snapshot()
    refused = client.post(url, {"failed_on": "2999-01-01", "reason": "Contamination"}, format="json")
    assert refused.status_code == 400 and refused.json()["code"] == "date_in_future"
    assert "failed_on" in refused.json()["field_errors"]
    assert snapshot() == before
    failed = client.post(url, {"failed_on": str(days_ago(1)), "reason": "Contamination"}, format="json")
    assert failed.status_code == 200, failed.json()
    assert failed.json()["failure_reason"] == "Contamination"


@pytest.mark.parametrize("path", ["lymphodepletion-courses/{course}/doses", "adverse-events/{event}/crs-assessments",
                                  "adverse-events/{event}/icans-assessments", "infusions", "responses",
                                  "lymphodepletion-courses"])
def test_remaining_writes_refuse_malformed_input_and_another_sites_records(world, sites, path):
    client = api_client(world.coordinator)
    before = snapshot()
    own = "/api/v1/" + path.format(course=sites.a.course.pk, event=sites.a.event.pk) + "/"
    refused = client.post(own, {}, format="json")
    assert refused.status_code == 400, refused.json()
    assert refused.json()["code"] == "invalid" and refused.json()["field_errors"]
    if "{" in path:
        other = "/api/v1/" + path.format(course=sites.b.course.pk, event=sites.b.event.pk) + "/"
        assert client.post(other, {}, format="json").status_code == 404
    assert snapshot() == before

# --- query counts do not grow with rows ---------------------------------------------------------------


def _make_rows(world, lab, url, n):
    subject = consented(**W(world))
    if url == "/api/v1/subjects/":
        for _ in range(n - 1):
            screened(**W(world))
    elif url in ("/api/v1/results/", "/api/v1/lab-draws/"):
        rows = [result_row(subject, i, source_ref=f"{subject.code}-{i}", accession_number=f"{subject.code}-{i}")
                for i in range(n)]
        assert post_results(lab, {"results": rows}).status_code == 201
    elif url == "/api/v1/medications/":
        for _ in range(n):
            safety.record_medication(subject=subject, drug="tocilizumab", dose=8, dose_unit="mg/kg", route="iv",
                                     given_at=at(days_ago(1)), by=world.coordinator)
    elif url == "/api/v1/adverse-events/":
        for _ in range(n):
            _event(subject, world.coordinator)


def _count_queries(client, url, expected_rows):
    with CaptureQueriesContext(connection) as queries:
        response = client.get(url)
    assert response.status_code == 200
    assert len(response.json()["results"]) == expected_rows
    return len(queries)


@pytest.mark.parametrize("url", ["/api/v1/subjects/", "/api/v1/results/", "/api/v1/lab-draws/",
                                 "/api/v1/medications/", "/api/v1/adverse-events/"])
def test_list_queries_do_not_grow_with_rows(world, lab, url):
    _make_rows(world, lab, url, 1)
    client = api_client(world.coordinator)
    one = _count_queries(client, url, 1)
    _make_rows(world, lab, url, 9)  # subjects: one consented and 8 screened more; others: 9 more rows
    expected = 10 if url != "/api/v1/subjects/" else 1 + 1 + 8
    ten = _count_queries(api_client(world.coordinator), url, expected)
    assert ten == one


def test_analyte_list_queries_are_fixed(world):
    client = api_client(world.coordinator)
    with CaptureQueriesContext(connection) as small:
        assert client.get("/api/v1/analytes/", {"page_size": 1}).status_code == 200
    with CaptureQueriesContext(connection) as large:
        assert client.get("/api/v1/analytes/", {"page_size": 20}).status_code == 200
    assert len(small) == len(large)


def test_batch_ingestion_queries_do_not_grow(world, lab):
    subject = consented(**W(world))
    assert lab.get("/api/v1/analytes/").status_code == 200  # the token's first use stamps last_used_at

    def ingest(prefix, n):
        rows = [result_row(subject, i, source_ref=f"{prefix}-{i}", accession_number=f"{prefix}-{i % 5}")
                for i in range(n)]
        with CaptureQueriesContext(connection) as queries:
            response = post_results(lab, {"results": rows})
        assert response.status_code == 201 and response.json()["created"] == n
        return len(queries)

    assert ingest("small", 2) == ingest("large", 50)


# --- the schema -------------------------------------------------------------------------------------


def test_schema_validates_and_documents_write_errors(tmp_path):
    import yaml

    target = tmp_path / "schema.yml"
    call_command("spectacular", "--api-version", "v1", "--validate", "--fail-on-warn", "--file", str(target))
    schema = yaml.safe_load(target.read_text())
    posts = {path: ops["post"] for path, ops in schema["paths"].items() if "post" in ops}
    assert len(posts) >= 20
    missing = {path: sorted({"400", "404", "409"} - set(op["responses"])) for path, op in posts.items()}
    assert {path: codes for path, codes in missing.items() if codes} == {}
    for path, op in posts.items():
        error = op["responses"]["409"]["content"]["application/json"]["schema"]
        assert error == {"$ref": "#/components/schemas/Error"}, path
    error = schema["components"]["schemas"]["Error"]
    assert set(error["properties"]) == {"code", "message", "field_errors", "rows"}  # rows: results batches only
    assert error["required"] == ["code", "message", "field_errors"]
