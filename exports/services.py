"""Exports of case report forms: who may export what, creating and retrying jobs, and running one.

Who may export (DESIGN: data managers export case report forms; DOMAIN §8.1(b) copies for inspection):
data managers of the trial export every format at their sites (all sites when trial-wide), monitors
at their sites; site coordinators and investigators export the PDF casebook of their own sites'
subjects. Service accounts export nothing. Superusers export anything.

Running a job reads everything inside ONE read-only REPEATABLE READ transaction: its snapshot is the
data cut-off (the transaction's ``now()``), so every file of the package sees the same data whatever
is written meanwhile. The package is written to a local temporary file and published to storage only
when complete (``exports.storage``); the job becomes ``done`` after that.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pghistory
from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import connection, transaction
from django.db.models import Q
from django.utils import timezone

from config.errors import DomainError, PermissionRefused, RuleViolation, StateConflict
from exports import storage
from exports.beacon import Beacon
from exports.formats import REGISTRY, ExportFormat
from exports.models import ExportJob, State
from exports.package import WrittenFile, file_sha256, write_package
from exports.scope import ExportScope
from exports.snapshot import begin_sql
from locking.models import Lock
from patients.models import Subject
from trials.access import access_of
from trials.models import Membership, Site, Trial

logger = logging.getLogger("exports")
Role = Membership.Role
EXPORT_ROLES = frozenset({Role.DATA_MANAGER, Role.MONITOR})
CASEBOOK = "casebook"
CASEBOOK_ROLES = EXPORT_ROLES | {Role.COORDINATOR, Role.INVESTIGATOR}
MANIFEST_VERSION = 1


@dataclass(frozen=True)
class ExportRequest:
    """A checked request: the sites exported and, when some were selected, the subjects."""

    sites: list[Site]
    subjects: list[Subject] | None


# --- who may export what ---------------------------------------------------------------------------


def export_roles(format_code: str) -> frozenset[str]:
    return CASEBOOK_ROLES if format_code == CASEBOOK else EXPORT_ROLES


def exportable_sites(*, user: Any, trial: Trial, format_code: str) -> list[Site]:
    """The trial's sites where the user's role allows this format, by code."""
    access, roles = access_of(user), export_roles(format_code)
    sites = Site.objects.filter(trial_sites__trial=trial).order_by("code")
    return [s for s in sites if access.is_superuser or access.roles_at(trial_id=trial.pk, site_id=s.pk) & roles]


def get_format(format_code: str) -> ExportFormat:
    fmt = REGISTRY.get(format_code)
    if fmt is None:
        known = ", ".join(sorted(REGISTRY)) or "none"
        raise RuleViolation("unknown_format", f"No export format {format_code!r} (known: {known}).", field="format")
    return fmt


def check_export(*, user: Any, trial: Trial, format_code: str, site_codes: Iterable[str] | None = None,
                 subject_codes: Iterable[str] | None = None) -> ExportRequest:
    """Rules of an export request (DESIGN "who uses it"; DESIGN: everything is scoped by site). A site or
    subject outside the user's scope is refused exactly as an unknown one is: its existence is not told."""
    access = access_of(user)
    if not access.is_superuser and trial.pk not in access.trial_ids:
        raise RuleViolation("unknown_trial", f"No trial {trial.code} among your trials.", field="trial")
    get_format(format_code)
    allowed = exportable_sites(user=user, trial=trial, format_code=format_code)
    if not allowed:
        raise PermissionRefused("export_not_allowed", f"Your role in {trial.code} does not allow the "
                                f"{format_code} export (data managers and monitors export case report forms; "
                                "coordinators and investigators export casebooks).")
    sites = _narrow_sites(trial, allowed, site_codes)
    subjects = None if subject_codes is None else _selected_subjects(trial, sites, subject_codes)
    return ExportRequest(sites=sites, subjects=subjects)


def _narrow_sites(trial: Trial, allowed: list[Site], codes: Iterable[str] | None) -> list[Site]:
    if codes is None:
        return allowed
    wanted, by_code = sorted(set(codes)), {s.code: s for s in allowed}
    if not wanted:
        raise RuleViolation("no_sites", "Name at least one site, or leave sites out for all of yours.", field="sites")
    for code in wanted:
        if code not in by_code:
            raise RuleViolation("unknown_site", f"No site {code} among the sites you may export in {trial.code}.",
                                field="sites")
    return [by_code[c] for c in wanted]


