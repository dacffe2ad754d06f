"""Reads of the audit trail: who changed which record, when, why, from which request, old and new values.

The rows are pghistory's event tables (one per tracked table, written by PostgreSQL triggers). They
are read here with one SQL statement per page instead of through ``pghistory.models.Events``: that
aggregate computes every event's data and diff across every table before any filter applies, while
a page here filters each table on its own columns (dates, subject, site, record), joins the users,
sites and subjects once, and reads the stored values (and the previous values of an update) only for
the rows of the page. A page costs two queries (count and page); an export one server-side cursor.

Who may read what (``audit_scope``):

* superusers: everything;
* data managers of a trial: every subject record of the trial (all sites), its protocol design and
  its sites' own rows;
* a data manager bound to a site: that site's subject records, the trial-level design (trial, cohorts,
  products, ...), and of the design rows that belong to a site (its trial site with the screening
  counter, memberships there, the site itself) only their own site's: nothing of another site;
* monitors: the subject records of their (trial, site) pairs, and nothing of the design;
* everyone else (coordinators, investigators, service accounts): nothing; the views answer 403.

A subject record is placed by its subject's current trial and site (see ``audit.tables``); a design
record by its trial (and its site, where it has one); a site's own row by the site, read by the data
managers of that site (or of a trial it takes part in); other records of no trial (the analyte
catalogue, audit exports) only appear for superusers.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.apps import apps
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import ValidationError
from django.db import connection
from django.db.models import AutoField, BigAutoField, IntegerField, Model, Q, QuerySet
from django.utils.text import capfirst
from pghistory.models import Context

from audit.tables import BOOKKEEPING, GLOBAL, REDACTED, SUBJECT, TRIAL, AuditedTable, audited_tables
from config import display
from patients.models import Subject
from trials.access import DESIGN_ROLES, access_of, restricted_trial
from trials.models import Membership, ServiceAccount, Site, TrialSite

AUDIT_ROLES = frozenset({Membership.Role.DATA_MANAGER, Membership.Role.MONITOR})
EXPORT_CHUNK_SIZE = 2000
# Keys of the pghistory context (config.audit, the request middleware and the services write them);
# the first present wins, so a renamed key keeps working while both spellings exist.
CONTEXT_KEYS = {
    "url": ("url",),
    "method": ("method", "http_method", "request_method"),
    "request_id": ("request_id", "request"),
    "service_account": ("service_account", "service_account_name"),
    "source": ("source",),
    "command": ("command",),
    "reason": ("reason",),
}


@dataclass(frozen=True)
class AuditScope:
    """What part of the audit trail a user reads; built by ``audit_scope``."""

    everything: bool = False
    site_pairs: frozenset[tuple[int, int]] = frozenset()  # (trial, site): subject records there
    wide_trials: frozenset[int] = frozenset()  # trials whose subject records are read at every site
    design_trials: frozenset[int] = frozenset()  # trials whose design records are read at every site
    design_pairs: frozenset[tuple[int, int]] = frozenset()  # (trial, site): a site-bound reader of the design

    @property
    def bound_design_trials(self) -> frozenset[int]:
        """Trials whose trial-level design is read, but whose site rows only at ``design_pairs``."""
        return frozenset(t for t, _s in self.design_pairs) - self.design_trials

    def reads(self, kind: str) -> bool:
        if self.everything:
            return True
        if kind == SUBJECT:
            return bool(self.site_pairs or self.wide_trials)
        return kind == TRIAL and bool(self.design_trials or self.design_pairs)

    def reads_table(self, table: AuditedTable) -> bool:
        """Like ``reads``, and a site's own rows (trials.Site) for the data managers of the site."""
        if table.kind == GLOBAL and table.site_sql != "NULL" and not self.everything:
            return bool(self.design_trials or self.design_pairs)
        return self.reads(table.kind)

    def subject_q(self, *, trial: str = "trial_id", site: str = "site_id") -> Q:
        if self.everything:
            return Q()
        q = Q(pk__in=[])
        for trial_id, site_id in sorted(self.site_pairs):
            q |= Q(**{trial: trial_id, site: site_id})
        if self.wide_trials:
            q |= Q(**{f"{trial}__in": sorted(self.wide_trials)})
        return q


