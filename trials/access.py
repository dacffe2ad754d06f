"""Who may see and change what: memberships turned into query filters.

Every admin page, API view and export narrows its queryset with ``TrialAccess.filter``. A record
the user may not see is simply absent, so its existence is never confirmed (404, not 403).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import connection
from django.db.models import Q, QuerySet

from trials.models import Membership

Role = Membership.Role
READ_ROLES: frozenset[str] = frozenset(Role.values)
ENTRY_ROLES: frozenset[str] = frozenset({Role.COORDINATOR, Role.INVESTIGATOR, Role.SYSTEM})
DESIGN_ROLES: frozenset[str] = frozenset({Role.DATA_MANAGER})


@dataclass(frozen=True)
class TrialAccess:
    is_superuser: bool = False
    # (trial_id, site_id) -> roles held there; site-bound memberships.
    site_roles: dict[tuple[int, int], frozenset[str]] = field(default_factory=dict)
    # trial_id -> roles held trial-wide (data managers).
    trial_roles: dict[int, frozenset[str]] = field(default_factory=dict)

    def roles_at(self, *, trial_id: int, site_id: int) -> frozenset[str]:
        return self.site_roles.get((trial_id, site_id), frozenset()) | self.trial_roles.get(trial_id, frozenset())

    def can_read(self, *, trial_id: int, site_id: int) -> bool:
        return self.is_superuser or bool(self.roles_at(trial_id=trial_id, site_id=site_id))

    def can_enter(self, *, trial_id: int, site_id: int) -> bool:
        """Coordinators and investigators enter clinical data at their own sites."""
        return self.is_superuser or bool(self.roles_at(trial_id=trial_id, site_id=site_id) & ENTRY_ROLES)

    def has_role(self, *, trial_id: int, site_id: int, role: str) -> bool:
        return role in self.roles_at(trial_id=trial_id, site_id=site_id)

    @property
    def enters_any(self) -> bool:
        return self.is_superuser or any(r & ENTRY_ROLES for r in self.site_roles.values())

    @property
    def reads_any(self) -> bool:
        return self.is_superuser or bool(self.site_roles) or bool(self.trial_roles)

    def designs(self, trial_id: int | None = None) -> bool:
        """Data managers edit the protocol design of their trials."""
        if self.is_superuser:
            return True
        trials = {t for t, roles in self.trial_roles.items() if roles & DESIGN_ROLES}
        trials |= {t for (t, _s), roles in self.site_roles.items() if roles & DESIGN_ROLES}
        return bool(trials) if trial_id is None else trial_id in trials

    @property
    def trial_ids(self) -> set[int]:
        return {t for t, _s in self.site_roles} | set(self.trial_roles)

    @property
    def site_ids(self) -> set[int]:
        return {s for _t, s in self.site_roles}

    def site_q(self, *, trial: str = "trial", site: str = "site", roles: frozenset[str] = READ_ROLES) -> Q:
        """A filter on records that carry a trial and a site (e.g. subjects), by role."""
        if self.is_superuser:
            return Q()
        q = Q(pk__in=[])
        for (trial_id, site_id), held in self.site_roles.items():
            if held & roles:
                q |= Q(**{f"{trial}_id": trial_id, f"{site}_id": site_id})
        wide = [t for t, held in self.trial_roles.items() if held & roles]
        if wide:
            q |= Q(**{f"{trial}_id__in": wide})
        return q

    def trial_q(self, *, trial: str = "trial") -> Q:
        """A filter on protocol-design records of the user's trials."""
        if self.is_superuser:
            return Q()
        return Q(**{f"{trial}_id__in": sorted(self.trial_ids)})

    def filter(self, qs: QuerySet, *, trial: str = "trial", site: str = "site") -> QuerySet:
        return qs.filter(self.site_q(trial=trial, site=site))


def memberships_sql(user_column: str) -> str:
    """An SQL column for a query that loads a user (``user_column`` is its id): the user's active
    memberships as a JSON array of [trial, site, role]. Hand the value to ``remember_memberships`` and
    ``access_of`` needs no query of its own (the token's query loads the user and its scope at once)."""
    return (f"(SELECT coalesce(json_agg(json_build_array(m.trial_id, m.site_id, m.role)), '[]') "
            f"FROM {Membership._meta.db_table} m WHERE m.user_id = {user_column} AND m.active)")


def remember_memberships(user: AbstractBaseUser, rows: list[list[object]]) -> None:
    """Keep the memberships read by ``memberships_sql`` on this user object for ``access_of``."""
    user._membership_rows = [tuple(row) for row in rows]  # type: ignore[attr-defined]
    user.__dict__.pop("_trial_access", None)


def restrict_to_trial(user: AbstractBaseUser, trial_id: int) -> None:
    """Confine ``user`` (this user object, i.e. this request) to one trial, as a personal API token does:
    only the memberships in that trial count, and superuser rights do not apply."""
    user._token_trial_id = trial_id  # type: ignore[attr-defined]
    user.__dict__.pop("_trial_access", None)


def restricted_trial(user: AbstractBaseUser | AnonymousUser) -> int | None:
    """The one trial a personal token confines this user object to, or None."""
    return getattr(user, "_token_trial_id", None)


def access_of(user: AbstractBaseUser | AnonymousUser) -> TrialAccess:
    """Load the user's active memberships once per user object (one query)."""
    if not user.is_authenticated or not user.is_active:
        return TrialAccess()
    cached = getattr(user, "_trial_access", None)
    if cached is not None:
        return cached
    site_roles: dict[tuple[int, int], set[str]] = {}
    trial_roles: dict[int, set[str]] = {}
    only_trial = restricted_trial(user)
    rows = getattr(user, "_membership_rows", None)
    if rows is None:
        # Hand-written: this runs on every request, and the ORM's compilation cost more than the query.
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT trial_id, site_id, role FROM {Membership._meta.db_table} "
                           f"WHERE user_id = %s AND active", [user.pk])
            rows = cursor.fetchall()
    for trial_id, site_id, role in rows:
        if only_trial is not None and trial_id != only_trial:
            continue
        if site_id is None:
            trial_roles.setdefault(trial_id, set()).add(role)
        else:
            site_roles.setdefault((trial_id, site_id), set()).add(role)
    access = TrialAccess(
        is_superuser=bool(getattr(user, "is_superuser", False)) and only_trial is None,
        site_roles={k: frozenset(v) for k, v in site_roles.items()},
        trial_roles={k: frozenset(v) for k, v in trial_roles.items()},
    )
    user._trial_access = access  # type: ignore[attr-defined]  # a cache on the user object, read back above
    return access