def _selected_subjects(trial: Trial, sites: list[Site], codes: Iterable[str]) -> list[Subject]:
    wanted = sorted(set(codes))
    if not wanted:
        raise RuleViolation("no_subjects", "Name at least one subject, or leave subjects out for all.",
                            field="subjects")
    found = {s.code: s for s in Subject.objects.filter(trial=trial, site__in=sites, code__in=wanted)}
    for code in wanted:
        if code not in found:
            raise RuleViolation("unknown_subject", f"No subject {code} in the sites exported.", field="subjects")
    return [found[c] for c in wanted]


# --- creating and retrying jobs ----------------------------------------------------------------------


@transaction.atomic
def create_export_job(*, by: AbstractBaseUser, trial: Trial, format_code: str, site_codes: Iterable[str] | None = None,
                      subject_codes: Iterable[str] | None = None, enqueue: bool = True) -> ExportJob:
    """Record an export request (its audit record: who, what, which sites, when) and queue it for a worker
    (``enqueue=False``: the caller runs it, e.g. ``manage.py export_trial``)."""
    request = check_export(user=by, trial=trial, format_code=format_code, site_codes=site_codes,
                           subject_codes=subject_codes)
    with pghistory.context(user=by.pk, reason="Case report form export", action="export"):
        job = ExportJob.objects.create(
            trial=trial, format=format_code, requested_by=by, sites=[s.code for s in request.sites],  # type: ignore[misc]
            site=request.sites[0] if len(request.sites) == 1 else None,
            subjects=None if request.subjects is None else [s.code for s in request.subjects],
        )
        if enqueue:
            _enqueue(job)
    return job


def _enqueue(job: ExportJob) -> None:
    """Defer the job's task in the caller's transaction (procrastinate's Django connector shares it): the
    job and its task are committed together or not at all."""
    from exports.tasks import run_export

    job.task_id = run_export.defer(job_id=job.pk)
    ExportJob.objects.filter(pk=job.pk).update(task_id=job.task_id)


def is_stalled(job: ExportJob, *, now: dt.datetime | None = None) -> bool:
    """A running job whose heartbeat stopped: its worker died (or hangs)."""
    if job.state != State.RUNNING:
        return False
    last = job.heartbeat_at or job.started_at or job.created_at
    limit = dt.timedelta(seconds=settings.EXPORTS_STALLED_AFTER_SECONDS)
    return (now or timezone.now()) - last > limit


def check_retry(job: ExportJob) -> None:
    """Only a failed job, or a stalled one, runs again."""
    if job.state != State.FAILED and not is_stalled(job):
        raise StateConflict("export_not_failed", f"Export #{job.pk} is {job.get_state_display().lower()}; only a "
                            "failed or stalled export can be retried.")


@transaction.atomic
def retry_export_job(*, job: ExportJob, by: AbstractBaseUser, enqueue: bool = True) -> ExportJob:
    """Run a failed or stalled job again: a new attempt of the same job (same request, same requester's
    scope, a new cut-off). What an earlier attempt left in storage is removed first."""
    job = ExportJob.objects.select_for_update(of=("self",)).get(pk=job.pk)
    check_retry(job)
    storage.remove(job.file_name)
    with pghistory.context(user=by.pk, reason="Retry of a failed export", action="export"):
        job.state, job.error, job.files_done, job.files_total = State.QUEUED, "", 0, 0
        job.file_name, job.sha256, job.size, job.cutoff, job.finished_at = "", "", None, None, None
        job.manifest = {}
        job.save()
        if enqueue:
            _enqueue(job)
    return job


def fail_stalled_jobs() -> int:
    """Mark stalled jobs failed, with the reason, so that they show as such and can be retried."""
    failed = 0
    for job in ExportJob.objects.filter(state=State.RUNNING).only("pk", "state", "heartbeat_at", "started_at",
                                                                   "created_at", "attempts"):
        if is_stalled(job):
            failed += _fail(job.pk, job.attempts, "The worker stopped while writing the export (no heartbeat "
                            f"since {(job.heartbeat_at or job.started_at):%Y-%m-%d %H:%M:%S} UTC).")
    return failed


