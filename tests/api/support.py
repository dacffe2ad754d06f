"""API test helpers: session and token clients, and a laboratory row builder."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from rest_framework.test import APIClient

from tests.factories import PASSWORD, days_ago


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
