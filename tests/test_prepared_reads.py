"""The token's and the batch's reads (a small post's, and a batch's without current results) run as
statements prepared once per connection with a generic plan
(config.db), still counted like any query, and as plain statements when preparing is off (a transaction-mode
pooler): the same answers either way."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from assays import services
from assays.models import Analyte, AnalyteUnit, ReferenceRange, Result
from assays.services import INSERT_MAX_ROWS
from tests.api.support import post_results, result_row, token_client
from tests.factories import consented
from trials.services import issue_service_account

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("restore_catalogue")]


@pytest.fixture(autouse=True)
def fresh_connection(db):
    """CRP as the migration seeds it (a transactional test's flush empties the catalogue), and a new
    connection, so that only this test's statements are prepared on it."""
    crp = Analyte.objects.get_or_create(code="CRP", defaults={"name": "C reactive protein", "loinc": "1988-5",
                                                              "canonical_unit": "mg/L", "lloq": 0.5})[0]
    AnalyteUnit.objects.get_or_create(analyte=crp, unit="mg/L", defaults={"factor": 1})
    ReferenceRange.objects.get_or_create(analyte=crp, defaults={"low": None, "high": 5})
    connection.close()


@pytest.fixture
def lab(world):
    return token_client(issue_service_account(trial=world.trial, sites=[world.site_a], name="Lab A",
                                              by=world.data_manager)[1])


def prepared() -> list[tuple[str, int]]:
    """The statements psycopg prepared on this connection, with how often each ran on a generic plan."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement, generic_plans FROM pg_prepared_statements WHERE NOT from_sql")
        return cursor.fetchall()


def test_the_token_and_batch_reads_are_prepared_once_and_planned_generically(world, lab, monkeypatch):
    monkeypatch.setattr(services, "PREPARED_BATCH_MIN_DRAWS", -1)  # any estimate (-1: never analysed) is many
    subject = consented(trial=world.trial, site=world.site_a, coordinator=world.coordinator)
    for n in range(3):
        assert post_results(lab, result_row(subject, n)).status_code == 201
    statements = prepared()
    assert len(statements) == 2, statements  # the token's read and the post's read, each prepared once
    assert {s.split()[0] for s, _ in statements} == {"SELECT"}
    assert any("token_prefix" in s for s, _ in statements)
    assert any("assays_catalogueversion" in s for s, _ in statements)
    assert all(generic >= 2 for _, generic in statements)  # no planning per request
    assert Result.objects.filter(subject=subject).count() == 3
    batch = [result_row(subject, n) for n in range(10, 10 + INSERT_MAX_ROWS + 1)]
    assert post_results(lab, {"results": batch}).status_code == 201
    # A batch of new results is read without current results (checked as it is written): prepared too.
    streamed = [(s, generic) for s, generic in prepared() if s not in dict(statements)]
    assert len(streamed) == 1 and "source_ref" not in streamed[0][0] and streamed[0][1] == 1, streamed
    # A batch that sends a correction is read with its references' current results, planned as sent: its read is
    # not prepared (what was prepared stays).
    corrected = [*batch[1:], {**batch[0], "value": "13", "correction_reason": "Re-run"}]
    assert post_results(lab, {"results": corrected}).json() == {"created": 0, "unchanged": len(batch) - 1,
                                                                 "corrected": 1}
    assert sorted(s for s, _ in prepared()) == sorted([*dict(statements), streamed[0][0]])


def test_a_batch_is_planned_as_sent_while_the_draws_are_few(world, lab):
    """A generic plan made while the draws table is nearly empty would scan it whole as it grows: the batch's read
    is prepared only once the table's estimate reaches PREPARED_BATCH_MIN_DRAWS (this database's holds a few)."""
    subject = consented(trial=world.trial, site=world.site_a, coordinator=world.coordinator)
    assert post_results(lab, result_row(subject, 0)).status_code == 201
    small = sorted(s for s, _ in prepared())
    batch = [result_row(subject, n) for n in range(10, 10 + INSERT_MAX_ROWS + 1)]
    assert post_results(lab, {"results": batch}).status_code == 201
    assert sorted(s for s, _ in prepared()) == small and len(small) == 2
    assert services._draws_estimate < services.PREPARED_BATCH_MIN_DRAWS
    assert Result.objects.filter(subject=subject).count() == 1 + len(batch)


def test_prepared_reads_are_counted_like_any_query(world, lab, settings):
    subject = consented(trial=world.trial, site=world.site_a, coordinator=world.coordinator)
    post_results(lab, result_row(subject, 0))
    counts = []
    for n, on in enumerate((True, False, True), start=1):
        settings.PREPARED_READS = on
        with CaptureQueriesContext(connection) as queries:
            assert post_results(lab, result_row(subject, n)).status_code == 201
        counts.append(len(queries.captured_queries))
    assert counts[0] == counts[1] == counts[2] >= 3, counts  # the token, the batch's read and the write


def test_without_prepared_reads_nothing_is_prepared_and_the_answers_agree(world, lab, settings):
    settings.PREPARED_READS = False
    subject = consented(trial=world.trial, site=world.site_a, coordinator=world.coordinator)
    assert post_results(lab, result_row(subject, 0)).status_code == 201
    again = post_results(lab, result_row(subject, 0))  # the same reference and value: an idempotent repeat
    assert again.status_code in (200, 201), again.json()
    assert prepared() == []
    assert Result.objects.filter(subject=subject).count() == 1
    refused = post_results(lab, result_row(subject, 1, analyte="NOPE"))
    assert refused.status_code == 400 and refused.json()["field_errors"], refused.json()
