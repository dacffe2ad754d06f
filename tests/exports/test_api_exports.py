"""Exports over the API: request, follow, download, retry; every refusal in the API's error shape; scoping
of the job list per role; idempotent requests; query counts."""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from exports.models import ExportJob, State
from exports.services import create_export_job, run_export_job
from tests.api.support import api_client
from tests.factories import MembershipFactory, UserFactory
from trials.models import Membership

pytestmark = pytest.mark.django_db
URL = "/api/v1/exports/"


def post(client: Any, body: dict[str, Any], **headers: Any) -> Any:
    return client.post(URL, data=json.dumps(body), content_type="application/json", **headers)


def request_export(world: Any, user: Any, **body: Any) -> Any:
    return post(api_client(user), {"trial": world.trial.code, "format": "probe", **body})


def test_an_export_is_requested_followed_and_downloaded(world, subjects):
    client = api_client(world.data_manager)
    response = post(client, {"trial": world.trial.code, "format": "probe", "sites": ["SA"]})
    assert response.status_code == 202, response.json()
    body = response.json()
    assert (body["state"], body["trial"], body["format"], body["sites"], body["requested_by"]) == (
        "queued", world.trial.code, "probe", ["SA"], "dm")
    assert body["progress"] == {"files_done": 0, "files_total": 0}
    assert body["links"] == {"self": f"{URL}{body['id']}/", "file": None, "retry": None}
    assert client.get(f"{URL}{body['id']}/file/").json()["code"] == "export_not_done"

    run_export_job(body["id"])  # what the worker does
    detail = client.get(f"{URL}{body['id']}/").json()
    assert (detail["state"], detail["progress"]) == ("done", {"files_done": 2, "files_total": 2})
    assert detail["links"]["file"] == f"{URL}{body['id']}/file/"
    assert detail["manifest"]["scope"]["sites"] == ["SA"]
    download = client.get(detail["links"]["file"])
    assert download.status_code == 200 and download["Content-Type"] == "application/zip"
    content = b"".join(download.streaming_content)  # type: ignore[attr-defined]
    assert hashlib.sha256(content).hexdigest() == detail["sha256"] == download["X-Content-SHA256"]
    assert "manifest.json" in zipfile.ZipFile(io.BytesIO(content)).namelist()
    assert ExportJob.objects.get(pk=body["id"]).task_id is not None  # queued for a worker


@pytest.mark.parametrize(("who", "body", "status", "code"), [
    ("data_manager", {"trial": "NO-SUCH-TRIAL"}, 400, "unknown_trial"),
    ("data_manager", {"format": "nope"}, 400, "unknown_format"),
    ("monitor", {"sites": ["SB"]}, 400, "unknown_site"),
    ("monitor", {"sites": []}, 400, "no_sites"),
    ("monitor", {"subjects": []}, 400, "no_subjects"),
    ("monitor", {"subjects": ["NOPE-0001"]}, 400, "unknown_subject"),
    ("coordinator", {}, 403, "export_not_allowed"),
    ("data_manager", {"sites": "SA"}, 400, "invalid"),
])
def test_refusals_use_the_error_shape_and_create_no_job(world, subjects, who, body, status, code):
    response = request_export(world, getattr(world, who), **body)
    assert response.status_code == status, response.json()
    assert response.json()["code"] == code
    assert set(response.json()) == {"code", "message", "field_errors"}
    assert not ExportJob.objects.exists()


def test_a_missing_field_is_invalid(world):
    response = post(api_client(world.data_manager), {"format": "probe"})
    assert (response.status_code, response.json()["code"]) == (400, "invalid")
    assert "trial" in response.json()["field_errors"]


def test_another_sites_subject_is_refused_like_an_unknown_one(world, subjects):
    other = request_export(world, world.monitor, subjects=[subjects["b1"].code]).json()
    unknown = request_export(world, world.monitor, subjects=["ZZ-0001"]).json()
    assert other["code"] == unknown["code"] == "unknown_subject"
    assert other["message"].replace(subjects["b1"].code, "X") == unknown["message"].replace("ZZ-0001", "X")
    assert other["field_errors"].keys() == unknown["field_errors"].keys() == {"subjects"}


def test_a_trial_of_which_the_user_is_not_a_member_is_unknown(world):
    outsider = UserFactory(username="outsider")
    other_trial = request_export(world, outsider).json()
    missing = post(api_client(outsider), {"trial": "NOPE", "format": "probe"}).json()
    assert other_trial["code"] == missing["code"] == "unknown_trial"


