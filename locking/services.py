"""Freezing and locking of a subject, a site or a whole trial (data management; 21 CFR 11.10(f) operational
checks, ICH E6(R3) 4.2: workflow actions are audited with their reason).

``check_writable`` is called by every write service before it changes clinical data. Two levels:

- freeze: no clinical data entry or change; data queries may still be raised and answered and
  investigators may still sign;
- lock (database lock): nothing at all, neither data, nor queries, nor signatures.

A lock covers its scope and everything under it: a trial lock every subject of the trial, a site lock
every subject of that site in that trial. Locks are never edited or deleted, only released with a reason.
Tightening a freeze into a lock is one step (the freeze is released and the lock taken in one
transaction, so the data are never open in between); loosening goes through ``release_lock``.

Races: ``lock_scope`` takes the scope's subject rows, as every subject-level write service does before its
``check_writable``, so such a write either commits before the lock exists or sees it. Result ingestion
reads the locks once per batch, with its subjects (``blocking_lock_sql``), without row locks, for speed: a
batch validated just before a lock commits may still commit just after it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import TYPE_CHECKING

import pghistory
from django.apps import apps
from django.contrib.auth.models import User
from django.db import connection, transaction
from django.db.models import Case, F, Q, Value, When
from django.utils import timezone

from config.errors import PermissionRefused, RuleViolation, StateConflict
from config.reads import shared
from locking.models import Level, Lock
from trials.access import DESIGN_ROLES, access_of
from trials.models import Membership, Site, Trial, TrialSite

if TYPE_CHECKING:
    from patients.models import Subject

ACTIVITIES = frozenset({"data", "query", "signature"})
# Only a database lock refuses these; a freeze leaves them open.
LOCK_ONLY_ACTIVITIES = frozenset({"query", "signature"})


def _subjects() -> type[Subject]:
    return apps.get_model("patients", "Subject")  # no import of patients: patients imports this module


# --- describing a lock ---------------------------------------------------------------------------


def describe(*, level: str, scope: str, who: str, when: dt.datetime, reason: str) -> str:
    """The refusal message: which lock (scope, level), who took it and when, and why."""
    if level == Level.LOCK:
        state, effect = "locked (database lock)", "No data, query or signature may be changed"
    else:
        state, effect = "frozen", "Data may not be entered or changed; queries and signatures remain open"
    at = when.astimezone(dt.UTC)
    return (f"{scope[:1].upper()}{scope[1:]} is {state} since {at:%Y-%m-%d %H:%M} UTC by {who}; "
            f"reason: {reason.strip().rstrip('.')}. {effect}.")


def describe_lock(lock: Lock) -> str:
    """Reads lock.trial, site, subject and locked_by: select them with the lock."""
    return describe(level=lock.level, scope=lock.scope_label, who=lock.locked_by.get_username(),
                    when=lock.locked_at, reason=lock.reason)


def _refusal(level: str, message: str, *, field: str | None = None) -> StateConflict:
    return StateConflict("data_locked" if level == Level.LOCK else "data_frozen", message, field=field)


# --- the check every write calls -----------------------------------------------------------------


def covering_q(*, trial_id: int, site_id: int | None, subject_id: int | None) -> Q:
    """Active locks whose scope covers (trial, site, subject): the trial's, the site's and the subject's."""
    q = Q(trial_id=trial_id, released_at__isnull=True) & (Q(site__isnull=True) | Q(site_id=site_id))
    return q & (Q(subject__isnull=True) | Q(subject_id=subject_id) if subject_id is not None
                else Q(subject__isnull=True))


def blocking_lock(*, trial_id: int, site_id: int | None, subject_id: int | None = None,
                  activity: str = "data") -> Lock | None:
    """The lock that refuses ``activity`` in this scope, if any (one query; read once within
    ``shared_reads``): a database lock before a freeze, then the widest scope, then the oldest."""
    if activity not in ACTIVITIES:
        raise ValueError(f"activity is one of {sorted(ACTIVITIES)}, not {activity!r}")

    def read() -> Lock | None:  # built only when read: within ``shared_reads`` the second ask costs nothing
        qs = Lock.objects.filter(covering_q(trial_id=trial_id, site_id=site_id, subject_id=subject_id))
        if activity in LOCK_ONLY_ACTIVITIES:
            qs = qs.filter(level=Level.LOCK)
        strongest = Case(When(level=Level.LOCK, then=Value(0)), default=Value(1))
        qs = qs.select_related("trial", "site", "subject", "locked_by").order_by(
            strongest, F("subject_id").asc(nulls_first=True), F("site_id").asc(nulls_first=True), "locked_at", "pk")
        return qs.first()

    return shared(("blocking_lock", trial_id, site_id, subject_id, activity), read)


def check_writable(*, trial_id: int, site_id: int, subject_id: int | None = None, activity: str = "data") -> None:
    """Raise StateConflict (409) naming the lock when the scope is frozen or locked for ``activity``
    ("data": clinical entry and changes; "query": raising and answering data queries; "signature").

    Code ``data_locked`` (database lock) or ``data_frozen`` (freeze). One query.
    """
    lock = blocking_lock(trial_id=trial_id, site_id=site_id, subject_id=subject_id, activity=activity)
    if lock is not None:
        raise _refusal(lock.level, describe_lock(lock))


