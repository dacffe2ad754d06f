"""Data query workflow (DOMAIN §8.1(f) operational order, §8.2 QUERY_OPEN/CLOSE audit): raise, answer, close,
re-open. One function per action, called by the admin, the API and tests; each keeps the whole thread.

Who may do what:
- raise: the trial's data managers, and monitors of the subject's site (source data verification);
- answer: the site's entry roles (coordinators, investigators), on open (or re-opened) queries;
- close: data managers, on open or answered queries; re-open: data managers, on answered or closed
  queries, with a text saying what is still wrong.

States: open -> answered -> closed, re-open puts a query back to open. A wrong state is 409, a wrong
role 403, missing text 400. Every write is under the query's row lock and ``pghistory.context(reason=text)``.
"""

from __future__ import annotations

import pghistory
from django.apps import apps
from django.contrib.auth.models import AbstractBaseUser, User
from django.contrib.contenttypes.models import ContentType
from django.core.exceptions import FieldDoesNotExist
from django.db import models, transaction
from django.utils import timezone

from config.errors import PermissionRefused, RuleViolation, StateConflict
from dataqueries.models import DataQuery, QueryMessage
from locking.services import check_writable
from patients.models import Subject
from patients.record_paths import SUBJECT_PATHS as ALL_SUBJECT_PATHS
from trials.access import access_of
from trials.models import Membership

Status, Kind = DataQuery.Status, QueryMessage.Kind

# Records a query may target (every subject-level record but the bookkeeping rows), and the path
# from each to its subject ("" for the subject itself).
SUBJECT_PATHS: dict[str, str] = {
    label: "" if path == "pk" else path for label, path in ALL_SUBJECT_PATHS.items()
    if label not in ("patients.eligibilityanswer", "patients.subjecttransition")
}
# Bookkeeping columns are not clinical data: nothing to ask the site about.
NOT_QUERYABLE_FIELDS = frozenset({"id", "created_at", "updated_at"})


def record_type_of(model: type[models.Model]) -> str:
    return f"{model._meta.app_label}.{model._meta.model_name}"


def find_record(*, record_type: str, record_id: int, subject: Subject | None = None) -> models.Model:
    """The record a query targets, e.g. ``patients.adverseevent`` 12; with ``subject``, only among that
    subject's records, so another subject's record and a missing one are the same "no such record"."""
    if record_type not in SUBJECT_PATHS:
        raise RuleViolation("record_type_not_queryable", f"Queries target one of: {', '.join(SUBJECT_PATHS)}.",
                            field="record_type")
    model = apps.get_model(record_type)
    records = model._default_manager.filter(pk=record_id)
    if subject is not None:
        path = SUBJECT_PATHS[record_type]
        records = records.filter(**{f"{path}_id" if path else "pk": subject.pk})
    record = records.first()
    if record is None:
        owner = f" of {subject.code}" if subject is not None else ""
        raise RuleViolation("unknown_record", f"No {model._meta.verbose_name} {record_id}{owner}.", field="record_id")
    return record


def subject_id_of(record: models.Model) -> int:
    path = SUBJECT_PATHS.get(record_type_of(type(record)))
    if path is None:
        raise RuleViolation("record_type_not_queryable", f"{record._meta.verbose_name} records cannot be queried.",
                            field="record_type")
    if not path:
        return record.pk
    return type(record)._default_manager.filter(pk=record.pk).values_list(f"{path}_id", flat=True).get()


def check_target(*, subject: Subject, record: models.Model, field: str) -> None:
    """The record belongs to the subject and ``field`` is one of its model's data fields."""
    if subject_id_of(record) != subject.pk:
        raise RuleViolation("record_not_subjects", f"That record does not belong to {subject.code}.",
                            field="record_id")
    try:
        model_field = record._meta.get_field(field)
    except FieldDoesNotExist:
        model_field = None
    if (model_field is None or not model_field.concrete or model_field.name != field  # e.g. "subject_id"
            or field in NOT_QUERYABLE_FIELDS):
        raise RuleViolation("unknown_field", f"{str(record._meta.verbose_name).capitalize()} has no field {field!r}.",
                            field="field_name")


def check_text(text: str, *, required: bool = True) -> None:
    if required and not text.strip():
        raise RuleViolation("text_required", "Write the query text.", field="text")