# --- running a job -------------------------------------------------------------------------------------


def run_export_job(job_id: int, *, on_progress: Callable[[int, int], None] | None = None) -> ExportJob:
    """Run one attempt of a queued job: claim it, write and publish its package, mark it done (or failed,
    with the reason). Returns the job as it ends. ``on_progress(files_done, files_total)`` follows it."""
    attempt = _claim(job_id)
    if attempt is None:  # not queued (already run, or claimed by another worker)
        return ExportJob.objects.get(pk=job_id)
    storage.discard_partials(job_id)
    partial = storage.partial_path(job_id)
    try:
        with Beacon(job_id, attempt, on_progress) as beacon:
            result = _write(job_id, partial, beacon)
        _publish(job_id, attempt, partial, result)
    except Exception as exc:
        partial.unlink(missing_ok=True)
        reason = exc.message if isinstance(exc, DomainError) else f"{type(exc).__name__}: {exc}"
        if not isinstance(exc, DomainError):
            logger.exception("Export job %s failed", job_id)
        _fail(job_id, attempt, reason)
    return ExportJob.objects.get(pk=job_id)


@transaction.atomic
def _claim(job_id: int) -> int | None:
    job = ExportJob.objects.select_for_update(of=("self",)).get(pk=job_id)
    if job.state != State.QUEUED:
        return None
    job.state, job.attempts, job.started_at = State.RUNNING, job.attempts + 1, timezone.now()
    job.heartbeat_at, job.files_done, job.files_total = job.started_at, 0, 0
    job.save(update_fields=["state", "attempts", "started_at", "heartbeat_at", "files_done", "files_total",
                            "updated_at"])
    return job.attempts


@dataclass(frozen=True)
class _Written:
    cutoff: dt.datetime
    manifest: dict[str, Any]
    total: int


def _write(job_id: int, partial: Path, beacon: Beacon) -> _Written:
    """Read the snapshot and write the package (one read-only REPEATABLE READ transaction)."""
    nested = connection.in_atomic_block
    with transaction.atomic():
        if not nested:  # inside a caller's transaction (a test's), that one's snapshot is used
            with connection.cursor() as cursor:
                for statement in begin_sql():
                    cursor.execute(statement)
        with connection.cursor() as cursor:
            # Its own transaction's snapshot is shared with a second connection (exports.snapshot); a caller's,
            # whose writes no other connection sees, is not.
            shared = not nested and settings.EXPORTS_SECOND_CONNECTION
            cursor.execute("SELECT now(), pg_export_snapshot()" if shared else "SELECT now(), NULL")
            snapshot_at: dt.datetime
            snapshot_at, snapshot = cursor.fetchone()
        job = ExportJob.objects.select_related("trial", "requested_by").get(pk=job_id)
        scope = build_scope(job, cutoff=snapshot_at)
        scope = dataclasses.replace(scope, cutoff=locked_since(scope) or snapshot_at, snapshot=snapshot)
        cutoff = scope.cutoff
        fmt = get_format(job.format)
        files = fmt.files(scope)
        beacon.progress(0, len(files))
        locks = lock_state(scope)

        def manifest(written: list[WrittenFile]) -> dict[str, Any]:
            return build_manifest(job, fmt, scope, locks, written)

        content = write_package(partial, files, manifest=manifest,
                                on_file=lambda n: beacon.progress(n, len(files)))
        return _Written(cutoff=cutoff, manifest=content, total=len(files))


def build_scope(job: ExportJob, *, cutoff: dt.datetime) -> ExportScope:
    """The job's scope, checked again with the requester's access as it is now."""
    try:
        request = check_export(user=job.requested_by, trial=job.trial, format_code=job.format,
                               site_codes=job.sites, subject_codes=job.subjects)
    except DomainError as err:
        raise StateConflict("export_scope_changed", f"The requester may no longer export this: {err.message}") from err
    subject_ids = None if request.subjects is None else tuple(s.pk for s in request.subjects)
    return ExportScope(trial=job.trial, site_ids=tuple(s.pk for s in request.sites), user=job.requested_by,
                       cutoff=cutoff, subject_ids=subject_ids)