def blocking_locks(subjects: Iterable[tuple[int, int, int]], *, activity: str = "data") -> dict[int, tuple[str, str]]:
    """For a batch (result ingestion): ``(subject_id, site_id, trial_id)`` triples -> {subject_id: (code, message)}
    of the lock refusing ``activity``, for the subjects under one; the others are absent.

    One single-table query for the batch (none when it is empty); a second, for the locks' descriptions, only
    when some subject is refused. Hand-written SQL: this runs on every laboratory post, where a join of the
    lock's trial, site, subject and user cost more in planning (about 1 ms) than the query itself.
    """
    scopes = {subject_id: (site_id, trial_id) for subject_id, site_id, trial_id in subjects}
    if not scopes:
        return {}
    if activity not in ACTIVITIES:
        raise ValueError(f"activity is one of {sorted(ACTIVITIES)}, not {activity!r}")
    levels = [Level.LOCK.value] if activity in LOCK_ONLY_ACTIVITIES else Level.values
    with connection.cursor() as cursor:
        # Every active lock that may cover one of the subjects (a superset); matched exactly below.
        cursor.execute(
            f"SELECT id, trial_id, site_id, subject_id, level, locked_at FROM {Lock._meta.db_table} "
            f"WHERE released_at IS NULL AND level = ANY(%s::text[]) AND trial_id = ANY(%s::bigint[]) "
            f"AND (site_id IS NULL OR site_id = ANY(%s::bigint[])) "
            f"AND (subject_id IS NULL OR subject_id = ANY(%s::bigint[]))",
            [levels, sorted({t for _s, t in scopes.values()}), sorted({s for s, _t in scopes.values()}),
             sorted(scopes)])
        rows = cursor.fetchall()
    if not rows:
        return {}
    by_scope: dict[tuple[int, int | None, int | None], list[tuple]] = {}
    for row in rows:
        by_scope.setdefault((row[1], row[2], row[3]), []).append(row)
    chosen: dict[int, int] = {}
    for subject_id, (site_id, trial_id) in scopes.items():
        covering = [row for key in ((trial_id, None, None), (trial_id, site_id, None), (trial_id, site_id, subject_id))
                    for row in by_scope.get(key, ())]
        if covering:  # the order of blocking_lock(): a lock before a freeze, the widest scope, the oldest
            chosen[subject_id] = min(covering, key=lambda r: (r[4] != Level.LOCK, r[3] is not None,
                                                               r[2] is not None, r[5], r[0]))[0]
    return lock_refusals(chosen)


def lock_refusals(chosen: dict[int, int]) -> dict[int, tuple[str, str]]:
    """{subject_id: lock_id} of refusing locks -> {subject_id: (code, message)}: one query, none when empty."""
    if not chosen:
        return {}
    locks = {lock.pk: lock for lock in Lock.objects.filter(pk__in=set(chosen.values()))
             .select_related("trial", "site", "subject", "locked_by")}
    found: dict[int, tuple[str, str]] = {}
    for subject_id, lock_id in chosen.items():
        refusal = _refusal(locks[lock_id].level, describe_lock(locks[lock_id]))
        found[subject_id] = (refusal.code, refusal.message)
    return found


def blocking_lock_sql(subject: str, *, activity: str = "data") -> tuple[str, list[object]]:
    """The SQL form of ``blocking_locks``, for a query over subjects (``subject`` is its alias): a column giving
    the id of the lock that refuses ``activity`` for that subject, or NULL, chosen in ``blocking_lock``'s order
    (a database lock before a freeze, the widest scope, the oldest), with its parameters. Result ingestion
    reads it with the subjects themselves (one round trip less a post); ``lock_refusals`` describes the ids."""
    if activity not in ACTIVITIES:
        raise ValueError(f"activity is one of {sorted(ACTIVITIES)}, not {activity!r}")
    levels = [Level.LOCK.value] if activity in LOCK_ONLY_ACTIVITIES else list(Level.values)
    return (f"(SELECT l.id FROM {Lock._meta.db_table} l WHERE l.released_at IS NULL AND l.level = ANY(%s::text[]) "
            f"AND l.trial_id = {subject}.trial_id AND (l.site_id IS NULL OR l.site_id = {subject}.site_id) "
            f"AND (l.subject_id IS NULL OR l.subject_id = {subject}.id) ORDER BY l.level <> %s, "
            f"l.subject_id IS NOT NULL, l.site_id IS NOT NULL, l.locked_at, l.id LIMIT 1)", [levels, Level.LOCK.value])


# --- locking and releasing -----------------------------------------------------------------------


def _check_manages(*, by: User, trial: Trial, site_id: int | None) -> None:
    """Trial-wide data managers lock anything in their trial; a data manager bound to sites locks and
    releases only those sites' data (never the whole trial)."""
    access = access_of(by)
    if access.is_superuser or DESIGN_ROLES & access.trial_roles.get(trial.pk, frozenset()):
        return
    if site_id is not None and access.has_role(trial_id=trial.pk, site_id=site_id, role=Membership.Role.DATA_MANAGER):
        return
    where = f"{trial.code}" if site_id is None else f"this site of {trial.code}"
    raise PermissionRefused("not_permitted", f"Only a data manager of {where} may freeze, lock or release its data.")


