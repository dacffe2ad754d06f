"""Query actions and the automatic checks under two threads at once (real connections, committed data)."""

from __future__ import annotations

import pytest

from config.errors import StateConflict
from dataqueries import services
from dataqueries.checks import run_checks
from dataqueries.models import DataQuery, QueryMessage
from tests.concurrency import run_together
from tests.dataqueries.conftest import adverse_event, raise_on_consent
from tests.factories import consented, days_ago

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("restore_catalogue")]

ROUNDS = 3


def test_two_answers_at_once_leave_one_answer(world):
    subject = consented(trial=world.trial, site=world.site_a, coordinator=world.coordinator)
    for _ in range(ROUNDS):
        query = raise_on_consent(subject, world.data_manager)
        results = run_together(
            lambda q=query: services.answer_query(query=q, text="From the coordinator.", by=world.coordinator),
            lambda q=query: services.answer_query(query=q, text="From the investigator.", by=world.investigator))
        outcomes = sorted(kind for kind, _ in results)
        assert outcomes == ["error", "ok"], results
        [error] = [value for kind, value in results if kind == "error"]
        assert isinstance(error, StateConflict) and error.code == "query_not_open"
        assert query.messages.filter(kind=QueryMessage.Kind.ANSWER).count() == 1


def test_two_check_runs_at_once_raise_one_query(world):
    subject = consented(trial=world.trial, site=world.site_a, coordinator=world.coordinator)
    adverse_event(subject, world.coordinator, onset=days_ago(35))
    results = run_together(lambda: run_checks(world.trial), lambda: run_checks(world.trial))
    assert sorted(value.raised for _kind, value in results) == [0, 1], results
    assert DataQuery.objects.count() == 1 and QueryMessage.objects.count() == 1