def locked_since(scope: ExportScope) -> dt.datetime | None:
    """When every site in scope is under a database lock (of the trial or of the site), the moment the last of
    them was locked: nothing in scope can have changed since, so that moment is the data cut-off, and exporting
    a locked trial twice gives identical data files (casebooks print the cut-off). None otherwise: the
    cut-off is then the snapshot's own time."""
    locks = Lock.objects.filter(trial=scope.trial, released_at__isnull=True, subject__isnull=True,
                                level=Lock.Level.LOCK).filter(Q(site__isnull=True) | Q(site_id__in=scope.site_ids))
    since = {lock.site_id: lock.locked_at for lock in locks}
    trial_lock = since.get(None)
    covered = []
    for site_id in scope.site_ids:
        times = [t for t in (trial_lock, since.get(site_id)) if t is not None]
        if not times:
            return None
        covered.append(min(times))
    return max(covered) if covered else None


def lock_state(scope: ExportScope) -> dict[str, Any]:
    """Active freezes and locks of the trial and of each site in scope, at the cut-off (one query)."""
    locks = (Lock.objects.filter(trial=scope.trial, released_at__isnull=True, subject__isnull=True)
             .filter(Q(site__isnull=True) | Q(site_id__in=scope.site_ids)).select_related("site", "locked_by"))

    def described(lock: Lock | None) -> dict[str, Any] | None:
        if lock is None:
            return None
        return {"level": lock.level, "reason": lock.reason, "locked_by": lock.locked_by.get_username(),
                "locked_at": _iso(lock.locked_at)}

    by_site = {lock.site_id: lock for lock in locks}
    sites = scope.sites()
    return {"trial": described(by_site.get(None)),
            "sites": {site.code: described(by_site.get(site.pk)) for site in sites}}


def build_manifest(job: ExportJob, fmt: ExportFormat, scope: ExportScope, locks: dict[str, Any],
                   written: list[WrittenFile]) -> dict[str, Any]:
    user = job.requested_by
    return {
        "manifest_version": MANIFEST_VERSION,
        "job": job.pk,
        "attempt": job.attempts,
        "format": {"code": fmt.code, "label": fmt.label},
        "cutoff": _iso(scope.cutoff),
        "exported_by": {"username": user.get_username(), "name": user.get_full_name()},
        "scope": {"trial": scope.trial.code, "sites": [s.code for s in scope.sites()],
                  "subjects": list(scope.subjects().values_list("code", flat=True)),
                  "subjects_selected": scope.subject_ids is not None},
        "locks": locks,
        "files": [w.as_manifest() for w in written],
    }


def _iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def package_name(job: ExportJob, cutoff: dt.datetime) -> str:
    return (f"{job.trial.code}/{job.trial.code}-{job.format}-{cutoff.astimezone(dt.UTC):%Y%m%dT%H%M%SZ}"
            f"-job{job.pk}.zip")


def _publish(job_id: int, attempt: int, partial: Path, result: _Written) -> None:
    """Publish the package, then mark the job done. The job names its file before the file appears, so a
    worker killed between the two leaves a name a retry removes; a superseded attempt publishes nothing."""
    sha256, size = file_sha256(partial)
    job = ExportJob.objects.select_related("trial").get(pk=job_id)
    name = package_name(job, result.cutoff)
    with transaction.atomic():
        if not _still_current(job_id, attempt, file_name=name):
            partial.unlink(missing_ok=True)
            return
    storage.publish(partial, name)
    with transaction.atomic():
        done = ExportJob.objects.filter(pk=job_id, attempts=attempt, state=State.RUNNING).update(
            state=State.DONE, finished_at=timezone.now(), cutoff=result.cutoff, size=size, sha256=sha256,
            manifest=result.manifest, files_done=result.total, files_total=result.total, updated_at=timezone.now())
    if not done:
        storage.remove(name)


def _still_current(job_id: int, attempt: int, *, file_name: str) -> bool:
    return bool(ExportJob.objects.filter(pk=job_id, attempts=attempt, state=State.RUNNING)
                .update(file_name=file_name, updated_at=timezone.now()))


def _fail(job_id: int, attempt: int, reason: str) -> int:
    with transaction.atomic():
        return ExportJob.objects.filter(pk=job_id, attempts=attempt, state=State.RUNNING).update(
            state=State.FAILED, error=reason[:2000], finished_at=timezone.now(), updated_at=timezone.now())
