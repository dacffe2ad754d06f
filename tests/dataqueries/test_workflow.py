"""The query workflow through the services: raise, answer, close, re-open; every refusal and its code."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pghistory.models
import pytest
from django.db import IntegrityError, connection, transaction

from config.errors import DomainError, PermissionRefused, RuleViolation, StateConflict
from dataqueries import services
from dataqueries.models import DataQuery, QueryMessage
from tests.dataqueries.conftest import TEXT, raise_on_consent

pytestmark = pytest.mark.django_db

Status, Kind = DataQuery.Status, QueryMessage.Kind


def _state() -> tuple[list[tuple], list[tuple]]:
    queries = list(DataQuery.objects.order_by("pk").values_list("pk", "status", "auto_resolved"))
    thread = list(QueryMessage.objects.order_by("pk").values_list("pk", "kind", "text"))
    return queries, thread


@contextmanager
def refused(error: type[DomainError], code: str, field: str | None = None) -> Iterator[None]:
    """The block raises ``error`` with ``code`` (on ``field``) and changes no query or message."""
    before = _state()
    with pytest.raises(error) as err:
        yield
    assert err.value.code == code, err.value.message
    assert err.value.field == field
    assert _state() == before


def thread_of(query: DataQuery) -> list[tuple[str, str, str | None]]:
    return [(m.kind, m.text, m.by.username if m.by else None)
            for m in query.messages.select_related("by").order_by("at", "pk")]


def test_full_workflow_keeps_the_thread_in_order(world, query_a):
    dm, coordinator, investigator = world.data_manager, world.coordinator, world.investigator
    assert (query_a.status, query_a.origin, query_a.raised_by, query_a.site, query_a.trial) == (
        Status.OPEN, DataQuery.Origin.MANUAL, dm, world.site_a, world.trial)
    services.answer_query(query=query_a, text="Transcription error, corrected from source.", by=coordinator)
    services.close_query(query=query_a, text="Accepted.", by=dm)
    services.reopen_query(query=query_a, text="The correction is still missing on the consent page.", by=dm)
    services.answer_query(query=query_a, text="Now corrected.", by=investigator)
    closed = services.close_query(query=query_a, by=dm)
    assert closed.status == Status.CLOSED and not closed.auto_resolved
    assert thread_of(query_a) == [
        (Kind.RAISE, TEXT, "dm"),
        (Kind.ANSWER, "Transcription error, corrected from source.", "coord_a"),
        (Kind.CLOSE, "Accepted.", "dm"),
        (Kind.REOPEN, "The correction is still missing on the consent page.", "dm"),
        (Kind.ANSWER, "Now corrected.", "inv_a"),
        (Kind.CLOSE, "", "dm"),
    ]


def test_each_step_is_audited_with_its_text_as_reason(world, query_a):
    services.answer_query(query=query_a, text="Corrected from source.", by=world.coordinator)
    events = DataQuery.pgh_event_model.objects.filter(pgh_obj_id=query_a.pk).order_by("pgh_id")
    assert [e.status for e in events] == [Status.OPEN, Status.ANSWERED]
    reasons = [pghistory.models.Context.objects.get(pk=e.pgh_context_id).metadata.get("reason") for e in events]
    assert reasons == [TEXT, "Corrected from source."]
    message_events = QueryMessage.pgh_event_model.objects.filter(pgh_obj_id__in=query_a.messages.values("pk"))
    assert message_events.count() == 2


def test_monitor_of_the_site_raises_a_query(world, subject_a):
    query = services.raise_query(subject=subject_a, record=subject_a, field="marrow_blasts_pct",
                                 text="Source says 53%, not 35%.", by=world.monitor)
    assert query.raised_by == world.monitor and query.record == subject_a
    assert thread_of(query) == [(Kind.RAISE, "Source says 53%, not 35%.", "monitor_a")]


def test_records_reached_through_another_record_belong_to_their_subject(world, subject_a):
    from patients.services import safety
    from tests.factories import at, days_ago

    event = safety.record_adverse_event(subject=subject_a, data=safety.EventInput(
        category="crs", term="Cytokine release syndrome", onset_on=days_ago(3), related_to_product="probable",
        related_to_lymphodepletion="unlikely"), by=world.coordinator)
    assessment = safety.record_crs_assessment(event=event, assessed_at=at(days_ago(2)),
                                              components={"max_temp_c": 39}, by=world.coordinator)
    query = services.raise_query(subject=subject_a, record=assessment, field="max_temp_c", text="Check.",
                                 by=world.data_manager)
    assert query.record_type == "patients.crsassessment" and query.object_id == assessment.pk


# --- refusals: roles (403) -------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["coordinator", "investigator", "coordinator_b"])
def test_only_data_managers_and_site_monitors_raise(world, subject_a, who):
    with refused(PermissionRefused, "not_permitted"):
        raise_on_consent(subject_a, getattr(world, who))


def test_a_monitor_of_another_site_does_not_raise(world, subject_b):
    with refused(PermissionRefused, "not_permitted"):
        raise_on_consent(subject_b, world.monitor)


@pytest.mark.parametrize("who", ["monitor", "data_manager", "coordinator_b", "investigator_b"])
def test_only_the_sites_entry_roles_answer(world, query_a, who):
    with refused(PermissionRefused, "not_permitted"):
        services.answer_query(query=query_a, text="Fine.", by=getattr(world, who))


@pytest.mark.parametrize("who", ["coordinator", "investigator", "monitor", "coordinator_b"])
def test_only_data_managers_close_and_reopen(world, query_a, who):
    user = getattr(world, who)
    with refused(PermissionRefused, "not_permitted"):
        services.close_query(query=query_a, text="", by=user)
    services.close_query(query=query_a, by=world.data_manager)
    with refused(PermissionRefused, "not_permitted"):
        services.reopen_query(query=query_a, text="Still wrong.", by=user)


# --- refusals: states (409) ------------------------------------------------------------------------


def test_answer_needs_an_open_query(world, query_a):
    services.answer_query(query=query_a, text="Corrected.", by=world.coordinator)
    with refused(StateConflict, "query_not_open"):
        services.answer_query(query=query_a, text="Again.", by=world.coordinator)
    services.close_query(query=query_a, by=world.data_manager)
    with refused(StateConflict, "query_not_open"):
        services.answer_query(query=query_a, text="Again.", by=world.coordinator)


def test_close_refuses_a_closed_query_but_closes_open_and_answered_ones(world, query_a, subject_a):
    services.close_query(query=query_a, text="Raised in error.", by=world.data_manager)  # open -> closed
    with refused(StateConflict, "query_already_closed"):
        services.close_query(query=query_a, by=world.data_manager)
    other = raise_on_consent(subject_a, world.data_manager, text="Second question.")
    services.answer_query(query=other, text="Checked.", by=world.coordinator)
    assert services.close_query(query=other, by=world.data_manager).status == Status.CLOSED  # answered -> closed


def test_reopen_refuses_an_open_query_but_reopens_answered_and_closed_ones(world, query_a):
    with refused(StateConflict, "query_already_open"):
        services.reopen_query(query=query_a, text="Still wrong.", by=world.data_manager)
    services.answer_query(query=query_a, text="Checked.", by=world.coordinator)
    assert services.reopen_query(query=query_a, text="Not enough.", by=world.data_manager).status == Status.OPEN
    services.close_query(query=query_a, by=world.data_manager)
    assert services.reopen_query(query=query_a, text="Again.", by=world.data_manager).status == Status.OPEN


def test_state_is_read_under_the_lock_not_from_a_stale_object(world, query_a):
    stale = DataQuery.objects.get(pk=query_a.pk)
    services.answer_query(query=query_a, text="Corrected.", by=world.coordinator)
    with refused(StateConflict, "query_not_open"):
        services.answer_query(query=stale, text="Corrected twice.", by=world.investigator)


# --- refusals: input (400) -------------------------------------------------------------------------


def test_answer_and_reopen_need_text(world, query_a):
    with refused(RuleViolation, "text_required", "text"):
        services.answer_query(query=query_a, text="  ", by=world.coordinator)
    services.close_query(query=query_a, by=world.data_manager)
    with refused(RuleViolation, "text_required", "text"):
        services.reopen_query(query=query_a, text="", by=world.data_manager)


def test_raise_needs_text(world, subject_a):
    with refused(RuleViolation, "text_required", "text"):
        raise_on_consent(subject_a, world.data_manager, text=" ")


def test_the_record_must_belong_to_the_subject(world, subject_a, subject_b):
    with refused(RuleViolation, "record_not_subjects", "record_id"):
        services.raise_query(subject=subject_a, record=subject_b.consents.get(), field="consented_on", text="?",
                             by=world.data_manager)


@pytest.mark.parametrize("field", ["no_such_field", "id", "created_at", "subject_id", "recorded_by_id"])
def test_the_field_must_be_a_data_field_of_the_record(world, subject_a, field):
    with refused(RuleViolation, "unknown_field", "field_name"):
        services.raise_query(subject=subject_a, record=subject_a.consents.get(), field=field, text="?",
                             by=world.data_manager)


def test_find_record_refuses_unknown_types_and_ids(world, subject_a):
    with pytest.raises(RuleViolation) as err:
        services.find_record(record_type="trials.trial", record_id=world.trial.pk)
    assert (err.value.code, err.value.field) == ("record_type_not_queryable", "record_type")
    with pytest.raises(RuleViolation) as err:
        services.find_record(record_type="patients.consent", record_id=10**9)
    assert (err.value.code, err.value.field) == ("unknown_record", "record_id")
    assert services.find_record(record_type="patients.subject", record_id=subject_a.pk) == subject_a


# --- the database keeps the thread -----------------------------------------------------------------


def test_queries_and_messages_are_never_deleted_and_messages_never_change(world, query_a):
    message = query_a.messages.get()
    for statement in (f"DELETE FROM dataqueries_querymessage WHERE id = {message.pk}",
                      f"UPDATE dataqueries_querymessage SET text = 'rewritten' WHERE id = {message.pk}",
                      f"DELETE FROM dataqueries_dataquery WHERE id = {query_a.pk}"):
        with pytest.raises(Exception, match="Cannot"), transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(statement)
    assert query_a.messages.get().text == TEXT


def test_an_automatic_query_needs_its_check_and_a_manual_one_its_author(world, query_a):
    with pytest.raises(IntegrityError), transaction.atomic():
        DataQuery.objects.filter(pk=query_a.pk).update(raised_by=None)
    with pytest.raises(IntegrityError), transaction.atomic():
        DataQuery.objects.filter(pk=query_a.pk).update(origin=DataQuery.Origin.AUTOMATIC)


def test_person_actions_need_a_person(world, query_a):
    with pytest.raises(IntegrityError), transaction.atomic():
        QueryMessage.objects.create(query=query_a, kind=Kind.ANSWER, text="anonymous", at=query_a.raised_at)


def test_str_names_the_field_and_status(world, query_a):
    assert str(query_a) == f"Query {query_a.pk} on consented on (open)"
    assert DataQuery.objects.filter(subject=query_a.subject, status__in=DataQuery.UNRESOLVED).count() == 1