def audit_scope(user: AbstractBaseUser | AnonymousUser) -> AuditScope | None:
    """The user's audit scope, or None if they may not read the audit trail at all."""
    if (user.is_authenticated and user.is_active and getattr(user, "is_superuser", False)
            and restricted_trial(user) is None):  # a personal token confines even a superuser to one trial
        return AuditScope(everything=True)  # as access_of() would say, without loading memberships
    access = access_of(user)
    design_wide = frozenset(t for t, roles in access.trial_roles.items() if roles & DESIGN_ROLES)
    scope = AuditScope(
        site_pairs=frozenset(k for k, roles in access.site_roles.items() if roles & AUDIT_ROLES),
        wide_trials=frozenset(t for t, roles in access.trial_roles.items() if roles & AUDIT_ROLES),
        design_trials=design_wide,
        design_pairs=frozenset(k for k, roles in access.site_roles.items()
                               if roles & DESIGN_ROLES and k[0] not in design_wide),
    )
    readable = scope.site_pairs or scope.wide_trials or scope.design_trials or scope.design_pairs
    return scope if readable else None


@dataclass(frozen=True)
class AuditFilters:
    date_from: dt.date | None = None  # UTC dates, both inclusive
    date_to: dt.date | None = None
    site_id: int | None = None
    user_id: int | None = None
    table: str | None = None  # the tracked model's label, e.g. "patients.Subject"
    subject_id: int | None = None  # the subject row and every record placed under it
    record_id: Any = None  # with ``table``: one record's history


@dataclass(frozen=True)
class FieldChange:
    field: str  # the column, e.g. "marrow_blasts_pct" or "subject_id"
    label: str  # its verbose name
    old: str | None
    new: str | None


@dataclass(frozen=True)
class AuditEntry:
    slug: str  # unique across tables: "<event model>:<event id>"
    event_id: int
    at: dt.datetime  # UTC, the database server's clock at the change's transaction
    action: str  # insert, update or delete
    table: str
    table_name: str
    record_id: str
    trial_id: int | None
    site_id: int | None
    site_code: str | None
    subject_id: int | None
    subject_code: str | None
    user_id: int | None
    username: str | None
    user_full_name: str | None
    service_account: str | None
    reason: str | None
    url: str | None
    method: str | None
    request_id: str | None
    source: str | None
    changes: tuple[FieldChange, ...] = field(default=())
    site_time_zone: str | None = None  # the zone of the record's site, for the admin's "when"
    record_name: str | None = None  # "Subject BJ01-0001"; set by ``name_entries`` for the admin

    @property
    def at_utc(self) -> str:
        return self.at.strftime("%Y-%m-%d %H:%M:%S UTC")

    @property
    def at_site(self) -> str:
        """When, on the clock of the record's site (UTC for records of no site)."""
        try:
            zone = ZoneInfo(self.site_time_zone) if self.site_time_zone else None
        except (ZoneInfoNotFoundError, ValueError):
            zone = None
        return display.date_time(self.at, zone)

    @property
    def who_name(self) -> str:
        """The person by their name (their username if no name was given)."""
        if self.username is None:
            return "system (no user recorded)"
        return self.user_full_name or self.username

    @property
    def who(self) -> str:
        if self.username is None:
            return "system (no user recorded)"
        name = f" ({self.user_full_name})" if self.user_full_name else ""
        return f"{self.username}{name}"


# --- SQL ------------------------------------------------------------------------------------------

def _q(name: str) -> str:
    return connection.ops.quote_name(name)


