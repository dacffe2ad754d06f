"""Export jobs through the services: who may export what, the package and its manifest, failures,
retries, stalled jobs and the audit record. Jobs run in-process against PostgreSQL."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from config.errors import PermissionRefused, RuleViolation, StateConflict
from exports.formats import REGISTRY, ExportFile
from exports.models import ExportJob, State
from exports.services import (
    build_scope,
    check_export,
    create_export_job,
    exportable_sites,
    fail_stalled_jobs,
    retry_export_job,
    run_export_job,
)
from locking.services import lock_scope
from tests.audit.conftest import entries_for
from tests.exports.conftest import package, stored_files
from tests.factories import MembershipFactory, UserFactory, screened
from trials.models import Membership

pytestmark = pytest.mark.django_db


def export(user: Any, trial: Any, fmt: str = "probe", **kwargs: Any) -> ExportJob:
    job = create_export_job(by=user, trial=trial, format_code=fmt, **kwargs)
    return run_export_job(job.pk)


def test_export_writes_a_package_with_a_manifest(world, subjects, export_dir):
    job = export(world.data_manager, world.trial)
    assert job.state == State.DONE, job.error
    assert (job.files_done, job.files_total, job.attempts) == (2, 2, 1)
    archive = package(job)
    assert archive.namelist() == ["probe/subjects.csv", "probe/sites.csv", "manifest.json"]
    rows = archive.read("probe/subjects.csv").decode().splitlines()
    assert rows[1:] == sorted(f"{s.code},{s.site.code},{s.status}" for s in subjects.values())
    manifest = json.loads(archive.read("manifest.json"))
    assert manifest == job.manifest
    assert job.cutoff is not None
    assert manifest["cutoff"] == job.cutoff.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")
    assert manifest["exported_by"] == {"username": "dm", "name": world.data_manager.get_full_name()}
    assert manifest["format"] == {"code": "probe", "label": "Probe (tests)"}
    assert manifest["scope"] == {"trial": world.trial.code, "sites": ["SA", "SB"],
                                 "subjects": sorted(s.code for s in subjects.values()), "subjects_selected": False}
    assert manifest["locks"] == {"trial": None, "sites": {"SA": None, "SB": None}}
    for entry in manifest["files"]:
        content = archive.read(entry["name"])
        assert entry["sha256"] == hashlib.sha256(content).hexdigest()
        assert entry["size"] == len(content)
    stored = export_dir / job.file_name
    assert job.sha256 == hashlib.sha256(stored.read_bytes()).hexdigest() and job.size == stored.stat().st_size
    assert stored_files(export_dir) == [job.file_name]  # nothing half-written left beside it
    assert job.file_name.startswith(f"{world.trial.code}/{world.trial.code}-probe-")


def test_a_locked_trial_exported_twice_gives_identical_data_files(world, subjects):
    lock_scope(trial=world.trial, level="lock", reason="Final analysis", by=world.data_manager)
    first, second = export(world.data_manager, world.trial), export(world.data_manager, world.trial)
    assert first.file_name != second.file_name
    one, two = package(first), package(second)
    for name in ("probe/subjects.csv", "probe/sites.csv"):
        assert one.read(name) == two.read(name)
        assert (one.getinfo(name).CRC, one.getinfo(name).date_time) == (two.getinfo(name).CRC,
                                                                        two.getinfo(name).date_time)
    assert first.manifest["files"] == second.manifest["files"]
    assert first.manifest["locks"]["trial"]["level"] == "lock"
    assert first.manifest["locks"]["trial"]["reason"] == "Final analysis"


def test_manifest_names_a_locked_site(world, subjects):
    lock_scope(trial=world.trial, site=world.site_b, level="freeze", reason="Site closed", by=world.data_manager)
    locks = export(world.data_manager, world.trial).manifest["locks"]
    assert locks["trial"] is None and locks["sites"]["SA"] is None
    assert locks["sites"]["SB"]["level"] == "freeze" and locks["sites"]["SB"]["locked_by"] == "dm"


def test_selected_subjects_and_sites_narrow_the_export(world, subjects):
    job = export(world.data_manager, world.trial, site_codes=["SA"], subject_codes=[subjects["a2"].code])
    assert (job.sites, job.subjects, job.site_id) == (["SA"], [subjects["a2"].code], world.site_a.pk)
    assert job.manifest["scope"]["subjects"] == [subjects["a2"].code]
    assert job.manifest["scope"]["subjects_selected"] is True
    assert package(job).read("probe/subjects.csv").decode().splitlines()[1:] == [
        f"{subjects['a2'].code},SA,{subjects['a2'].status}"]


# --- who may export what --------------------------------------------------------------------------


def test_each_role_exports_its_own_sites(world, subjects):
    codes = {name: [s.code for s in exportable_sites(user=getattr(world, name), trial=world.trial, format_code=fmt)]
             for name, fmt in [("data_manager", "probe"), ("monitor", "probe"), ("coordinator", "casebook"),
                               ("investigator_b", "casebook"), ("coordinator", "probe")]}
    assert codes == {"data_manager": ["SA", "SB"], "monitor": ["SA"], "coordinator": [], "investigator_b": ["SB"]}
    assert exportable_sites(user=world.coordinator, trial=world.trial, format_code="casebook")[0].code == "SA"
    monitor_job = export(world.monitor, world.trial)
    assert monitor_job.manifest["scope"]["sites"] == ["SA"]
    assert monitor_job.manifest["scope"]["subjects"] == sorted([subjects["a1"].code, subjects["a2"].code])


def test_a_site_bound_data_manager_exports_their_site_only(world, subjects):
    dm_b: Any = UserFactory(username="dm_b")
    MembershipFactory(user=dm_b, trial=world.trial, site=world.site_b, role=Membership.Role.DATA_MANAGER)
    job = export(dm_b, world.trial)
    assert job.manifest["scope"]["sites"] == ["SB"] and job.manifest["scope"]["subjects"] == [subjects["b1"].code]


def test_coordinators_export_casebooks_of_their_site(world, subjects):
    request = check_export(user=world.coordinator, trial=world.trial, format_code="casebook")
    assert [s.code for s in request.sites] == ["SA"]
    with pytest.raises(PermissionRefused) as err:
        check_export(user=world.coordinator, trial=world.trial, format_code="probe")
    assert err.value.code == "export_not_allowed"


@pytest.mark.parametrize(("kwargs", "code", "field"), [
    ({"format_code": "nope"}, "unknown_format", "format"),
    ({"site_codes": ["SB"]}, "unknown_site", "sites"),
    ({"site_codes": ["XX"]}, "unknown_site", "sites"),
    ({"site_codes": []}, "no_sites", "sites"),
    ({"subject_codes": []}, "no_subjects", "subjects"),
    ({"subject_codes": ["SA-9999"]}, "unknown_subject", "subjects"),
])
def test_refused_requests_say_why_and_create_nothing(world, subjects, kwargs, code, field):
    kwargs = {"format_code": "probe", **kwargs}
    with pytest.raises(RuleViolation) as err:
        create_export_job(by=world.monitor, trial=world.trial, **kwargs)
    assert (err.value.code, err.value.field) == (code, field)
    assert not ExportJob.objects.exists()


def test_another_sites_subject_is_refused_like_an_unknown_one(world, subjects):
    messages = []
    for code in (subjects["b1"].code, "NO-SUCH-CODE"):
        with pytest.raises(RuleViolation) as err:
            check_export(user=world.monitor, trial=world.trial, format_code="probe", subject_codes=[code])
        assert err.value.code == "unknown_subject"
        messages.append(err.value.message.replace(code, "<code>"))
    assert messages[0] == messages[1]


def test_a_trial_the_user_has_no_role_in_is_unknown(world):
    outsider: Any = UserFactory(username="outsider")
    with pytest.raises(RuleViolation) as err:
        check_export(user=outsider, trial=world.trial, format_code="probe")
    assert (err.value.code, err.value.field) == ("unknown_trial", "trial")


# --- failures, retries, stalled jobs -------------------------------------------------------------


def test_a_failing_format_records_its_reason_and_leaves_no_file(world, subjects, export_dir):
    def broken() -> Any:
        yield b"half a file"
        raise ValueError("disk on fire")

    REGISTRY["broken"] = type("Broken", (), {"code": "broken", "label": "Broken",
                                             "files": lambda self, scope: [ExportFile("x.csv", broken)]})()
    try:
        job = export(world.data_manager, world.trial, "broken")
    finally:
        REGISTRY.pop("broken")
    assert job.state == State.FAILED
    assert job.error == "ValueError: disk on fire"
    assert job.file_name == "" and job.finished_at is not None
    assert stored_files(export_dir) == []


def test_a_failed_job_is_retried_as_a_new_attempt(world, subjects):
    job = create_export_job(by=world.data_manager, trial=world.trial, format_code="probe")
    ExportJob.objects.filter(pk=job.pk).update(state=State.FAILED, error="worker lost", attempts=1)
    job = retry_export_job(job=job, by=world.data_manager)
    assert (job.state, job.error) == (State.QUEUED, "")
    job = run_export_job(job.pk)
    assert (job.state, job.attempts) == (State.DONE, 2)


@pytest.mark.parametrize("state", [State.QUEUED, State.RUNNING, State.DONE])
def test_only_failed_or_stalled_jobs_are_retried(world, subjects, state):
    job = create_export_job(by=world.data_manager, trial=world.trial, format_code="probe")
    if state == State.DONE:
        run_export_job(job.pk)
    elif state == State.RUNNING:  # running, with a recent heartbeat: its worker is alive
        ExportJob.objects.filter(pk=job.pk).update(state=state, attempts=1, heartbeat_at=timezone.now())
    job.refresh_from_db()
    assert job.state == state
    with pytest.raises(StateConflict) as err:
        retry_export_job(job=job, by=world.data_manager)
    assert err.value.code == "export_not_failed"


def test_a_job_whose_heartbeat_stopped_is_marked_failed_and_can_be_retried(world, subjects, settings):
    settings.EXPORTS_STALLED_AFTER_SECONDS = 60
    job = create_export_job(by=world.data_manager, trial=world.trial, format_code="probe")
    silent = timezone.now() - dt.timedelta(minutes=5)
    ExportJob.objects.filter(pk=job.pk).update(state=State.RUNNING, attempts=1, started_at=silent,
                                               heartbeat_at=silent)
    assert fail_stalled_jobs() == 1
    job.refresh_from_db()
    assert job.state == State.FAILED and "worker stopped" in job.error
    assert run_export_job(retry_export_job(job=job, by=world.data_manager).pk).state == State.DONE


def test_a_requester_who_lost_access_gets_a_failed_job_with_the_reason(world, subjects):
    job = create_export_job(by=world.monitor, trial=world.trial, format_code="probe")
    Membership.objects.filter(user=world.monitor).update(active=False)
    world.monitor.__dict__.pop("_trial_access", None)
    with pytest.raises(StateConflict) as refused:
        build_scope(job, cutoff=timezone.now())
    assert refused.value.code == "export_scope_changed"
    job = run_export_job(job.pk)
    assert job.state == State.FAILED and job.error.startswith("The requester may no longer export this")


def test_a_job_that_is_not_queued_is_not_run_again(world, subjects):
    job = export(world.data_manager, world.trial)
    again = run_export_job(job.pk)
    assert (again.attempts, again.file_name) == (1, job.file_name)


# --- audit and queries ---------------------------------------------------------------------------


def test_the_export_is_recorded_in_the_audit_trail(world, subjects):
    job = export(world.monitor, world.trial, site_codes=["SA"])
    events = entries_for(world.data_manager, table="exports.ExportJob", record_id=job.pk)
    assert [e.action for e in events] == ["insert"] + ["update"] * 4  # queued, its task, running, named, done
    inserted = events[0]
    assert inserted.reason == "Case report form export"
    assert (inserted.username, inserted.table) == ("monitor_a", "exports.ExportJob")
    states = [c.new for e in events for c in (e.changes or ()) if c.field == "state"]
    assert states == ["queued", "running", "done"]
    assert entries_for(world.monitor, table="exports.ExportJob") == []  # monitors read subject records only


def test_a_data_manager_of_one_site_reads_only_that_sites_exports_in_the_audit_trail(world, subjects):
    dm_b = UserFactory(username="dm_b")
    MembershipFactory(user=dm_b, trial=world.trial, site=world.site_b, role=Membership.Role.DATA_MANAGER)
    both = export(world.data_manager, world.trial)  # sites A and B: no single site
    only_b = export(world.data_manager, world.trial, site_codes=["SB"])
    only_a = export(world.data_manager, world.trial, site_codes=["SA"])
    assert both.site_id is None and both.sites == ["SA", "SB"]
    seen = {int(e.record_id) for e in entries_for(dm_b, table="exports.ExportJob")}
    assert seen == {only_b.pk}  # never the two-site export, which names site A's subjects
    assert {int(e.record_id) for e in entries_for(world.data_manager, table="exports.ExportJob")} == {
        both.pk, only_b.pk, only_a.pk}


def test_progress_updates_stay_out_of_the_audit_trail(world, subjects):
    job = export(world.data_manager, world.trial)
    changed = {c.field for e in entries_for(world.data_manager, table="exports.ExportJob", record_id=job.pk)
               for c in (e.changes or ())}
    assert "files_done" not in changed and "heartbeat_at" not in changed


def _run_queries(world: Any, subjects: int) -> list[str]:
    for _ in range(subjects):
        screened(trial=world.trial, site=world.site_a, coordinator=world.coordinator)
    job = create_export_job(by=world.data_manager, trial=world.trial, format_code="probe")
    world.data_manager.__dict__.pop("_trial_access", None)
    with CaptureQueriesContext(connection) as queries:
        assert run_export_job(job.pk).state == State.DONE
    return [q["sql"] for q in queries]


def test_running_a_job_costs_the_same_queries_whatever_the_number_of_subjects(world):
    one = _run_queries(world, 1)
    eleven = _run_queries(world, 10)
    assert len(one) == len(eleven), (one, eleven)
    assert len(one) <= 30


def test_the_cutoff_of_a_locked_trial_is_its_lock_time_so_casebooks_repeat_byte_for_byte(world, subjects):
    lock = lock_scope(trial=world.trial, level="lock", reason="Final analysis", by=world.data_manager)
    first, second = (export(world.data_manager, world.trial, "casebook") for _ in range(2))
    assert first.cutoff == second.cutoff == lock.locked_at
    assert first.manifest["cutoff"] == second.manifest["cutoff"]
    one, two = package(first), package(second)
    names = [n for n in one.namelist() if n.startswith("casebooks/")]
    assert len(names) == 3 and all(one.read(n) == two.read(n) for n in names)


def test_a_site_still_open_keeps_the_snapshot_time_as_cutoff(world, subjects):
    lock = lock_scope(trial=world.trial, site=world.site_a, level="lock", reason="Site closed", by=world.data_manager)
    job = export(world.data_manager, world.trial)
    assert job.cutoff != lock.locked_at  # site B is open: the cut-off is the snapshot's time
    assert export(world.data_manager, world.trial, site_codes=["SA"]).cutoff == lock.locked_at