def check_lock(*, trial: Trial, site: Site | None, subject: Subject | None, level: str, reason: str,
               by: User) -> None:
    """Only a data manager of the trial locks its data, with a reason, on a consistent scope that has no
    active lock yet (a freeze may be tightened into a lock)."""
    _check_manages(by=by, trial=trial, site_id=site.pk if site else (subject.site_id if subject else None))
    if level not in Level.values:
        raise RuleViolation("unknown_level", f"Level is one of {', '.join(Level.values)}.", field="level")
    if not reason.strip():
        raise RuleViolation("reason_required", "Give the reason for the freeze or lock.", field="reason")
    if subject is not None:
        if subject.trial_id != trial.pk:
            raise RuleViolation("subject_not_in_trial", f"{subject.code} is not a subject of {trial.code}.",
                                field="subject")
        if site is not None and subject.site_id != site.pk:
            raise RuleViolation("subject_not_at_site", f"{subject.code} is not a subject of site {site.code}.",
                                field="subject")
    elif site is not None and not TrialSite.objects.filter(trial=trial, site=site).exists():
        raise RuleViolation("site_not_in_trial", f"Site {site.code} does not take part in {trial.code}.",
                            field="site")
    site_id = subject.site_id if subject is not None else (site.pk if site is not None else None)
    current = _active_lock(trial_id=trial.pk, site_id=site_id, subject_id=subject.pk if subject else None)
    if current is not None and not (current.level == Level.FREEZE and level == Level.LOCK):
        raise StateConflict("already_locked", f"{describe_lock(current)} Release it before locking again.")


def _active_lock(*, trial_id: int, site_id: int | None, subject_id: int | None, for_update: bool = False
                 ) -> Lock | None:
    """The active lock of exactly this scope (not of a wider or narrower one)."""
    qs = Lock.objects.select_related("trial", "site", "subject", "locked_by")
    if for_update:
        qs = qs.select_for_update(of=("self",))
    return qs.filter(trial_id=trial_id, site=site_id, subject=subject_id, released_at__isnull=True).first()


@transaction.atomic
def lock_scope(*, trial: Trial, level: str, reason: str, by: User, site: Site | None = None,
               subject: Subject | None = None) -> Lock:
    """Freeze or lock a trial, a site of it (site) or one subject (subject; its site is recorded too).

    Serialised per trial (the trial row), and the scope's subject rows are locked too, so a clinical write
    that already passed ``check_writable`` under its subject lock commits before the lock exists, and one
    that starts later sees it.
    """
    trial = Trial.objects.select_for_update(no_key=True).get(pk=trial.pk)
    check_lock(trial=trial, site=site, subject=subject, level=level, reason=reason, by=by)
    if subject is not None:
        site = subject.site
    subjects = _subjects().objects.filter(trial=trial)
    if site is not None:
        subjects = subjects.filter(site=site)
    if subject is not None:
        subjects = subjects.filter(pk=subject.pk)
    list(subjects.select_for_update(no_key=True).order_by("pk").values_list("pk", flat=True))
    with pghistory.context(reason=reason, action=level):
        current = _active_lock(trial_id=trial.pk, site_id=site.pk if site else None,
                               subject_id=subject.pk if subject else None, for_update=True)
        if current is not None:  # a freeze tightened into a lock (check_lock refused anything else)
            _release(current, reason=f"Tightened into a database lock: {reason}", by=by)
        lock = Lock(trial=trial, site=site, subject=subject, level=level, reason=reason.strip(), locked_by=by)
        lock.full_clean()
        lock.save()
    return lock


def check_release(*, lock: Lock, reason: str, by: User) -> None:
    """Only a data manager of the trial releases a lock, once, and says why (unlocking is audited)."""
    _check_manages(by=by, trial=lock.trial, site_id=lock.site_id)
    if not reason.strip():
        raise RuleViolation("reason_required", "Give the reason for releasing the lock.", field="reason")
    if lock.released_at is not None:
        raise StateConflict("already_released", f"This lock was released on {lock.released_at:%Y-%m-%d %H:%M} "
                            "UTC.")


@transaction.atomic
def release_lock(*, lock: Lock, reason: str, by: User) -> Lock:
    """Release a freeze or lock: writes in its scope are accepted again (unless another lock covers them)."""
    lock = Lock.objects.select_for_update(of=("self",)).select_related("trial").get(pk=lock.pk)
    check_release(lock=lock, reason=reason, by=by)
    with pghistory.context(reason=reason, action="release"):
        _release(lock, reason=reason.strip(), by=by)
    return lock


def _release(lock: Lock, *, reason: str, by: User) -> None:
    lock.released_at, lock.released_by, lock.release_reason = timezone.now(), by, reason
    lock.full_clean()
    lock.save(update_fields=["released_at", "released_by", "release_reason", "updated_at"])