def _in(expr: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
    return f"({expr}) IN ({', '.join(['%s'] * len(values))})", list(values)


def _scope_sql(table: AuditedTable, scope: AuditScope) -> tuple[str, list[Any]]:
    """The WHERE part limiting ``table`` to the scope ('' for everything)."""
    if scope.everything:
        return "", []
    if table.kind == TRIAL:
        return _design_sql(table, scope)
    if table.kind == GLOBAL:
        return _own_site_sql(table, scope)
    parts, params = [], []
    if scope.site_pairs:
        sql, values = _pairs_sql(table.trial_sql, table.site_sql, scope.site_pairs)
        parts.append(sql)
        params += values
    if scope.wide_trials:
        sql, values = _in(table.trial_sql, sorted(scope.wide_trials))
        parts.append(sql)
        params += values
    return f"({' OR '.join(parts)})", params


def _pairs_sql(trial_sql: str, site_sql: str, pairs: frozenset[tuple[int, int]]) -> tuple[str, list[Any]]:
    values = sorted(pairs)
    sql = f"(({trial_sql}), ({site_sql})) IN ({', '.join(['(%s, %s)'] * len(values))})"
    return sql, [v for pair in values for v in pair]


def _design_sql(table: AuditedTable, scope: AuditScope) -> tuple[str, list[Any]]:
    """Design rows of the scope's trials; of a row that belongs to a site (a trial site, a membership),
    a site-bound data manager reads only their own site's."""
    bound = scope.bound_design_trials
    if table.site_sql == "NULL" or not bound:
        return _in(table.trial_sql, sorted(scope.design_trials | bound))
    parts, params = [], []
    if scope.design_trials:
        sql, values = _in(table.trial_sql, sorted(scope.design_trials))
        parts.append(sql)
        params += values
    in_trial, trial_values = _in(table.trial_sql, sorted(bound))
    at_site, site_values = _pairs_sql(table.trial_sql, table.site_sql, scope.design_pairs)
    parts.append(f"({in_trial} AND (({table.site_sql}) IS NULL OR {at_site}))")
    params += trial_values + site_values
    return f"({' OR '.join(parts)})", params


def _own_site_sql(table: AuditedTable, scope: AuditScope) -> tuple[str, list[Any]]:
    """A site's own row (trials.Site): the sites of the scope's site-bound design pairs, and every site
    taking part in a trial whose design the scope reads at every site."""
    parts, params = [], []
    if scope.design_pairs:
        sql, values = _in(table.site_sql, sorted({s for _t, s in scope.design_pairs}))
        parts.append(sql)
        params += values
    if scope.design_trials:
        trials = sorted(scope.design_trials)
        parts.append(f"({table.site_sql}) IN (SELECT ts.site_id FROM {_q(TrialSite._meta.db_table)} ts "
                     f"WHERE ts.trial_id IN ({', '.join(['%s'] * len(trials))}))")
        params += trials
    return (f"({' OR '.join(parts)})", params) if parts else ("FALSE", [])


def _tables(scope: AuditScope, filters: AuditFilters) -> list[AuditedTable]:
    tables = [t for t in audited_tables().values() if scope.reads_table(t)]
    if filters.table is not None:
        tables = [t for t in tables if t.label == filters.table]
    if filters.subject_id is not None:
        tables = [t for t in tables if t.kind == SUBJECT]
    return tables


def _branch(table: AuditedTable, scope: AuditScope, filters: AuditFilters) -> tuple[str, list[Any]]:
    """One table's events, filtered on its own columns (so PostgreSQL can use their indexes)."""
    where, params = [], []
    scope_sql, scope_params = _scope_sql(table, scope)
    if scope_sql:
        where.append(scope_sql)
        params += scope_params
    if filters.date_from is not None:
        where.append("e.pgh_created_at >= %s")
        params.append(dt.datetime.combine(filters.date_from, dt.time.min, tzinfo=dt.UTC))
    if filters.date_to is not None:
        where.append("e.pgh_created_at < %s")  # up to the end of that UTC day (dt.date.max: no upper bound)
        end = dt.datetime.max.replace(tzinfo=dt.UTC) if filters.date_to == dt.date.max else dt.datetime.combine(
            filters.date_to + dt.timedelta(days=1), dt.time.min, tzinfo=dt.UTC)
        params.append(end)
    if filters.site_id is not None:
        where.append(f"({table.site_sql}) = %s")
        params.append(filters.site_id)
    if filters.subject_id is not None:
        where.append(f"({table.subject_sql}) = %s")
        params.append(filters.subject_id)
    if filters.record_id is not None:
        where.append("e.pgh_obj_id = %s")
        params.append(filters.record_id)
    context = "e.pgh_context_id" if table.has_context else "NULL::uuid"
    sql = (f"SELECT '{table.label}'::text AS tbl, e.pgh_id, e.pgh_created_at, e.pgh_label, "
           f"e.pgh_obj_id::text AS obj_id, {context} AS pgh_context_id, ({table.trial_sql})::bigint AS trial_id, "
           f"({table.site_sql})::bigint AS site_id, ({table.subject_sql})::bigint AS subject_id "
           f"FROM {_q(table.event_table)} e {table.joins}")
    return sql + (f" WHERE {' AND '.join(where)}" if where else ""), params


def _events_sql(tables: list[AuditedTable], scope: AuditScope, filters: AuditFilters) -> tuple[str, list[Any]]:
    """Every visible event with its context metadata, filtered by user."""
    branches = [_branch(t, scope, filters) for t in tables]
    sql = (f"SELECT ev.*, c.metadata::text AS ctx, c.metadata->>'user' AS ctx_user "
           f"FROM ({' UNION ALL '.join(s for s, _ in branches)}) ev "
           f"LEFT JOIN {_q(Context._meta.db_table)} c ON c.id = ev.pgh_context_id")
    params = [p for _, ps in branches for p in ps]
    if filters.user_id is not None:
        sql += " WHERE c.metadata->>'user' = %s"
        params.append(str(filters.user_id))
    return sql, params


def _same_record(table: AuditedTable) -> str:
    """Also match the event's record by its id where that id is an integer: a trail view's pgh_id is computed
    (``assays_resulttrail``: minus the result's id), so PostgreSQL cannot push ``pgh_id = ...`` into the view and
    scanned every result for each event; ``pgh_obj_id`` reaches the indexed columns of both of its branches."""
    pk = apps.get_model(table.label)._meta.pk
    return " AND x.pgh_obj_id = ev.obj_id::bigint" if isinstance(pk, AutoField | BigAutoField | IntegerField) else ""


def _data_sql(tables: list[AuditedTable]) -> str:
    """A LATERAL subquery: the stored row of the event ``ev``, and the row of the record's previous event."""
    parts = [
        f"SELECT row_to_json(x)::text AS data, (SELECT row_to_json(p)::text FROM {_q(t.event_table)} p "
        f"WHERE p.pgh_obj_id = x.pgh_obj_id AND p.pgh_id < x.pgh_id ORDER BY p.pgh_id DESC LIMIT 1) AS prev "
        f"FROM {_q(t.event_table)} x WHERE ev.tbl = '{t.label}' AND x.pgh_id = ev.pgh_id{_same_record(t)}"
        for t in tables
    ]
    return " UNION ALL ".join(parts)


def _entries_sql(tables: list[AuditedTable], scope: AuditScope, filters: AuditFilters, *, newest_first: bool,
                 limit: int | None = None, offset: int = 0) -> tuple[str, list[Any]]:
    events, params = _events_sql(tables, scope, filters)
    way = "DESC" if newest_first else "ASC"
    order = f"ORDER BY ev.pgh_created_at {way}, ev.tbl {way}, ev.pgh_id {way}"
    page = ""
    if limit is not None:
        page = " LIMIT %s OFFSET %s"
        params = [*params, limit, offset]
    users, accounts = get_user_model()._meta.db_table, ServiceAccount._meta.db_table
    sql = (
        "SELECT ev.tbl, ev.pgh_id, ev.pgh_created_at, ev.pgh_label, ev.obj_id, ev.trial_id, ev.site_id, "
        "ev.subject_id, ev.ctx, u.id, u.username, u.first_name, u.last_name, sa.name, st.code, sj.code, "
        f"d.data, d.prev, st.time_zone FROM ({events} {order}{page}) ev "
        f"LEFT JOIN {_q(users)} u ON u.id = CASE WHEN ev.ctx_user ~ '^[0-9]{{1,18}}$' THEN ev.ctx_user::bigint END "
        f"LEFT JOIN {_q(accounts)} sa ON sa.user_id = u.id "
        f"LEFT JOIN {_q(Site._meta.db_table)} st ON st.id = ev.site_id "
        f"LEFT JOIN {_q(Subject._meta.db_table)} sj ON sj.id = ev.subject_id "
        f"LEFT JOIN LATERAL ({_data_sql(tables)}) d ON TRUE {order}"
    )
    return sql, params


# --- rows to entries --------------------------------------------------------------------------------

def _load(text: str | None) -> dict[str, Any] | None:
    return None if text is None else json.loads(text, parse_float=Decimal)


def show_value(value: Any) -> str | None:
    """A stored value as text, exactly as recorded (decimals keep their scale)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | Decimal):
        return str(value)
    return json.dumps(value, default=str, ensure_ascii=False)


def _shown(column: str, value: Any) -> str | None:
    return "(hidden)" if column in REDACTED and value not in (None, "") else show_value(value)


def field_changes(table: AuditedTable, action: str, data: dict[str, Any] | None,
                  prev: dict[str, Any] | None) -> tuple[FieldChange, ...]:
    """Old and new values per field: the changed fields of an update; the recorded (non-empty)
    values of an insert (as new) or of a delete (as old)."""
    data = data or {}
    columns = [(c, label) for c, label in table.fields if c not in BOOKKEEPING]
    if action == "update" and prev is not None:
        return tuple(FieldChange(c, label, _shown(c, prev.get(c)), _shown(c, data.get(c)))
                     for c, label in columns if data.get(c) != prev.get(c))
    recorded = [(c, label) for c, label in columns if data.get(c) not in (None, "", [])]
    if action == "delete":
        return tuple(FieldChange(c, label, _shown(c, data.get(c)), None) for c, label in recorded)
    return tuple(FieldChange(c, label, None, _shown(c, data.get(c))) for c, label in recorded)


def _context_value(metadata: dict[str, Any], name: str) -> str | None:
    for key in CONTEXT_KEYS[name]:
        value = metadata.get(key)
        if value not in (None, ""):
            return str(value)
    return None


def _source(metadata: dict[str, Any]) -> str | None:
    """admin, api, command (with the command's name), as the request middleware or command recorded it."""
    source, command = _context_value(metadata, "source"), _context_value(metadata, "command")
    return f"{source} {command}" if source == "command" and command else source


def _entry(row: Sequence[Any]) -> AuditEntry:
    (label, pgh_id, created_at, action, obj_id, trial_id, site_id, subject_id, ctx, user_id, username, first_name,
     last_name, account, site_code, subject_code, data, prev, site_time_zone) = row
    table = audited_tables()[label]
    metadata = _load(ctx) or {}
    if user_id is None and metadata.get("user") not in (None, ""):
        username = f"user #{metadata['user']}"  # the account no longer exists; keep the recorded id
    full_name = " ".join(part for part in (first_name, last_name) if part) or None
    return AuditEntry(
        slug=f"{table.event_label}:{pgh_id}", event_id=pgh_id, at=created_at.astimezone(dt.UTC), action=action,
        table=table.label, table_name=table.name, record_id=obj_id, trial_id=trial_id, site_id=site_id,
        site_code=site_code, subject_id=subject_id, subject_code=subject_code, user_id=user_id, username=username,
        user_full_name=full_name, service_account=_context_value(metadata, "service_account") or account,
        reason=_context_value(metadata, "reason"), url=_context_value(metadata, "url"),
        method=_context_value(metadata, "method"), request_id=_context_value(metadata, "request_id"),
        source=_source(metadata),
        changes=field_changes(table, action, _load(data), _load(prev)), site_time_zone=site_time_zone,
    )


# --- the selectors ----------------------------------------------------------------------------------

class AuditEntryList:
    """The audit entries of a scope and filters, counted and sliced lazily (Django's Paginator and DRF's
    pagination need only ``count()`` and slicing). A count is one query, a slice one query."""

    def __init__(self, *, scope: AuditScope, filters: AuditFilters, newest_first: bool = False) -> None:
        self.scope, self.filters, self.newest_first = scope, filters, newest_first
        self.tables = _tables(scope, filters)
        self._count: int | None = None

    def count(self) -> int:
        if self._count is None:
            if not self.tables:
                self._count = 0
            else:
                events, params = _events_sql(self.tables, self.scope, self.filters)
                with connection.cursor() as cursor:
                    cursor.execute(f"SELECT count(*) FROM ({events}) counted", params)
                    self._count = cursor.fetchone()[0]
        return self._count

    def __len__(self) -> int:
        return self.count()

    def __getitem__(self, key: slice | int) -> Any:
        if isinstance(key, int):
            return self[key:key + 1][0]
        if key.step is not None or (key.start or 0) < 0 or key.stop is None or key.stop < 0:
            raise ValueError("Audit entries are sliced with [start:stop].")
        start = key.start or 0
        if not self.tables or key.stop <= start:
            return []
        sql, params = _entries_sql(self.tables, self.scope, self.filters, newest_first=self.newest_first,
                                   limit=key.stop - start, offset=start)
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            return [_entry(row) for row in cursor.fetchall()]


def list_audit_entries(*, scope: AuditScope, filters: AuditFilters | None = None,
                       newest_first: bool = False) -> AuditEntryList:
    return AuditEntryList(scope=scope, filters=filters or AuditFilters(), newest_first=newest_first)


def iter_audit_entries(*, scope: AuditScope, filters: AuditFilters | None = None,
                       chunk_size: int = EXPORT_CHUNK_SIZE) -> Iterator[AuditEntry]:
    """Every entry, oldest first, through one server-side cursor read ``chunk_size`` rows at a time
    (what ``QuerySet.iterator(chunk_size=...)`` does): one query, bounded memory."""
    filters = filters or AuditFilters()
    tables = _tables(scope, filters)
    if not tables:
        return
    sql, params = _entries_sql(tables, scope, filters, newest_first=False)
    server_side = not connection.settings_dict.get("DISABLE_SERVER_SIDE_CURSORS")
    with connection.chunked_cursor() if server_side else connection.cursor() as cursor:
        cursor.execute(sql, params)
        while rows := cursor.fetchmany(chunk_size):
            yield from (_entry(row) for row in rows)


def auditable_tables(scope: AuditScope) -> list[AuditedTable]:
    return [t for t in audited_tables().values() if scope.reads_table(t)]


def auditable_sites(scope: AuditScope) -> QuerySet[Site]:
    """The sites whose subject records the scope reads."""
    if scope.everything:
        return Site.objects.order_by("code")
    q = Q(pk__in=sorted({site for _trial, site in scope.site_pairs}))
    if scope.wide_trials:
        q |= Q(trial_sites__trial_id__in=sorted(scope.wide_trials))
    return Site.objects.filter(q).distinct().order_by("code")


def auditable_users(scope: AuditScope) -> QuerySet[Any]:
    """People offered by the user filter: members of the scope's trials at its sites (never another
    site's staff), trial-wide data managers of those trials, and the scope's service accounts."""
    users = get_user_model().objects.order_by("username")
    if scope.everything:
        return users
    q = Q(pk__in=[])
    for trial_id, site_id in sorted(scope.site_pairs):
        q |= Q(memberships__trial_id=trial_id, memberships__site_id=site_id)
    trials = sorted({t for t, _s in scope.site_pairs} | scope.wide_trials | scope.design_trials)
    q |= Q(memberships__trial_id__in=trials, memberships__site__isnull=True)
    if scope.wide_trials:
        q |= Q(memberships__trial_id__in=sorted(scope.wide_trials))
    return users.filter(q).distinct()


def get_audit_subject(*, scope: AuditScope, pk: int) -> Subject | None:
    """The subject, if the scope reads its records (else None: the caller answers 404)."""
    if not scope.reads(SUBJECT):
        return None
    return Subject.objects.filter(scope.subject_q()).select_related("trial", "site").filter(pk=pk).first()


# --- names for people: the admin's audit pages ------------------------------------------------------

# The column that names a record of a model, first found wins; a model with none is "<verbose name> <id>".
NAME_COLUMNS = ("code", "lot_number", "collection_id", "accession_number", "term", "name", "title")


@dataclass(frozen=True)
class _Reference:
    model: type[Model]
    sql: str | None  # naming expression over the model's table ``t``; None: named without a query


@functools.cache
def _reference(model: type[Model]) -> _Reference:
    user_model = get_user_model()
    expr: str | None
    if model is user_model:
        expr = "COALESCE(NULLIF(TRIM(CONCAT_WS(' ', t.first_name, t.last_name)), ''), t.username)"
    elif model is ContentType:
        expr = "t.app_label || '.' || t.model"
    else:
        names = {f.attname for f in model._meta.concrete_fields}
        column = next((c for c in NAME_COLUMNS if c in names), None)
        named: Any = None if column is None else model._meta.get_field(column)
        expr = None if named is None else f"t.{_q(named.column)}::text"
    integer_pk = isinstance(model._meta.pk, AutoField | BigAutoField | IntegerField)
    return _Reference(model=model, sql=expr if integer_pk else None)


@functools.cache
def _columns_of(label: str) -> dict[str, Any]:
    """The tracked model's concrete fields by column: foreign keys and fields with choices are named."""
    model = apps.get_model(label)
    return {f.column: f for f in model._meta.concrete_fields if f.is_relation or f.choices}


def _wanted(entries: Sequence[AuditEntry]) -> dict[Any, set[int]]:
    """The ids each page refers to: its records and the foreign keys of its changes."""
    wanted: dict[Any, set[int]] = {}
    for entry in entries:
        record_id = _int(entry.record_id)
        if record_id is not None:
            wanted.setdefault(apps.get_model(entry.table), set()).add(record_id)
        columns = _columns_of(entry.table)
        for change in entry.changes:
            field = columns.get(change.field)
            if field is not None and field.is_relation and field.related_model is not None:
                ids = wanted.setdefault(field.related_model, set())
                ids.update(pk for pk in (_int(change.old), _int(change.new)) if pk is not None)
    return wanted


def _int(value: str | None) -> int | None:
    return int(value) if value is not None and value.lstrip("-").isdigit() else None


def _names(wanted: dict[Any, set[int]]) -> dict[tuple[Any, int], str]:
    """One query for every name a page needs (none if it needs none)."""
    branches: list[str] = []
    params: list[Any] = []
    models: list[Any] = []
    for model, ids in sorted(wanted.items(), key=lambda item: item[0]._meta.label):
        reference = _reference(model)
        if reference.sql is None or not ids:
            continue
        branches.append(f"SELECT {len(models)} AS m, t.{_q(model._meta.pk.column)}::bigint AS id, "
                        f"{reference.sql} AS name FROM {_q(model._meta.db_table)} t "
                        f"WHERE t.{_q(model._meta.pk.column)} = ANY(%s)")
        params.append(sorted(ids))
        models.append(model)
    if not branches:
        return {}
    with connection.cursor() as cursor:
        cursor.execute(" UNION ALL ".join(branches), params)
        return {(models[m], pk): name for m, pk, name in cursor.fetchall() if name not in (None, "")}


def _model_name(model: type[Model]) -> str:
    return capfirst(str(model._meta.verbose_name))


def _named_value(field: Any, value: str | None,
                 names: dict[tuple[Any, int], str]) -> str | None:
    if value is None:
        return None
    if field.is_relation and field.related_model is not None:
        model, pk = field.related_model, _int(value)
        name = names.get((model, pk)) if pk is not None else None
        if model is ContentType and name:
            app_label, _dot, model_name = name.partition(".")
            target = _model_or_none(app_label, model_name)
            return _model_name(target) if target is not None else name
        return name or f"{_model_name(model)} {value}"
    return str(dict(field.flatchoices).get(_typed(field, value), value))


def _model_or_none(app_label: str, model_name: str) -> type[Model] | None:
    try:
        return apps.get_model(app_label, model_name)
    except LookupError:
        return None


def _typed(field: Any, value: str) -> Any:
    try:
        return field.to_python(value)
    except ValidationError:
        return value


def _named_change(change: FieldChange, column: Any,
                  names: dict[tuple[Any, int], str]) -> FieldChange:
    if column is None or change.field in REDACTED:
        return change
    return replace(change, old=_named_value(column, change.old, names), new=_named_value(column, change.new, names))


def name_entries(entries: Sequence[AuditEntry]) -> list[AuditEntry]:
    """The entries as the admin shows them: each record and each referenced record by its name
    ("Subject BJ01-0001", a user's full name), stored choices by their labels. One query per page."""
    names = _names(_wanted(entries))
    named = []
    for entry in entries:
        model, columns = apps.get_model(entry.table), _columns_of(entry.table)
        record = names.get((model, _int(entry.record_id) or 0))
        changes = tuple(_named_change(c, columns.get(c.field), names) for c in entry.changes)
        record_name = f"{_model_name(model)} {record or entry.record_id}"
        named.append(replace(entry, changes=changes, record_name=record_name))
    return named
