"""The data query API: the workflow, each refusal with its status and code, site scoping, filters, counts
and a list whose number of database queries does not grow with rows."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from dataqueries import services
from dataqueries.checks import run_checks
from dataqueries.models import DataQuery
from locking.models import Level
from locking.services import lock_scope
from tests.api.support import api_client
from tests.dataqueries.conftest import TEXT, adverse_event, raise_on_consent
from tests.factories import consented, days_ago

pytestmark = pytest.mark.django_db

URL = "/api/v1/queries/"


def act(user: Any, query: DataQuery, action: str, text: str | None = "Checked against source.") -> Any:
    body = {} if text is None else {"text": text}
    return api_client(user).post(f"{URL}{query.pk}/{action}/", body, format="json")


def raise_body(subject: Any, **overrides: Any) -> dict[str, Any]:
    return {"subject": subject.code, "record_type": "patients.consent", "record_id": subject.consents.get().pk,
            "field_name": "consented_on", "text": TEXT, **overrides}


def test_full_workflow_through_the_api(world, subject_a):
    dm = api_client(world.data_manager)
    created = dm.post(URL, raise_body(subject_a), format="json")
    assert created.status_code == 201, created.json()
    body = created.json()
    assert {k: body[k] for k in ("trial", "site", "subject", "record_type", "field_name", "origin", "check",
                                 "status", "raised_by")} == {
        "trial": world.trial.code, "site": "SA", "subject": subject_a.code, "record_type": "patients.consent",
        "field_name": "consented_on", "origin": "manual", "check": "", "status": "open", "raised_by": "dm"}
    query = DataQuery.objects.get(pk=body["id"])
    steps = [(world.coordinator, "answer", "Corrected from the signed form.", "answered"),
             (world.data_manager, "close", "", "closed"),
             (world.data_manager, "reopen", "The date is still wrong.", "open"),
             (world.investigator, "answer", "Now corrected.", "answered"),
             (world.data_manager, "close", "Thanks.", "closed")]
    for user, action, text, expected in steps:
        response = act(user, query, action, text)
        assert response.status_code == 200, response.json()
        assert response.json()["status"] == expected
    detail = dm.get(f"{URL}{query.pk}/").json()
    assert [(m["kind"], m["text"], m["by"]) for m in detail["messages"]] == [
        ("raise", TEXT, "dm"), ("answer", "Corrected from the signed form.", "coord_a"), ("close", "", "dm"),
        ("reopen", "The date is still wrong.", "dm"), ("answer", "Now corrected.", "inv_a"), ("close", "Thanks.", "dm")]


def test_a_monitor_raises_through_the_api(world, subject_a):
    response = api_client(world.monitor).post(URL, raise_body(subject_a, record_type="patients.subject",
                                                              record_id=subject_a.pk, field_name="sex"), format="json")
    assert response.status_code == 201 and response.json()["raised_by"] == "monitor_a"


# --- refusals --------------------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["coordinator", "investigator"])
def test_raise_by_an_entry_role_is_403(world, subject_a, who):
    response = api_client(getattr(world, who)).post(URL, raise_body(subject_a), format="json")
    assert (response.status_code, response.json()["code"]) == (403, "not_permitted")
    assert not DataQuery.objects.exists()


@pytest.mark.parametrize(("overrides", "code", "field"), [
    ({"field_name": "nope"}, "unknown_field", "field_name"),
    ({"record_id": 10**9}, "unknown_record", "record_id"),
    ({"record_type": "trials.trial"}, "invalid", "record_type"),  # not a choice: refused by its shape
    ({"text": "   "}, "invalid", "text"),
])
def test_raise_refusals_are_400_on_the_field(world, subject_a, overrides, code, field):
    response = api_client(world.data_manager).post(URL, raise_body(subject_a, **overrides), format="json")
    assert response.status_code == 400, response.json()
    assert response.json()["code"] == code and list(response.json()["field_errors"]) == [field]
    assert not DataQuery.objects.exists()


def test_raise_on_another_subjects_record_is_400(world, subject_a, subject_b):
    body = raise_body(subject_a, record_id=subject_b.consents.get().pk)
    response = api_client(world.data_manager).post(URL, body, format="json")
    # Another subject's record reads exactly like a missing one: its existence is not confirmed.
    assert (response.status_code, response.json()["code"]) == (400, "unknown_record")
    record_id = subject_b.consents.get().pk
    assert response.json()["field_errors"] == {"record_id": [f"No consent {record_id} of {subject_a.code}."]}


def test_raise_for_a_subject_outside_the_callers_sites_is_400_without_confirming_it(world, subject_b):
    response = api_client(world.monitor).post(URL, raise_body(subject_b), format="json")
    assert response.status_code == 400
    assert response.json()["field_errors"]["subject"] == [f"No subject {subject_b.code} in your sites."]


@pytest.mark.parametrize(("who", "action"), [
    ("monitor", "answer"), ("data_manager", "answer"), ("coordinator", "close"), ("investigator", "reopen"),
    ("monitor", "close"),
])
def test_wrong_role_is_403(world, query_a, who, action):
    if action == "reopen":
        services.answer_query(query=query_a, text="Done.", by=world.coordinator)
    response = act(getattr(world, who), query_a, action)
    assert (response.status_code, response.json()["code"]) == (403, "not_permitted")


def test_wrong_state_is_409(world, query_a):
    assert act(world.data_manager, query_a, "reopen").json()["code"] == "query_already_open"
    act(world.coordinator, query_a, "answer")
    response = act(world.investigator, query_a, "answer")
    assert (response.status_code, response.json()["code"]) == (409, "query_not_open")
    act(world.data_manager, query_a, "close")
    response = act(world.data_manager, query_a, "close")
    assert (response.status_code, response.json()["code"]) == (409, "query_already_closed")
    assert [m.kind for m in query_a.messages.order_by("at", "pk")] == ["raise", "answer", "close"]


def test_missing_text_is_400(world, query_a):
    response = act(world.coordinator, query_a, "answer", None)
    assert (response.status_code, response.json()["code"]) == (400, "text_required")
    assert response.json()["field_errors"] == {"text": ["Write the query text."]}


def test_a_database_lock_refuses_query_actions_with_409(world, query_a):
    lock_scope(trial=world.trial, level=Level.LOCK, reason="Final database lock", by=world.data_manager,
               subject=query_a.subject)
    response = act(world.coordinator, query_a, "answer")
    assert (response.status_code, response.json()["code"]) == (409, "data_locked")


def test_a_freeze_leaves_queries_open(world, query_a):
    lock_scope(trial=world.trial, level=Level.FREEZE, reason="Interim freeze", by=world.data_manager,
               subject=query_a.subject)
    assert act(world.coordinator, query_a, "answer").status_code == 200


# --- scoping ---------------------------------------------------------------------------------------


def test_site_b_does_not_see_site_a_queries(world, query_a, query_b):
    client = api_client(world.coordinator_b)
    assert [q["id"] for q in client.get(URL).json()["results"]] == [query_b.pk]
    assert client.get(f"{URL}{query_a.pk}/").status_code == 404
    response = act(world.coordinator_b, query_a, "answer")
    assert (response.status_code, response.json()["code"]) == (404, "not_found")  # 404, not 403: not confirmed
    assert query_a.messages.count() == 1
    ids = {q["id"] for q in api_client(world.data_manager).get(URL).json()["results"]}
    assert ids == {query_a.pk, query_b.pk}


def test_filters_and_stable_order(world, subject_a, subject_b):
    first = raise_on_consent(subject_a, world.data_manager, text="First.")
    second = raise_on_consent(subject_a, world.data_manager, text="Second.")
    other = raise_on_consent(subject_b, world.data_manager)
    services.answer_query(query=first, text="Done.", by=world.coordinator)
    adverse_event(subject_b, world.coordinator_b, onset=days_ago(35))
    run_checks(world.trial)
    automatic = DataQuery.objects.get(origin="automatic")
    client = api_client(world.data_manager)

    def ids(**params: str) -> list[int]:
        return [q["id"] for q in client.get(URL, params).json()["results"]]

    assert ids() == [automatic.pk, other.pk, second.pk, first.pk]  # newest first, then by id
    assert ids(status="answered") == [first.pk]
    assert ids(subject=subject_a.code) == [second.pk, first.pk]
    assert ids(site="SB") == [automatic.pk, other.pk]
    assert ids(origin="automatic") == [automatic.pk]
    assert ids(check="ae_before_consent") == [automatic.pk]
    assert client.get(URL, {"status": "bogus"}).status_code == 400


def test_open_counts_per_site_and_subject(world, subject_a, subject_b):
    closed = raise_on_consent(subject_a, world.data_manager)
    services.close_query(query=closed, by=world.data_manager)
    answered = raise_on_consent(subject_a, world.data_manager)
    services.answer_query(query=answered, text="Done.", by=world.coordinator)
    raise_on_consent(subject_a, world.data_manager)
    raise_on_consent(subject_b, world.data_manager)
    body = api_client(world.data_manager).get(f"{URL}open-counts/").json()
    assert body["by_site"] == [{"site": "SA", "open": 1, "answered": 1}, {"site": "SB", "open": 1, "answered": 0}]
    assert body["by_subject"] == [
        {"trial": world.trial.code, "site": "SA", "subject": subject_a.code, "open": 1, "answered": 1},
        {"trial": world.trial.code, "site": "SB", "subject": subject_b.code, "open": 1, "answered": 0}]
    mine = api_client(world.coordinator_b).get(f"{URL}open-counts/").json()
    assert mine["by_site"] == [{"site": "SB", "open": 1, "answered": 0}]


# --- query counts ----------------------------------------------------------------------------------


def test_list_queries_do_not_grow_with_rows(world):
    client = api_client(world.data_manager)
    client.get(URL)  # session and memberships loaded once

    def add(n: int) -> None:
        for _ in range(n):
            subject = consented(trial=world.trial, site=world.site_a, coordinator=world.coordinator,
                                on=days_ago(29))
            query = raise_on_consent(subject, world.data_manager)
            services.answer_query(query=query, text="Done.", by=world.coordinator)

    def counted() -> int:
        with CaptureQueriesContext(connection) as ctx:
            response = client.get(URL)
        assert response.status_code == 200
        assert all(len(q["messages"]) == 2 for q in response.json()["results"])
        return len(ctx)

    add(1)
    one = counted()
    add(9)
    assert counted() == one
