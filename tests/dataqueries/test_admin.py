"""Data queries in the admin: scoped list and pages, the thread inline, the answer/close/re-open actions and
the raise form (refusals shown on the form), open counts per subject and per site."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils.html import escape

from dataqueries import services
from dataqueries.models import DataQuery, QueryMessage
from tests.dataqueries.conftest import TEXT, raise_on_consent
from tests.factories import consented, days_ago

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:dataqueries_dataquery_changelist")
ADD = reverse("admin:dataqueries_dataquery_add")
BY_SITE = reverse("admin:dataqueries_dataquery_open_by_site")
SUBJECTS = reverse("admin:patients_subject_changelist")


def change_url(query: DataQuery) -> str:
    return reverse("admin:dataqueries_dataquery_change", args=[query.pk])


def action_url(query: DataQuery, action: str) -> str:
    return reverse("admin:dataqueries_dataquery_action", args=[query.pk, action])


def listed(response: Any) -> list[int]:
    return sorted(obj.pk for obj in response.context["cl"].result_list)


# --- scoping ---------------------------------------------------------------------------------------


def test_the_list_shows_each_user_their_sites_queries(world, login, query_a, query_b):
    assert listed(login(world.data_manager).get(CHANGELIST)) == sorted([query_a.pk, query_b.pk])
    assert listed(login(world.coordinator).get(CHANGELIST)) == [query_a.pk]
    assert listed(login(world.monitor).get(CHANGELIST)) == [query_a.pk]
    site_b = login(world.coordinator_b)
    assert listed(site_b.get(CHANGELIST)) == [query_b.pk]
    assert site_b.get(change_url(query_a)).status_code == 404
    assert site_b.get(action_url(query_a, "answer")).status_code == 404
    assert listed(site_b.get(CHANGELIST, {"q": query_a.subject.code})) == []


def test_filters_by_status_site_origin_and_check(world, login, query_a, query_b):
    services.answer_query(query=query_a, text="Done.", by=world.coordinator)
    client = login(world.data_manager)
    assert listed(client.get(CHANGELIST, {"status__exact": "answered"})) == [query_a.pk]
    assert listed(client.get(CHANGELIST, {"site__id__exact": world.site_b.pk})) == [query_b.pk]
    assert listed(client.get(CHANGELIST, {"origin__exact": "automatic"})) == []
    assert listed(client.get(CHANGELIST, {"check_code__exact": "lab_implausible"})) == []


def test_the_query_page_shows_the_thread_read_only_and_the_users_actions(world, login, query_a):
    services.answer_query(query=query_a, text="Corrected from source.", by=world.coordinator)
    page = login(world.data_manager).get(change_url(query_a))
    assert page.status_code == 200
    [thread] = page.context["inline_admin_formsets"]
    assert [f.instance.kind for f in thread.formset.forms] == [QueryMessage.Kind.RAISE, QueryMessage.Kind.ANSWER]
    assert not thread.has_add_permission and not thread.has_change_permission
    assert page.context["query_actions"] == [("close", "Close"), ("reopen", "Re-open")]
    assert "Corrected from source." in page.content.decode()
    assert login(world.coordinator).get(change_url(query_a)).context["query_actions"] == []  # answered already
    assert login(world.monitor).get(change_url(query_a)).context["query_actions"] == []


# --- actions ---------------------------------------------------------------------------------------


def test_answer_close_and_reopen_through_the_admin(world, login, query_a):
    coordinator, dm = login(world.coordinator), login(world.data_manager)
    assert coordinator.get(change_url(query_a)).context["query_actions"] == [("answer", "Answer")]
    response = coordinator.post(action_url(query_a, "answer"), {"text": "Corrected from source."})
    assert response.status_code == 302 and response.url == change_url(query_a)
    assert dm.post(action_url(query_a, "close"), {"text": ""}).status_code == 302
    assert dm.post(action_url(query_a, "reopen"), {"text": "Still wrong."}).status_code == 302
    query_a.refresh_from_db()
    assert query_a.status == DataQuery.Status.OPEN
    assert list(query_a.messages.order_by("at", "pk").values_list("kind", "text")) == [
        ("raise", TEXT), ("answer", "Corrected from source."), ("close", ""), ("reopen", "Still wrong.")]


def test_refusals_show_the_services_message_and_save_nothing(world, login, query_a):
    coordinator, dm = login(world.coordinator), login(world.data_manager)
    response = coordinator.post(action_url(query_a, "answer"), {"text": " "})
    assert response.status_code == 200 and response.context["form"].errors == {"text": ["Write the query text."]}
    response = dm.post(action_url(query_a, "reopen"), {"text": "Again."})  # still open: 409 as a form error
    assert response.status_code == 200
    assert response.context["form"].errors == {"__all__": ["The query is already open."]}
    services.close_query(query=query_a, by=world.data_manager)
    response = coordinator.post(action_url(query_a, "answer"), {"text": "Late answer."})
    assert response.context["form"].errors == {"__all__": ["The query is closed; only an open query is answered."]}
    assert escape("The query is closed; only an open query is answered.") in response.content.decode()
    assert query_a.messages.count() == 2


@pytest.mark.parametrize(("who", "action"), [("monitor", "answer"), ("data_manager", "answer"),
                                             ("coordinator", "close"), ("investigator", "reopen")])
def test_an_action_outside_the_users_role_is_403(world, login, query_a, who, action):
    client = login(getattr(world, who))
    assert client.get(action_url(query_a, action)).status_code == 403
    assert client.post(action_url(query_a, action), {"text": "x"}).status_code == 403
    assert query_a.messages.count() == 1


def test_unknown_action_is_404(world, login, query_a):
    assert login(world.data_manager).get(action_url(query_a, "delete")).status_code == 404


# --- raising ---------------------------------------------------------------------------------------


def test_raise_form_creates_a_query_with_its_first_message(world, login, subject_a):
    form = {"subject": subject_a.pk, "record_type": "patients.subject", "record_id": subject_a.pk,
            "field_name": "marrow_blasts_pct", "text": "Source says 53%."}
    response = login(world.monitor).post(ADD, form)
    assert response.status_code == 302, response.context["adminform"].form.errors
    query = DataQuery.objects.get()
    assert (query.raised_by, query.record, query.field_name, query.site) == (world.monitor, subject_a,
                                                                             "marrow_blasts_pct", world.site_a)
    assert list(query.messages.values_list("kind", "text")) == [("raise", "Source says 53%.")]


def test_raise_form_shows_refusals_on_their_fields(world, login, subject_a, subject_b):
    client = login(world.data_manager)
    base = {"subject": subject_a.pk, "record_type": "patients.consent", "record_id": subject_a.consents.get().pk,
            "field_name": "consented_on", "text": "Check."}
    errors = client.post(ADD, {**base, "field_name": "nope"}).context["adminform"].form.errors
    assert errors == {"field_name": ["Consent has no field 'nope'."]}
    other = subject_b.consents.get().pk
    errors = client.post(ADD, {**base, "record_id": other}).context["adminform"].form.errors
    assert errors == {"record_id": [f"No consent {other} of {subject_a.code}."]}
    assert not DataQuery.objects.exists()


def test_only_data_managers_and_monitors_may_raise_and_choose_among_their_subjects(world, login, subject_a,
                                                                                   subject_b):
    assert login(world.coordinator).get(ADD).status_code == 403
    choices = login(world.monitor).get(ADD).context["adminform"].form.fields["subject"].queryset
    assert list(choices) == [subject_a]
    choices = login(world.data_manager).get(ADD).context["adminform"].form.fields["subject"].queryset
    assert set(choices) == {subject_a, subject_b}


# --- open counts -----------------------------------------------------------------------------------


def test_subject_changelist_counts_open_and_answered_queries(world, login, subject_a, subject_b):
    answered, still_open, closed = (raise_on_consent(subject_a, world.data_manager) for _ in range(3))
    services.answer_query(query=answered, text="Done.", by=world.coordinator)
    services.close_query(query=closed, by=world.data_manager)
    response = login(world.data_manager).get(SUBJECTS)
    counts = {s.code: s.open_queries for s in response.context["cl"].result_list}
    assert counts == {subject_a.code: 2, subject_b.code: 0}
    assert still_open.status == DataQuery.Status.OPEN
    assert "open queries" in response.content.decode().lower()


def assert_page_queries_do_not_grow(world: Any, client: Any, path: str) -> None:
    """The page costs as many database queries with ten subjects (each with a query) as with one."""
    client.get(path)  # warm per-process caches (content types, session)

    def add(n: int) -> None:
        for _ in range(n):
            subject = consented(trial=world.trial, site=world.site_a, coordinator=world.coordinator,
                                on=days_ago(29))
            raise_on_consent(subject, world.data_manager)

    def counted() -> int:
        with CaptureQueriesContext(connection) as ctx:
            assert client.get(path).status_code == 200
        return len(ctx)

    add(1)
    one = counted()
    add(9)
    assert counted() == one


def test_subject_changelist_queries_do_not_grow_with_rows(world, login):
    assert_page_queries_do_not_grow(world, login(world.data_manager), SUBJECTS)


def test_query_changelist_queries_do_not_grow_with_rows(world, login):
    assert_page_queries_do_not_grow(world, login(world.data_manager), CHANGELIST)


def test_open_queries_by_site(world, login, subject_a, subject_b):
    for subject in (subject_a, subject_a, subject_b):
        raise_on_consent(subject, world.data_manager)
    services.answer_query(query=DataQuery.objects.filter(subject=subject_a).first(), text="Done.",
                          by=world.coordinator)
    rows = login(world.data_manager).get(BY_SITE).context["rows"]
    assert [(r["site__code"], r["open"], r["answered"], r["subjects"]) for r in rows] == [("SA", 1, 1, 1),
                                                                                         ("SB", 1, 0, 1)]
    rows = login(world.coordinator_b).get(BY_SITE).context["rows"]
    assert [(r["site__code"], r["open"]) for r in rows] == [("SB", 1)]
    assert BY_SITE in login(world.data_manager).get(CHANGELIST).content.decode()

