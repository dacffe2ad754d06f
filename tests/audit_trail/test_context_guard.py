"""The who/why of an audit row (its pghistory context) cannot be rewritten once its transaction is over."""

from __future__ import annotations

import pytest
from django.db import DatabaseError, connection, transaction
from pghistory.models import Events

from patients.services.enrolment import amend_subject
from tests.factories import consented, days_ago

# Committed transactions are the point here: the guard allows changes only inside the creating one.
pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("restore_catalogue")]


def _amended_context(world) -> str:
    subject = consented(trial=world.trial, site=world.site_a, coordinator=world.coordinator, on=days_ago(20))
    amend_subject(subject=subject, changes={"prior_lines": 3}, reason="Referral letter", by=world.coordinator)
    [event] = [e for e in Events.objects.tracks(subject).filter(pgh_label="update") if "prior_lines" in e.pgh_diff]
    assert event.pgh_context["reason"] == "Referral letter"
    return str(event.pgh_context_id)


@pytest.mark.parametrize("statement", [
    """UPDATE pghistory_context SET metadata = metadata || '{"reason": "forged"}' WHERE id = %s""",
    """UPDATE pghistory_context SET metadata = metadata - 'reason' WHERE id = %s""",
    "DELETE FROM pghistory_context WHERE id = %s",
])
def test_a_committed_context_cannot_be_changed_or_removed(world, statement):
    context_id = _amended_context(world)
    with pytest.raises(DatabaseError, match="cannot be rewritten|never deleted"), transaction.atomic(), \
            connection.cursor() as cursor:
        cursor.execute(statement, [context_id])
    with connection.cursor() as cursor:
        cursor.execute("SELECT metadata->>'reason' FROM pghistory_context WHERE id = %s", [context_id])
        assert cursor.fetchone() == ("Referral letter",)


def test_a_request_may_still_add_metadata_to_its_context(world):
    context_id = _amended_context(world)
    with connection.cursor() as cursor:
        cursor.execute("""UPDATE pghistory_context SET metadata = metadata || '{"note": "added"}' WHERE id = %s""",
                       [context_id])
        cursor.execute("SELECT metadata->>'reason', metadata->>'note' FROM pghistory_context WHERE id = %s",
                       [context_id])
        assert cursor.fetchone() == ("Referral letter", "added")


def test_a_value_left_empty_may_be_filled_in_later(world):
    # The API authenticates after the request's first write, so the user arrives in a later transaction.
    context_id = _amended_context(world)
    with connection.cursor() as cursor:
        cursor.execute("""UPDATE pghistory_context SET metadata = metadata || '{"user": null}' WHERE id = %s""",
                       [context_id])
    with connection.cursor() as cursor:
        cursor.execute("""UPDATE pghistory_context SET metadata = metadata || '{"user": 7}' WHERE id = %s""",
                       [context_id])
        cursor.execute("SELECT metadata->>'user' FROM pghistory_context WHERE id = %s", [context_id])
        assert cursor.fetchone() == ("7",)
