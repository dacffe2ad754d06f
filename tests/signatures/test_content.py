"""The canonical serialisation of signed content: its shape, and one query per model whatever the rows."""

from __future__ import annotations

import json

import pytest

from signatures.content import SUBJECT_PATHS, canonical_content, content_hash, parts_of
from tests.signatures.conftest import record_event

pytestmark = pytest.mark.django_db


def lines(**kwargs: object) -> list[dict]:
    return [json.loads(line) for line in canonical_content(**kwargs)]


def test_the_casebook_is_sorted_json_lines_without_bookkeeping(world, subject):
    for term in ("Nausea", "Fatigue"):
        record_event(world, subject, term=term, grade=1)
    raw = list(canonical_content(subject_id=subject.pk))
    assert all(line.endswith(b"\n") and b": " not in line for line in raw)
    docs = [json.loads(line) for line in raw]
    assert docs[0] == {"scope": "casebook", "subject": subject.pk, "version": 1}
    labels = [doc["model"] for doc in docs[1:]]
    assert labels == sorted(labels)
    assert {"patients.subject", "patients.consent", "patients.adverseevent"} <= set(labels)
    events = [doc["row"] for doc in docs if doc.get("model") == "patients.adverseevent"]
    assert [e["term"] for e in events] == ["Febrile neutropenia", "Nausea", "Fatigue"]
    assert [e["id"] for e in events] == sorted(e["id"] for e in events)
    assert all("updated_at" not in doc.get("row", {}) for doc in docs)
    assert all(list(doc["row"]) == sorted(doc["row"]) for doc in docs[1:])
    assert events[0]["subject_id"] == subject.pk and "created_at" in events[0]


def test_the_hash_is_stable_and_follows_clinical_values(world, subject):
    first = content_hash(subject_id=subject.pk)
    assert content_hash(subject_id=subject.pk) == first
    subject.adverse_events.update(meddra_code="10016288")
    assert content_hash(subject_id=subject.pk) != first


@pytest.mark.parametrize("events", [1, 10])
def test_the_casebook_hash_is_one_query_per_model(world, subject, events, django_assert_num_queries):
    for n in range(events - 1):
        record_event(world, subject, term=f"Event {n}", grade=1)
    with django_assert_num_queries(len(SUBJECT_PATHS)):
        content_hash(subject_id=subject.pk)


def test_a_form_hash_is_one_query_for_the_record_and_one_per_part(world, subject, django_assert_num_queries):
    event = subject.adverse_events.get()
    with django_assert_num_queries(1 + len(parts_of("patients.adverseevent"))):
        content_hash(subject_id=subject.pk, record_label="patients.adverseevent", record_id=event.pk)
    docs = lines(subject_id=subject.pk, record_label="patients.adverseevent", record_id=event.pk)
    assert docs[0] == {"id": event.pk, "record": "patients.adverseevent", "scope": "form", "subject": subject.pk,
                       "version": 1}
    assert [doc["row"]["id"] for doc in docs[1:]] == [event.pk]
