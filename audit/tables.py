"""The audited tables: each pghistory event table, and how one of its rows is placed in a trial, site and subject.

Scoping the audit trail needs, for every event row, the trial, site and subject of the record it
describes. They are derived once from the foreign keys of each tracked model:

* ``subject`` tables reach ``patients.Subject`` through foreign keys: directly (``subject_id``, e.g. a
  consent) or through parents (a lymphodepletion dose through its course, a CRS assessment through its
  adverse event, an eligibility answer through its assessment). Trial and site are the subject's;
  a row whose subject is empty keeps its own trial and site columns (a site-wide lock).
* ``trial`` tables are protocol design: they reach ``trials.Trial`` (directly or through parents, e.g.
  a regimen agent through its regimen); their site is their own ``site_id`` where they have one
  (memberships, trial sites). A model that sets ``AUDIT_EMPTY_SITE_MEANS_SEVERAL`` (an export job of
  several sites) is read with an empty site only by readers of every site of the trial.
* ``global`` tables belong to no trial (sites, the analyte catalogue, audit exports, and any table whose
  path is unknown). Only superusers read their history, except a site's own row, which the data
  managers of that site read (see ``audit.selectors``).

A tracked model may name a view to read instead of its event table (``AUDIT_TRAIL_TABLE``, with the
event table's columns): results are their own insert records, so their view takes the inserts from
the results table and the updates and deletes from the event table (assays.models.Result).

Parents are joined by their current row: clinical records are never deleted (PROTECT, no delete
permission), and an event whose parent has gone has no trial, so it is hidden from everyone but
superusers rather than shown to the wrong people. A table added later by another app is classified
by the same rules, so it is never visible more widely than its foreign keys justify.
"""

from __future__ import annotations

import functools
import re
from collections import deque
from dataclasses import dataclass

from django.apps import apps
from django.contrib.auth import get_user_model
from django.db import connection, models
from pghistory import core
from pghistory.models import Context

SUBJECT, TRIAL, GLOBAL = "subject", "trial", "global"
MAX_HOPS = 3
# Bookkeeping columns left out of field-level changes: the audit row has its own timestamp, and the
# record id is a column of its own.
BOOKKEEPING = frozenset({"id", "created_at", "updated_at"})
# Never shown, even to auditors: a value that would help forge a credential.
REDACTED = frozenset({"token_hash", "password"})
_LABEL = re.compile(r"^[A-Za-z0-9_]+\.[A-Za-z0-9_]+$")


@dataclass(frozen=True)
class AuditedTable:
    label: str  # the tracked model, e.g. "patients.Subject"
    name: str  # its verbose name
    event_label: str  # the event model, e.g. "patients.SubjectEvent"
    event_table: str
    kind: str  # SUBJECT, TRIAL or GLOBAL
    joins: str  # SQL joining the parents of the event row ``e``
    trial_sql: str
    site_sql: str
    subject_sql: str
    has_context: bool
    fields: tuple[tuple[str, str], ...]  # (column, verbose name) of the tracked fields

    @property
    def field_names(self) -> dict[str, str]:
        return dict(self.fields)


def _q(name: str) -> str:
    return connection.ops.quote_name(name)


def _foreign_keys(model: type[models.Model]) -> list[models.ForeignKey]:
    """Foreign keys that place a row in the protocol: not users, contexts or the event's own object."""
    user_model = get_user_model()
    return [
        f for f in model._meta.concrete_fields
        if isinstance(f, models.ForeignKey)  # many-to-one and one-to-one
        if f.many_to_one or f.one_to_one
        if not f.name.startswith("pgh_")
        if f.related_model not in (user_model, Context)
    ]


def _parent(fk: models.ForeignKey) -> type[models.Model]:
    """The concrete model ``fk`` points at (the apps are loaded: never the lazy string 'self')."""
    model = fk.related_model
    assert not isinstance(model, str) and model._meta.concrete_model is not None
    return model._meta.concrete_model


def _path_to(event_model: type[models.Model], target: type[models.Model]) -> list[models.ForeignKey] | None:
    """The shortest chain of foreign keys from an event row to ``target`` (first hop on the event table)."""
    queue: deque[tuple[type[models.Model], list[models.ForeignKey]]] = deque([(event_model, [])])
    seen = {event_model}
    while queue:
        model, path = queue.popleft()
        if len(path) >= MAX_HOPS:
            continue
        for fk in _foreign_keys(model):
            parent = _parent(fk)
            if parent is target:
                return [*path, fk]
            if parent not in seen:
                seen.add(parent)
                queue.append((parent, [*path, fk]))
    return None


