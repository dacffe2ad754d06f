"""Expedited reporting of serious adverse events: the due time (the trial's SAE reporting hours, 24 by default,
after the site learned of the event), the reports sent (initial, follow-up; sponsor, ethics, regulator), every
refusal, the overdue flag (subject page, adverse-event list filter, the per-site list, the API filter) and the
audit trail."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from pghistory.models import Events

from config.errors import DomainError
from patients.models import AdverseEvent, SaeReport
from patients.selectors import list_overdue_saes
from patients.services import safety
from tests.admin_forms import change_form_data
from tests.api.support import api_client, post_json
from tests.factories import at, days_ago, infused_subject

pytestmark = pytest.mark.django_db

EVENTS = "/api/v1/adverse-events/"


def subject_at(world: Any, site: Any = None) -> Any:
    coordinator, investigator = ((world.coordinator, world.investigator) if site in (None, world.site_a)
                                 else (world.coordinator_b, world.investigator_b))
    return infused_subject(coordinator=coordinator, investigator=investigator, trial=world.trial,
                           site=site or world.site_a)


def sae(subject: Any, by: Any, *, aware: dt.datetime | None = None, serious: bool = True) -> AdverseEvent:
    return safety.record_adverse_event(subject=subject, by=by, data=safety.EventInput(
        category="ctcae", term="Febrile neutropenia", grade=3, onset_on=days_ago(4), related_to_product="possible",
        related_to_lymphodepletion="unlikely", serious=serious, sae_hospitalisation=serious,
        site_aware_at=(aware or at(days_ago(4))) if serious else None))


def report(event: AdverseEvent, by: Any, *, kind: str = "initial", recipient: str = "sponsor",
           sent_at: dt.datetime | None = None) -> SaeReport:
    return safety.record_sae_report(event=event, kind=kind, recipient=recipient,
                                    sent_at=sent_at or at(days_ago(4), 12), by=by)


def refused(code: str, field: str | None, run: Any) -> None:
    before = SaeReport.objects.count()
    with pytest.raises(DomainError) as err:
        run()
    assert (err.value.code, err.value.field) == (code, field), err.value.message
    assert SaeReport.objects.count() == before


# --- due time and the reports ------------------------------------------------------------------------


def test_the_report_is_due_the_trials_sae_hours_after_awareness(world):
    world.trial.sae_report_hours = 48
    world.trial.save()
    aware = at(days_ago(4), 9)
    event = sae(subject_at(world), world.coordinator, aware=aware)
    assert event.report_due_at == aware + dt.timedelta(hours=48)


def test_an_sae_is_overdue_until_its_initial_report_to_the_sponsor_is_recorded(world):
    event = sae(subject_at(world), world.coordinator)  # aware four days ago: due three days ago
    assert list(list_overdue_saes(user=world.coordinator)) == [event]
    report(event, world.coordinator, recipient="ethics")  # another recipient does not clear it
    assert list(list_overdue_saes(user=world.coordinator)) == [event]
    sent = report(event, world.coordinator, sent_at=at(days_ago(2)))  # late, but sent
    assert (sent.kind, sent.recipient, sent.recorded_by) == ("initial", "sponsor", world.coordinator)
    assert list(list_overdue_saes(user=world.coordinator)) == []


def test_an_sae_not_yet_due_is_not_overdue(world):
    event = sae(subject_at(world), world.coordinator, aware=timezone.now() - dt.timedelta(hours=2))
    assert event.report_due_at > timezone.now()
    assert list(list_overdue_saes(user=world.coordinator)) == []


def test_a_follow_up_comes_after_the_initial_report(world):
    event = sae(subject_at(world), world.coordinator)
    refused("initial_report_missing", "kind", lambda: report(event, world.coordinator, kind="follow_up"))
    report(event, world.coordinator, sent_at=at(days_ago(3)))
    refused("initial_report_missing", "kind",
            lambda: report(event, world.coordinator, kind="follow_up", sent_at=at(days_ago(4), 12)))
    follow_up = report(event, world.coordinator, kind="follow_up", sent_at=at(days_ago(1)))
    assert follow_up.kind == "follow_up"


def test_one_initial_report_per_recipient(world):
    event = sae(subject_at(world), world.coordinator)
    report(event, world.coordinator)
    refused("initial_report_exists", "kind", lambda: report(event, world.coordinator, sent_at=at(days_ago(3))))


def test_a_report_is_of_a_serious_event_sent_after_awareness_and_not_in_the_future(world):
    subject = subject_at(world)
    refused("event_not_serious", None, lambda: report(sae(subject, world.coordinator, serious=False),
                                                      world.coordinator))
    event = sae(subject, world.coordinator, aware=at(days_ago(4), 10))
    refused("report_before_awareness", "sent_at", lambda: report(event, world.coordinator,
                                                                 sent_at=at(days_ago(4), 9)))
    refused("date_in_future", "sent_at", lambda: report(event, world.coordinator,
                                                        sent_at=timezone.now() + dt.timedelta(days=2)))


def test_site_b_cannot_record_a_report_of_site_a(world):
    event = sae(subject_at(world), world.coordinator)
    refused("not_permitted", None, lambda: report(event, world.coordinator_b))


def test_reports_are_in_the_audit_trail(world):
    sent = report(sae(subject_at(world), world.coordinator), world.coordinator)
    [inserted] = Events.objects.filter(pgh_model="patients.SaeReportEvent", pgh_obj_id=str(sent.pk))
    assert inserted.pgh_label == "insert" and inserted.pgh_data["recipient"] == "sponsor"


# --- where the overdue SAEs show ------------------------------------------------------------------


def test_overdue_list_is_scoped_and_in_fixed_queries(world):
    own = [sae(subject_at(world), world.coordinator) for _ in range(2)]
    sae(subject_at(world, world.site_b), world.coordinator_b)
    with CaptureQueriesContext(connection) as two:
        rows = [(e.subject.code, e.subject.site.code, e.term) for e in list_overdue_saes(user=world.coordinator)]
    assert [pk for pk in list_overdue_saes(user=world.coordinator).values_list("pk", flat=True)] == [
        e.pk for e in own]
    assert len(rows) == 2
    for _ in range(8):
        sae(subject_at(world), world.coordinator)
    with CaptureQueriesContext(connection) as ten:
        rows = [(e.subject.code, e.subject.site.code, e.term) for e in list_overdue_saes(user=world.coordinator)]
    assert len(rows) == 10 and len(ten) == len(two)


def test_the_subject_page_flags_an_overdue_sae(world, login):
    subject = subject_at(world)
    client = login(world.coordinator)
    url = reverse("admin:patients_subject_change", args=[subject.pk])
    assert 'id="sae-overdue"' not in client.get(url).content.decode()
    event = sae(subject, world.coordinator)
    page = client.get(url).content.decode()
    assert 'id="sae-overdue"' in page and "Febrile neutropenia" in page
    report(event, world.coordinator)
    assert 'id="sae-overdue"' not in client.get(url).content.decode()


def test_the_adverse_event_list_filters_overdue_sae_reports(world, login):
    subject = subject_at(world)
    overdue = sae(subject, world.coordinator)
    sent = sae(subject, world.coordinator)
    report(sent, world.coordinator)
    sae(subject, world.coordinator, serious=False)
    response = login(world.coordinator).get(reverse("admin:patients_adverseevent_changelist"),
                                            {"sae_report": "overdue"})
    assert response.status_code == 200
    assert [e.pk for e in response.context["cl"].result_list] == [overdue.pk]
    assert "SAE report overdue" in response.content.decode()


def test_the_per_site_list_shows_only_the_users_sites(world, login):
    own = sae(subject_at(world), world.coordinator)
    other = sae(subject_at(world, world.site_b), world.coordinator_b)
    response = login(world.coordinator).get(reverse("admin:patients_adverseevent_sae_overdue"))
    assert response.status_code == 200
    assert [(site.code, [e.pk for e in events]) for site, events in response.context["by_site"].items()] == [
        ("SA", [own.pk])]
    assert other.subject.code not in response.content.decode()
    response = login(world.data_manager).get(reverse("admin:patients_adverseevent_sae_overdue"))
    assert [site.code for site in response.context["by_site"]] == ["SA", "SB"]


def test_a_report_entered_on_the_event_page_is_saved_and_a_refusal_shows_on_the_field(world, login):
    event = sae(subject_at(world), world.coordinator, aware=at(days_ago(4), 10))
    client = login(world.coordinator)
    url = reverse("admin:patients_adverseevent_change", args=[event.pk])
    page = client.get(url)
    [inline] = [i for i in page.context["inline_admin_formsets"] if i.formset.model is SaeReport]
    prefix = inline.formset.prefix

    def post(sent: dt.datetime) -> Any:
        local = sent.astimezone(world.site_a.tzinfo)
        row = {f"{prefix}-TOTAL_FORMS": "1", f"{prefix}-INITIAL_FORMS": "0", f"{prefix}-0-kind": "initial",
               f"{prefix}-0-recipient": "sponsor", f"{prefix}-0-sent_at_0": local.strftime("%Y-%m-%d"),
               f"{prefix}-0-sent_at_1": local.strftime("%H:%M:%S"), f"{prefix}-0-reference": "SP-0001"}
        aware = event.site_aware_at.astimezone(world.site_a.tzinfo)  # the split widget's two inputs, site clock
        shown = {"site_aware_at_0": aware.strftime("%Y-%m-%d"), "site_aware_at_1": aware.strftime("%H:%M:%S")}
        return client.post(url, {**change_form_data(page), **shown, **row})

    response = post(at(days_ago(4), 9))
    assert response.status_code == 200
    [form] = [i for i in response.context["inline_admin_formsets"] if i.formset.model is SaeReport][0].formset.forms
    assert any("cannot precede the site's awareness" in e for e in form.errors.get("sent_at", [])), (
        form.errors, response.context["adminform"].form.errors)
    assert form["reference"].value() == "SP-0001"  # what was typed is kept
    assert not SaeReport.objects.exists()
    assert post(at(days_ago(4), 12)).status_code == 302
    saved = SaeReport.objects.get()
    assert (saved.sent_at, saved.reference, saved.recorded_by) == (at(days_ago(4), 12), "SP-0001", world.coordinator)


# --- the API ----------------------------------------------------------------------------------------


def test_the_api_records_a_report_and_refuses_with_the_field(world):
    event = sae(subject_at(world), world.coordinator, aware=at(days_ago(4), 10))
    client = api_client(world.coordinator)
    url = f"{EVENTS}{event.pk}/sae-reports/"
    early = post_json(client, url, {"kind": "initial", "recipient": "sponsor",
                                    "sent_at": at(days_ago(4), 9).isoformat()})
    assert early.status_code == 400
    assert early.json()["code"] == "report_before_awareness" and "sent_at" in early.json()["field_errors"]
    created = post_json(client, url, {"kind": "initial", "recipient": "sponsor",
                                      "sent_at": at(days_ago(4), 12).isoformat(), "reference": "SP-1"})
    assert created.status_code == 201, created.json()
    assert created.json()["event"] == event.pk and created.json()["recipient"] == "sponsor"
    again = post_json(client, url, {"kind": "initial", "recipient": "sponsor",
                                    "sent_at": at(days_ago(3)).isoformat()})
    assert (again.status_code, again.json()["code"]) == (409, "initial_report_exists")


def test_the_api_refuses_a_report_of_a_non_serious_event_and_hides_other_sites(world):
    mild = sae(subject_at(world), world.coordinator, serious=False)
    client = api_client(world.coordinator)
    body = {"kind": "initial", "recipient": "sponsor", "sent_at": at(days_ago(3)).isoformat()}
    response = post_json(client, f"{EVENTS}{mild.pk}/sae-reports/", body)
    assert (response.status_code, response.json()["code"]) == (409, "event_not_serious")
    other = sae(subject_at(world, world.site_b), world.coordinator_b)
    assert post_json(client, f"{EVENTS}{other.pk}/sae-reports/", body).status_code == 404


@pytest.mark.parametrize("rows", [1, 10])
def test_the_api_lists_overdue_saes_in_fixed_queries(world, rows):
    subject = subject_at(world)
    overdue = [sae(subject, world.coordinator) for _ in range(rows)]
    report(sae(subject, world.coordinator), world.coordinator)
    client = api_client(world.coordinator)
    client.get(EVENTS)  # warm up the session
    with CaptureQueriesContext(connection) as queries:
        response = client.get(EVENTS, {"sae_report_overdue": "true"})
    assert response.status_code == 200
    assert [row["id"] for row in response.json()["results"]] == [e.pk for e in overdue]
    assert len(queries) == 5  # session, user, memberships, the count and the page