def test_coordinators_export_casebooks_of_their_site(world, subjects):
    response = request_export(world, world.coordinator, format="casebook")
    assert response.status_code == 202 and response.json()["sites"] == ["SA"]


def test_monitors_export_their_site(world, subjects):
    response = request_export(world, world.monitor)
    assert response.status_code == 202 and response.json()["sites"] == ["SA"]


def test_the_job_list_is_scoped(world, subjects):
    dm_job = create_export_job(by=world.data_manager, trial=world.trial, format_code="probe")
    monitor_job = create_export_job(by=world.monitor, trial=world.trial, format_code="probe")
    dm_b: Any = UserFactory(username="dm_b")
    MembershipFactory(user=dm_b, trial=world.trial, site=world.site_b, role=Membership.Role.DATA_MANAGER)
    dm_b_job = create_export_job(by=dm_b, trial=world.trial, format_code="probe")
    dm_a: Any = UserFactory(username="dm_a")
    MembershipFactory(user=dm_a, trial=world.trial, site=world.site_a, role=Membership.Role.DATA_MANAGER)

    def ids(user: Any) -> set[int]:
        return {row["id"] for row in api_client(user).get(URL).json()["results"]}

    assert ids(world.data_manager) == {dm_job.pk, monitor_job.pk, dm_b_job.pk}
    assert ids(world.monitor) == {monitor_job.pk}
    assert ids(dm_a) == {monitor_job.pk}  # site A's job; the two-site job and site B's are not theirs
    assert ids(dm_b) == {dm_b_job.pk}
    assert ids(world.coordinator_b) == set()
    assert api_client(world.monitor).get(f"{URL}{dm_job.pk}/").status_code == 404
    assert api_client(world.monitor).get(f"{URL}{dm_job.pk}/file/").status_code == 404
    assert api_client(world.coordinator).post(f"{URL}{dm_job.pk}/retry/").status_code == 404


def test_the_list_refuses_unknown_parameters_and_filters(world, subjects):
    client = api_client(world.data_manager)
    create_export_job(by=world.data_manager, trial=world.trial, format_code="probe")
    response = client.get(URL, {"colour": "blue"})
    assert (response.status_code, response.json()["code"]) == (400, "unknown_parameter")
    assert client.get(URL, {"state": "queued", "trial": world.trial.code}).json()["count"] == 1
    assert client.get(URL, {"state": "done"}).json()["count"] == 0


@pytest.mark.parametrize("rows", [1, 10])
def test_the_list_costs_the_same_queries_for_1_and_10_jobs(world, rows, django_assert_num_queries):
    for _ in range(rows):
        create_export_job(by=world.data_manager, trial=world.trial, format_code="probe")
    client = api_client(world.data_manager)
    client.get(URL)  # warm the session
    with CaptureQueriesContext(connection) as queries:
        assert client.get(URL).json()["count"] == rows
    assert len(queries) == 5, [q["sql"][:100] for q in queries]  # session, user, memberships, count, page


def test_only_a_failed_job_is_retried(world, subjects):
    client = api_client(world.data_manager)
    job = create_export_job(by=world.data_manager, trial=world.trial, format_code="probe")
    response = client.post(f"{URL}{job.pk}/retry/")
    assert (response.status_code, response.json()["code"]) == (409, "export_not_failed")
    ExportJob.objects.filter(pk=job.pk).update(state=State.FAILED, error="worker lost", attempts=1)
    listed = client.get(f"{URL}{job.pk}/").json()
    assert listed["error"] == "worker lost" and listed["links"]["retry"] == f"{URL}{job.pk}/retry/"
    response = client.post(f"{URL}{job.pk}/retry/")
    assert response.status_code == 202 and response.json()["state"] == "queued"
    assert run_export_job(job.pk).state == State.DONE


def test_a_request_with_an_idempotency_key_creates_one_job(world, subjects):
    client = api_client(world.data_manager)
    body = {"trial": world.trial.code, "format": "probe"}
    first = post(client, body, HTTP_IDEMPOTENCY_KEY="export-1")
    again = post(client, body, HTTP_IDEMPOTENCY_KEY="export-1")
    assert first.status_code == again.status_code == 202
    assert again["Idempotent-Replayed"] == "true" and again.json() == first.json()
    assert ExportJob.objects.count() == 1
