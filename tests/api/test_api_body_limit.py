"""Large bodies: a full batch of 10,000 laboratory rows is accepted; a body over API_MAX_BODY_BYTES is a 413."""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any

import pytest
from django.conf import settings as django_settings

from assays.models import LabDraw, Result
from assays.services import MAX_BATCH
from tests.api.support import result_row
from tests.factories import consented, days_ago

pytestmark = pytest.mark.django_db

ANALYTES = [("CRP", "12.5", "mg/L"), ("FERRITIN", "850", "ng/mL"), ("IL6", "38.2", "pg/mL"), ("WBC", "4.1", "10*9/L")]


@pytest.fixture
def subject(world: Any) -> Any:
    return consented(trial=world.trial, site=world.site_a, coordinator=world.coordinator)


def laboratory_rows(subject: Any, count: int) -> list[dict[str, Any]]:
    """Rows as a hospital LIS sends them: long references, one accession per draw of a few analytes."""
    rows = []
    for n in range(count):
        analyte, value, unit = ANALYTES[n % len(ANALYTES)]
        collected = dt.datetime.combine(days_ago(2 + n // 4000), dt.time(7, 30, 0, 125000),
                                        tzinfo=dt.timezone(dt.timedelta(hours=8)))
        rows.append({"source_ref": f"BJ01-LIS-2026-{n:07d}-{analyte}-RESULT-ORDER-{n * 7919 % 1000003:07d}",
                     "subject": subject.code, "accession_number": f"BJ01-A26-{n // 40:06d}-SERUM", "specimen": "serum",
                     "collected_at": collected.isoformat(), "analyte": analyte, "value": value, "unit": unit,
                     "status": "final"})
    return rows


def post_raw(client: Any, raw: bytes) -> Any:
    return client.post("/api/v1/results/", data=raw, content_type="application/json")


def test_a_full_batch_of_ten_thousand_rows_is_accepted(subject, lab):
    from assays.models import Analyte

    assert set(Analyte.objects.filter(code__in=[a for a, _, _ in ANALYTES]).values_list("code", flat=True)) == {
        a for a, _, _ in ANALYTES}
    raw = json.dumps({"results": laboratory_rows(subject, MAX_BATCH)}).encode()
    assert len(raw) > 2.5 * 1024 * 1024  # over Django's default limit, which used to refuse it
    started = time.monotonic()
    response = post_raw(lab, raw)
    assert response.status_code == 201, response.content[:500]
    assert response.json() == {"created": MAX_BATCH, "unchanged": 0, "corrected": 0}
    assert Result.objects.count() == MAX_BATCH
    assert time.monotonic() - started < 60


def test_a_body_over_the_limit_is_413_in_the_api_error_shape(subject, lab, settings):
    settings.API_MAX_BODY_BYTES = 64 * 1024
    raw = json.dumps({"results": laboratory_rows(subject, 400)}).encode()
    assert len(raw) > settings.API_MAX_BODY_BYTES
    response = post_raw(lab, raw)
    assert response.status_code == 413
    body = response.json()
    assert body["code"] == "body_too_large" and set(body) == {"code", "message", "field_errors"}
    assert not Result.objects.exists() and not LabDraw.objects.exists()


def test_the_default_limit_is_32_mb():
    assert django_settings.API_MAX_BODY_BYTES == 32 * 1024 * 1024
    assert django_settings.DATA_UPLOAD_MAX_MEMORY_SIZE >= django_settings.API_MAX_BODY_BYTES


def test_a_single_result_mentioning_results_early_is_not_taken_for_a_batch(subject, lab):
    response = post_raw(lab, json.dumps(result_row(subject, 1, source_ref="results")).encode())
    assert response.status_code == 201, response.json()
    assert Result.objects.get().source_ref == "results"


def test_a_batch_is_recognised_wherever_its_key_is(subject, lab):
    raw = b" " * 300 + b'\n{"results": ' + json.dumps([result_row(subject, n) for n in range(2)]).encode() + b"}"
    response = post_raw(lab, raw)
    assert response.status_code == 201, response.json()
    assert response.json()["created"] == 2


def test_a_body_that_is_not_an_object_is_a_400(subject, lab):
    response = post_raw(lab, b"[1, 2]")
    assert response.status_code == 400 and response.json()["code"] == "invalid"