def check_can_raise(*, user: AbstractBaseUser, trial_id: int, site_id: int) -> None:
    access = access_of(user)
    if not (access.designs(trial_id) or access.has_role(trial_id=trial_id, site_id=site_id,
                                                        role=Membership.Role.MONITOR)):
        raise PermissionRefused("not_permitted", "Only the trial's data managers and the site's monitors raise "
                                "queries.")


def check_can_answer(*, user: AbstractBaseUser, query: DataQuery) -> None:
    if not access_of(user).can_enter(trial_id=query.trial_id, site_id=query.site_id):
        raise PermissionRefused("not_permitted", "Only the site's coordinators and investigators answer queries.")


def check_can_manage(*, user: AbstractBaseUser, query: DataQuery) -> None:
    """Closing and re-opening is data management."""
    if not access_of(user).designs(query.trial_id):
        raise PermissionRefused("not_permitted", "Only the trial's data managers close and re-open queries.")


def check_answer(*, query: DataQuery, text: str) -> None:
    if query.status != Status.OPEN:
        raise StateConflict("query_not_open", f"The query is {query.get_status_display().lower()}; only an open "
                            "query is answered.")
    check_text(text)


def check_close(*, query: DataQuery) -> None:
    if query.status == Status.CLOSED:
        raise StateConflict("query_already_closed", "The query is already closed.")


def check_reopen(*, query: DataQuery, text: str) -> None:
    if query.status == Status.OPEN:
        raise StateConflict("query_already_open", "The query is already open.")
    check_text(text)


def _lock(query: DataQuery) -> DataQuery:
    return DataQuery.objects.select_for_update(of=("self",)).select_related("subject").get(pk=query.pk)


def _writable(query: DataQuery) -> None:
    check_writable(trial_id=query.trial_id, site_id=query.site_id, subject_id=query.subject_id, activity="query")


@transaction.atomic
def raise_query(*, subject: Subject, record: models.Model, field: str, text: str,
                by: User) -> DataQuery:
    """A person's question about ``field`` of ``record`` (a record of ``subject``)."""
    check_can_raise(user=by, trial_id=subject.trial_id, site_id=subject.site_id)
    check_target(subject=subject, record=record, field=field)
    check_text(text)
    check_writable(trial_id=subject.trial_id, site_id=subject.site_id, subject_id=subject.pk, activity="query")
    now = timezone.now()
    with pghistory.context(reason=text):
        query = DataQuery(trial_id=subject.trial_id, site_id=subject.site_id, subject=subject,
                          content_type=ContentType.objects.get_for_model(record), object_id=record.pk,
                          field_name=field, origin=DataQuery.Origin.MANUAL, raised_by=by, raised_at=now, text=text)
        query.full_clean()
        query.save()
        QueryMessage.objects.create(query=query, kind=Kind.RAISE, text=text, by=by, at=now)
    return query


def _step(*, query: DataQuery, to: str, kind: str, text: str, by: User) -> DataQuery:
    """Move a locked query to ``to`` and add the message to its thread."""
    _writable(query)
    with pghistory.context(reason=text or f"data query: {kind}"):  # closing needs no text
        query.status, query.auto_resolved = to, False
        query.save(update_fields=["status", "auto_resolved", "updated_at"])
        QueryMessage.objects.create(query=query, kind=kind, text=text, by=by, at=timezone.now())
    return query


@transaction.atomic
def answer_query(*, query: DataQuery, text: str, by: User) -> DataQuery:
    """The site's answer (e.g. "corrected from source" or "confirmed, value is correct")."""
    query = _lock(query)
    check_can_answer(user=by, query=query)
    check_answer(query=query, text=text)
    return _step(query=query, to=Status.ANSWERED, kind=Kind.ANSWER, text=text, by=by)


@transaction.atomic
def close_query(*, query: DataQuery, by: User, text: str = "") -> DataQuery:
    """The data manager accepts the answer (or withdraws an open query)."""
    query = _lock(query)
    check_can_manage(user=by, query=query)
    check_close(query=query)
    return _step(query=query, to=Status.CLOSED, kind=Kind.CLOSE, text=text, by=by)


@transaction.atomic
def reopen_query(*, query: DataQuery, text: str, by: User) -> DataQuery:
    """The data manager is not satisfied: the query is open again and the site answers anew."""
    query = _lock(query)
    check_can_manage(user=by, query=query)
    check_reopen(query=query, text=text)
    return _step(query=query, to=Status.OPEN, kind=Kind.REOPEN, text=text, by=by)
