"""Data locks over the API: clinical writes and result ingestion refused with 409 naming the lock; the
/locks/ endpoints (scoped list, filters, create, release) and their refusals."""

from __future__ import annotations

import datetime as dt

import pytest

from assays.models import Analyte, AnalyteUnit, LabDraw, Result
from locking.models import Lock, LockEvent
from patients.models import AdverseEvent
from tests.api.support import api_client, post_json, post_results, result_row, token_client
from tests.factories import days_ago
from tests.locking.support import REASON, lock, site_a_subject, site_b_subject
from trials.services import issue_service_account

pytestmark = pytest.mark.django_db

LOCKS = "/api/v1/locks/"


def event_body(subject):
    return {"subject": subject.code, "category": "ctcae", "term": "Nausea", "grade": 2,
            "onset_on": str(days_ago(2)), "related_to_product": "possible", "related_to_lymphodepletion": "unlikely"}


# --- clinical writes -----------------------------------------------------------------------------------


def test_adverse_event_on_a_locked_subject_is_a_409_naming_the_lock(world):
    subject = site_a_subject(world)
    lock(world, subject=subject)
    response = post_json(api_client(world.coordinator), "/api/v1/adverse-events/", event_body(subject))
    assert response.status_code == 409
    body = response.json()
    assert body["code"] == "data_locked"
    assert body["message"].startswith(f"Subject {subject.code} of {world.trial.code} is locked (database lock)")
    assert f"by {world.data_manager.username}; reason: {REASON}." in body["message"]
    assert not AdverseEvent.objects.exists()


def test_adverse_event_is_accepted_again_after_release(world):
    subject = site_a_subject(world)
    taken = lock(world, level="freeze", site=world.site_a)
    client = api_client(world.coordinator)
    frozen = post_json(client, "/api/v1/adverse-events/", event_body(subject))
    assert frozen.status_code == 409 and frozen.json()["code"] == "data_frozen"
    assert post_json(api_client(world.data_manager), f"{LOCKS}{taken.pk}/release/",
                     {"reason": "Queries answered"}).status_code == 200
    assert post_json(client, "/api/v1/adverse-events/", event_body(subject)).status_code == 201


# --- result ingestion ----------------------------------------------------------------------------------


@pytest.fixture
def crp(db):
    analyte = Analyte.objects.get_or_create(code="CRP", defaults={"name": "C reactive protein", "loinc": "1988-5",
                                                                  "canonical_unit": "mg/L", "lloq": 0.5})[0]
    AnalyteUnit.objects.get_or_create(analyte=analyte, unit="mg/L", defaults={"factor": 1})
    return analyte


@pytest.fixture
def lab(world):
    _account, token = issue_service_account(trial=world.trial, sites=[world.site_a, world.site_b], name="Lab",
                                            by=world.data_manager)
    return token_client(token)


def test_results_of_locked_subjects_are_refused_row_by_row_with_a_409(world, crp, lab):
    locked, other, open_ = site_a_subject(world), site_a_subject(world), site_b_subject(world)
    lock(world, subject=locked)
    lock(world, level="freeze", subject=other)
    batch = {"results": [result_row(open_, 1, accession_number="ACC-B"), result_row(locked, 2),
                         result_row(other, 3, accession_number="ACC-2"), result_row(locked, 4)]}
    response = post_results(lab, batch)
    assert response.status_code == 409, response.json()
    rows = response.json()["rows"]
    assert [(r["index"], r["field"], r["code"]) for r in rows] == [
        (1, "results[1].subject", "data_locked"), (2, "results[2].subject", "data_frozen"),
        (3, "results[3].subject", "data_locked")]
    assert rows[0]["message"].startswith(f"Subject {locked.code} of {world.trial.code} is locked")
    assert REASON in rows[0]["message"]
    assert not Result.objects.exists() and not LabDraw.objects.exists()  # all or nothing


def test_a_single_result_under_a_trial_lock_is_refused_and_accepted_after_release(world, crp, lab):
    subject = site_a_subject(world)
    taken = lock(world)
    refused = post_results(lab, result_row(subject, 1))
    assert refused.status_code == 409
    assert refused.json()["rows"][0]["message"].startswith(f"Trial {world.trial.code} is locked")
    assert "results[0].subject" in refused.json()["field_errors"]
    post_json(api_client(world.data_manager), f"{LOCKS}{taken.pk}/release/", {"reason": "Re-opened"})
    assert post_results(lab, result_row(subject, 1)).status_code == 201


def test_invalid_rows_and_locked_rows_together_are_a_400_listing_both(world, crp, lab):
    subject = site_a_subject(world)
    lock(world, subject=subject)
    response = post_results(lab, {"results": [result_row(subject, 1), result_row(subject, 2, unit="furlong")]})
    assert response.status_code == 400
    assert {(r["index"], r["code"]) for r in response.json()["rows"]} == {
        (0, "data_locked"), (1, "unknown_unit"), (1, "data_locked")}


@pytest.mark.parametrize("rows", [2, 20])
def test_ingestion_under_a_lock_queries_do_not_grow_with_rows(world, crp, lab, rows, django_assert_max_num_queries):
    subject = site_a_subject(world)
    lock(world, site=world.site_a)
    with django_assert_max_num_queries(12):
        assert post_results(lab, {"results": [result_row(subject, n) for n in range(rows)]}).status_code == 409


# --- the /locks/ endpoints -----------------------------------------------------------------------------


