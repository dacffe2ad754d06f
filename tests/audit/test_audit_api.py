"""GET /api/v1/audit-events/: the same entries, filters and scoping as the admin."""

from __future__ import annotations

from typing import Any

import pytest

from tests.audit.conftest import screen
from tests.factories import TODAY, days_ago

pytestmark = pytest.mark.django_db

URL = "/api/v1/audit-events/"


@pytest.fixture
def subjects(world: Any, amended: Any) -> dict[str, Any]:
    return {"a": amended, "b": screen(world, site=world.site_b, by=world.coordinator_b)}


def results(client: Any, **params: Any) -> list[dict[str, Any]]:
    response = client.get(URL, {"page_size": 500, **params})
    assert response.status_code == 200, response.json()
    return response.json()["results"]


def test_lists_an_amendment_with_old_and_new_values(world, login, subjects):
    amended = subjects["a"]
    [update] = [r for r in results(login(world.data_manager), table="patients.Subject")
                if r["record_id"] == str(amended.pk) and r["action"] == "update"]
    assert update["id"].startswith("patients.SubjectEvent:")
    assert update["timestamp"].startswith(TODAY.isoformat()) and update["timestamp"].endswith("Z")
    assert (update["site"], update["subject"], update["subject_id"]) == ("SA", amended.code, amended.pk)
    assert (update["user"], update["reason"]) == ("coord_a", "Source document says 42.5%, 3 lines")
    assert update["request"] == {"url": f"/admin/patients/subject/{amended.pk}/change/", "method": "POST",
                                 "request_id": "amend-1", "source": None}
    assert {(c["field"], c["old"], c["new"]) for c in update["changes"]} == {
        ("marrow_blasts_pct", "35.00", "42.50"), ("prior_lines", "2", "3")}


def test_filters_by_site_user_table_subject_and_dates(world, login, subjects):
    dm = login(world.data_manager)
    assert {r["site"] for r in results(dm, site="SB")} == {"SB"}
    assert {r["user"] for r in results(dm, user="coord_b")} == {"coord_b"}
    assert {r["table"] for r in results(dm, table="patients.subjecttransition")} == {"patients.SubjectTransition"}
    assert {r["subject_id"] for r in results(dm, subject=subjects["b"].pk)} == {subjects["b"].pk}
    assert results(dm, date_from=days_ago(-1).isoformat()) == []
    assert results(dm, site="NOPE") == [] and results(dm, user="nobody") == []
    everything = results(dm)
    assert [r["timestamp"] for r in everything] == sorted((r["timestamp"] for r in everything), reverse=True)


def test_invalid_filters_are_a_400_with_field_errors(world, login, subjects):
    dm = login(world.data_manager)
    response = dm.get(URL, {"table": "patients.Nothing", "date_from": TODAY.isoformat(),
                            "date_to": days_ago(1).isoformat()})
    assert response.status_code == 400
    assert response.json()["code"] == "invalid" and "table" in response.json()["field_errors"]
    response = dm.get(URL, {"date_from": TODAY.isoformat(), "date_to": days_ago(1).isoformat()})
    assert response.status_code == 400 and "date_to" in response.json()["field_errors"]


def test_monitor_reads_their_site_only(world, login, subjects):
    rows = results(login(world.monitor))
    assert rows and {r["site"] for r in rows} == {"SA"}
    assert results(login(world.monitor), subject=subjects["b"].pk) == []


@pytest.mark.parametrize("params", [{"date_to": "9999-12-31"}, {"date_from": "0001-01-01", "date_to": "9999-12-31"}])
def test_extreme_dates_are_accepted_not_a_server_error(world, login, subjects, params):
    assert results(login(world.data_manager), **params)  # everything, up to the end of time