def _joins(path: list[models.ForeignKey]) -> tuple[str, str]:
    """LEFT JOINs along ``path`` except its last hop; returns (joins, column of the last hop's key)."""
    joins, alias = [], "e"
    for n, fk in enumerate(path[:-1], start=1):
        parent = _parent(fk)._meta
        joins.append(f"LEFT JOIN {_q(parent.db_table)} p{n} ON p{n}.{_q(fk.target_field.column)} = "
                     f"{alias}.{_q(fk.column)}")
        alias = f"p{n}"
    return " ".join(joins), f"{alias}.{_q(path[-1].column)}"


def _own_column(event_model: type[models.Model], target: type[models.Model]) -> str | None:
    """The event table's own foreign key to ``target`` (e.g. a lock's trial_id and site_id), if any."""
    for fk in _foreign_keys(event_model):
        if _parent(fk) is target:
            return f"e.{_q(fk.column)}"
    return None


def _describe(event_model: type[models.Model]) -> AuditedTable:
    # pghistory sets pgh_tracked_model on each event class; its base declares it None.
    tracked = event_model.pgh_tracked_model._meta.concrete_model  # type: ignore[attr-defined]
    subject_model, trial_model = apps.get_model("patients", "Subject"), apps.get_model("trials", "Trial")
    site_model = apps.get_model("trials", "Site")
    subjects = _q(subject_model._meta.db_table)
    own_site, own_trial = _own_column(event_model, site_model), _own_column(event_model, trial_model)
    kind, joins, trial_sql, site_sql, subject_sql = GLOBAL, "", "NULL", own_site or "NULL", "NULL"

    if tracked is subject_model:
        kind, subject_sql = SUBJECT, "e.pgh_obj_id"
        joins = f"LEFT JOIN {subjects} s ON s.id = e.pgh_obj_id"
        trial_sql, site_sql = "COALESCE(s.trial_id, e.trial_id)", "COALESCE(s.site_id, e.site_id)"
    elif path := _path_to(event_model, subject_model):
        kind, (joins, subject_sql) = SUBJECT, _joins(path)
        joins = f"{joins} LEFT JOIN {subjects} s ON s.id = {subject_sql}".strip()
        # The subject's trial and site; a row without a subject (e.g. a site-wide lock) keeps its own.
        trial_sql = f"COALESCE(s.trial_id, {own_trial})" if own_trial else "s.trial_id"
        site_sql = f"COALESCE(s.site_id, {own_site})" if own_site else "s.site_id"
    elif tracked is trial_model:
        kind, trial_sql = TRIAL, "e.pgh_obj_id"
    elif path := _path_to(event_model, trial_model):
        kind, (joins, trial_sql) = TRIAL, _joins(path)
        if own_site and getattr(tracked, "AUDIT_EMPTY_SITE_MEANS_SEVERAL", False):
            # An empty site means "several sites" (e.g. an export of two sites), not "the trial's design":
            # -1 is no site, so such a row is read only by those who read every site of the trial.
            site_sql = f"COALESCE({own_site}, -1)"
    elif tracked is site_model:
        site_sql = "e.pgh_obj_id"

    tracked_fields = {f.column: str(f.verbose_name) for f in tracked._meta.concrete_fields}
    event_columns = [f.column for f in event_model._meta.concrete_fields if not f.column.startswith("pgh_")]
    event_table = getattr(tracked, "AUDIT_TRAIL_TABLE", event_model._meta.db_table)
    return AuditedTable(
        label=tracked._meta.label, name=str(tracked._meta.verbose_name), event_label=event_model._meta.label,
        event_table=event_table, kind=kind, joins=joins, trial_sql=trial_sql, site_sql=site_sql,
        subject_sql=subject_sql, has_context=any(f.name == "pgh_context" for f in event_model._meta.fields),
        fields=tuple((c, tracked_fields.get(c, c)) for c in event_columns),
    )


@functools.cache
def audited_tables() -> dict[str, AuditedTable]:
    """Every event table with a ``pgh_obj`` (a tracked row), keyed by the tracked model's label."""
    tables: dict[str, AuditedTable] = {}
    for event_model in core.event_models():
        if not any(f.name == "pgh_obj" for f in event_model._meta.fields):
            continue
        table = _describe(event_model)
        assert _LABEL.match(table.label) and _LABEL.match(table.event_label), table.label
        if table.label in tables:  # two event models for one table: keep the first, deterministically
            continue
        tables[table.label] = table
    return dict(sorted(tables.items()))


def table_for(label: str) -> AuditedTable | None:
    """The audited table of a model label ("patients.Subject"), case-insensitively."""
    tables = audited_tables()
    return tables.get(label) or next((t for key, t in tables.items() if key.lower() == label.lower()), None)