def test_data_manager_locks_a_subject_by_code(world):
    subject = site_a_subject(world)
    response = post_json(api_client(world.data_manager), LOCKS, {
        "trial": world.trial.code, "subject": subject.code, "level": "freeze", "reason": REASON})
    assert response.status_code == 201, response.json()
    body = response.json()
    assert (body["trial"], body["site"], body["subject"]) == (world.trial.code, world.site_a.code, subject.code)
    assert (body["level"], body["reason"], body["active"], body["locked_by"]) == (
        "freeze", REASON, True, world.data_manager.username)
    assert body["scope"] == f"subject {subject.code} of {world.trial.code}"
    lock_row = Lock.objects.get(pk=body["id"])
    event = LockEvent.objects.select_related("pgh_context").get(pgh_obj=lock_row, pgh_label="insert")
    assert event.pgh_context.metadata["reason"] == REASON
    assert event.pgh_context.metadata["user"] == world.data_manager.pk  # the request's user, by the middleware


def test_coordinator_may_not_lock(world):
    response = post_json(api_client(world.coordinator), LOCKS, {"trial": world.trial.code, "level": "lock",
                                                                 "reason": REASON})
    assert response.status_code == 403 and response.json()["code"] == "not_permitted"
    assert not Lock.objects.exists()


def test_lock_refusals_over_the_api(world):
    client = api_client(world.data_manager)
    blank = post_json(client, LOCKS, {"trial": world.trial.code, "level": "lock", "reason": " "})
    assert blank.status_code == 400 and blank.json()["code"] == "reason_required"
    assert blank.json()["field_errors"] == {"reason": ["Give the reason for the freeze or lock."]}
    assert post_json(client, LOCKS, {"trial": world.trial.code, "level": "lock", "reason": REASON}).status_code == 201
    again = post_json(client, LOCKS, {"trial": world.trial.code, "level": "lock", "reason": REASON})
    assert again.status_code == 409 and again.json()["code"] == "already_locked"
    assert again.json()["message"].startswith(f"Trial {world.trial.code} is locked")
    unknown = post_json(client, LOCKS, {"trial": world.trial.code, "subject": "SB-9999", "level": "lock",
                                        "reason": REASON})
    assert unknown.status_code == 400 and "subject" in unknown.json()["field_errors"]


def test_release_over_the_api(world):
    taken = lock(world, site=world.site_a)
    url = f"{LOCKS}{taken.pk}/release/"
    assert post_json(api_client(world.coordinator), url, {"reason": "Please"}).status_code == 403
    client = api_client(world.data_manager)
    blank = post_json(client, url, {"reason": ""})
    assert blank.status_code == 400 and blank.json()["field_errors"] == {
        "reason": ["Give the reason for releasing the lock."]}
    released = post_json(client, url, {"reason": "Cleaning done"})
    assert released.status_code == 200
    assert (released.json()["active"], released.json()["released_by"], released.json()["release_reason"]) == (
        False, world.data_manager.username, "Cleaning done")
    twice = post_json(client, url, {"reason": "Again"})
    assert twice.status_code == 409 and twice.json()["code"] == "already_released"


def test_lock_list_is_scoped_filtered_and_newest_first(world):
    at_b = site_b_subject(world)
    trial_lock = lock(world, level="freeze")
    site_lock = lock(world, site=world.site_a)
    subject_lock = lock(world, subject=at_b)
    release_lock_now = post_json(api_client(world.data_manager), f"{LOCKS}{trial_lock.pk}/release/",
                                 {"reason": "Re-opened"})
    assert release_lock_now.status_code == 200

    def ids(user, **params):
        response = api_client(user).get(LOCKS, params)
        assert response.status_code == 200
        return [row["id"] for row in response.json()["results"]]

    assert ids(world.data_manager) == [subject_lock.pk, site_lock.pk, trial_lock.pk]
    assert ids(world.coordinator) == [site_lock.pk, trial_lock.pk]  # not site B's subject
    assert ids(world.coordinator_b) == [subject_lock.pk, trial_lock.pk]
    assert ids(world.data_manager, active="true") == [subject_lock.pk, site_lock.pk]
    assert ids(world.data_manager, active="false") == [trial_lock.pk]
    assert ids(world.data_manager, level="freeze") == [trial_lock.pk]
    assert ids(world.data_manager, page_size=2, page=2) == [trial_lock.pk]
    hidden = api_client(world.coordinator).get(f"{LOCKS}{subject_lock.pk}/")
    assert hidden.status_code == 404
    assert post_json(api_client(world.coordinator), f"{LOCKS}{subject_lock.pk}/release/",
                     {"reason": "x"}).status_code == 404


@pytest.mark.parametrize("count", [1, 10])
def test_lock_list_queries_do_not_grow_with_rows(world, count, django_assert_num_queries):
    subjects = [site_a_subject(world) for _ in range(count)]
    for subject in subjects:
        lock(world, subject=subject)
    client = api_client(world.data_manager)
    client.get(LOCKS)  # session and memberships warmed up
    with django_assert_num_queries(5):  # session, user, memberships, count, page
        assert len(client.get(LOCKS).json()["results"]) == count


def test_locked_at_is_reported_in_utc(world):
    taken = lock(world)
    body = api_client(world.data_manager).get(f"{LOCKS}{taken.pk}/").json()
    assert dt.datetime.fromisoformat(body["locked_at"]) == taken.locked_at
