"""API test helpers: session and token clients, a laboratory row builder, and callers for success paths."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, NamedTuple

from rest_framework.test import APIClient

from tests.factories import PASSWORD, days_ago
from trials.services import issue_service_account


def api_client(user: Any) -> APIClient:
    client = APIClient()
    assert client.login(username=user.username, password=PASSWORD)
    return client


def token_client(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token}")
    return client


def result_row(subject: Any, n: int, **overrides: Any) -> dict[str, Any]:
    """One laboratory result for ``subject``: CRP 12.5 mg/L collected two days ago at 08:00 UTC."""
    base = {"source_ref": f"LIS-{n}", "subject": subject.code, "accession_number": "ACC-1", "specimen": "serum",
            "collected_at": dt.datetime.combine(days_ago(2), dt.time(8), tzinfo=dt.UTC).isoformat(),
            "analyte": "CRP", "value": "12.5", "unit": "mg/L"}
    return {**base, **overrides}


def post_results(client: APIClient, body: Any) -> Any:
    return client.post("/api/v1/results/", data=json.dumps(body), content_type="application/json")


# --- success-path helpers: who posts, and reading a record back ------------------------------------


CALLERS = ["coordinator", "token"]


class Caller(NamedTuple):
    """An API client and the user the services record as ``recorded_by``."""

    client: APIClient
    user: Any


def caller_for(world: Any, kind: str) -> Caller:
    """Site A's coordinator logged in with a session, or a service-account token bound to site A."""
    if kind == "coordinator":
        return Caller(api_client(world.coordinator), world.coordinator)
    account, token = issue_service_account(trial=world.trial, sites=[world.site_a], name="Site A system",
                                           by=world.data_manager)
    return Caller(token_client(token), account.user)


def post_json(client: APIClient, url: str, body: dict[str, Any]) -> Any:
    return client.post(url, body, format="json")


def read_back(client: APIClient, list_url: str, pk: int) -> dict[str, Any]:
    """GET the record's detail, check the list shows the very same row, and return the detail body."""
    detail = client.get(f"{list_url}{pk}/")
    assert detail.status_code == 200, detail.json()
    body = detail.json()
    assert body["id"] == pk
    listed = client.get(list_url, {"page_size": 500})
    assert listed.status_code == 200, listed.json()
    rows = {row["id"]: row for row in listed.json()["results"]}
    assert rows.get(pk) == body
    return body
