"""Two laboratory systems post overlapping batches at the same moment (real transactions, two connections)."""

from __future__ import annotations

import threading

import pytest
from django.db import connection

from assays.models import Analyte, AnalyteUnit, LabDraw, Result
from tests.api.support import post_results, result_row, token_client
from tests.factories import consented
from trials.services import issue_service_account

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("restore_catalogue")]


def test_overlapping_batches_posted_at_once_store_each_result_once(world):
    crp = Analyte.objects.get(code="CRP")  # seeded by migration
    assert AnalyteUnit.objects.filter(analyte=crp, unit="mg/L").exists()
    subject = consented(trial=world.trial, site=world.site_a, coordinator=world.coordinator)
    tokens = [issue_service_account(trial=world.trial, sites=[world.site_a], name=f"Lab {n}",
                                    by=world.data_manager)[1] for n in (1, 2)]
    rows = [result_row(subject, n, accession_number=f"ACC-{n // 50}", value=str(n % 97 + 0.5)) for n in range(900)]
    batches = [{"results": rows[0:600]}, {"results": rows[300:900]}]
    barrier = threading.Barrier(2)
    responses: dict[int, object] = {}
    failures: list[BaseException] = []

    def post(index: int) -> None:
        try:
            client = token_client(tokens[index])
            barrier.wait(timeout=30)
            responses[index] = post_results(client, batches[index])
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            failures.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=post, args=(i,)) for i in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not failures, failures
    assert all(not thread.is_alive() for thread in threads)
    statuses = sorted(r.status_code for r in responses.values())
    assert statuses in ([200, 201], [201, 201]), [r.content[:500] for r in responses.values()]
    outcomes = [r.json() for r in responses.values()]
    assert sum(o["created"] for o in outcomes) == 900
    assert sum(o["unchanged"] for o in outcomes) == 300
    assert all(o["corrected"] == 0 for o in outcomes)

    current = Result.objects.filter(superseded=False)
    assert current.count() == 900
    assert Result.objects.count() == 900
    assert current.values("source_ref").distinct().count() == 900
    assert LabDraw.objects.count() == 18
    assert set(current.values_list("source_ref", flat=True)) == {f"LIS-{n}" for n in range(900)}
