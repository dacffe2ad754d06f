"""Times in the admin are entered and shown on the record's site clock, labelled with the site's zone.

The factories' sites are in Asia/Shanghai (UTC+08:00); site B is moved to UTC where a test needs two
zones. A coordinator whose sites share one zone works in it (middleware); a user across zones (a data
manager, a coordinator of two sites) sees each record in its own site's zone, and a time typed on an
add form is read on the chosen subject's site clock.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.urls import reverse

from config import display
from patients.models import AdverseEvent, ConcomitantMedication, CrsAssessment, Infusion
from patients.services import safety
from tests.admin_forms import change_form_data
from tests.factories import MembershipFactory, days_ago, infused_subject, lymphodepleted_subject
from tests.patients.test_admin_course import add_form_data, change_url, event_data, infusion_data, site_a
from trials.models import Membership

pytestmark = pytest.mark.django_db

SHANGHAI, UTC = ZoneInfo("Asia/Shanghai"), ZoneInfo("UTC")
SHANGHAI_LABEL, UTC_LABEL = "Asia/Shanghai, UTC+08:00", "UTC, UTC+00:00"
SHANGHAI_OFFSET, UTC_OFFSET = "(UTC+08:00)", "(UTC+00:00)"  # beside each time shown (config.display)


def local(day: dt.date, hour: int, zone: ZoneInfo = SHANGHAI, minute: int = 0) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(hour, minute), tzinfo=zone)


def typed(name: str, day: dt.date, clock: str) -> dict[str, str]:
    """What a coordinator types in the admin's split date/time widget."""
    return {f"{name}_0": day.isoformat(), f"{name}_1": clock}


def medication_data(client: Any, subject: Any, day: dt.date, clock: str) -> dict[str, Any]:
    return add_form_data(client, "concomitantmedication", subject=subject.pk, drug="tocilizumab", dose="8",
                         dose_unit="mg/kg", route="iv", **typed("given_at", day, clock))


def two_zone_world(world: Any) -> Any:
    world.site_b.time_zone = "UTC"
    world.site_b.save()
    return world


def site_b_subject(world: Any) -> Any:
    return infused_subject(coordinator=world.coordinator_b, investigator=world.investigator_b, trial=world.trial,
                           site=world.site_b)


# --- a coordinator of a Beijing site ------------------------------------------------------------------


def test_infusion_typed_at_four_is_four_in_beijing_and_its_local_date(world, login):
    subject = site_a(world, lymphodepleted_subject)
    client = login(world.coordinator)
    day0 = days_ago(5)
    response = client.post(reverse("admin:patients_infusion_add"),
                           {**infusion_data(client, subject), **typed("infused_at", day0, "04:00")})
    assert response.status_code == 302, response.context and response.context["adminform"].form.errors
    infusion = Infusion.objects.get(subject=subject)
    assert infusion.infused_at == local(day0, 4)
    assert infusion.infused_at.astimezone(dt.UTC) == local(day0 - dt.timedelta(days=1), 20, UTC)
    assert infusion.infused_on == day0  # the Beijing date, not the UTC one

    listed = client.get(reverse("admin:patients_infusion_changelist")).content.decode()
    assert f"{day0} 04:00 {SHANGHAI_OFFSET}" in listed
    page = client.get(change_url(infusion)).content.decode()
    assert "Times on this page are on the site's clock" in page and SHANGHAI_LABEL in page
    assert f"{day0} 04:00 {SHANGHAI_OFFSET}" in page  # the read-only value, on the site's clock


def test_medication_typed_at_four_is_saved_shown_and_listed_at_four_in_beijing(world, login):
    subject = site_a(world)
    client = login(world.coordinator)
    day = days_ago(2)
    add_page = client.get(reverse("admin:patients_concomitantmedication_add")).content.decode()
    assert "in the site's time zone (Asia/Shanghai)" in add_page  # the help text names the zone

    response = client.post(reverse("admin:patients_concomitantmedication_add"),
                           medication_data(client, subject, day, "04:00"))
    assert response.status_code == 302, response.context and response.context["adminform"].form.errors
    medication = ConcomitantMedication.objects.get(subject=subject)
    assert medication.given_at == local(day, 4) == local(day - dt.timedelta(days=1), 20, UTC)

    page = client.get(change_url(medication))
    assert page.status_code == 200
    html = page.content.decode()
    assert 'name="given_at_1" value="04:00:00"' in html and f'name="given_at_0" value="{day:%d/%m/%Y}"' in html
    assert f"Site time: {SHANGHAI_LABEL}." in html
    listed = client.get(reverse("admin:patients_concomitantmedication_changelist")).content.decode()
    assert "Given at (site time)" in listed and f"{day} 04:00 {SHANGHAI_OFFSET}" in listed


def test_unchanged_time_on_a_correction_is_not_a_change(world, login):
    subject = site_a(world)
    client = login(world.coordinator)
    medication = safety.record_medication(subject=subject, drug="tocilizumab", dose=Decimal("8"), dose_unit="mg/kg",
                                          route="iv", given_at=local(days_ago(2), 4), by=world.coordinator)
    page = client.get(change_url(medication))
    as_shown = {"given_at_0": f"{days_ago(2):%d/%m/%Y}", "given_at_1": "04:00:00"}  # what the page rendered
    assert f'value="{as_shown["given_at_0"]}"' in page.content.decode()
    response = client.post(change_url(medication), change_form_data(page, dose="4", reason_for_change="Typo",
                                                                    **as_shown))
    assert response.status_code == 302, response.context and response.context["adminform"].form.errors
    medication.refresh_from_db()
    assert (medication.dose, medication.given_at) == (Decimal("4"), local(days_ago(2), 4))


def test_sae_awareness_and_report_due_time_are_on_the_sites_clock(world, login):
    subject = site_a(world)
    client = login(world.coordinator)
    day = days_ago(3)
    data = event_data(client, subject, serious="on", sae_hospitalisation="on", **typed("site_aware_at", day, "00:30"))
    response = client.post(reverse("admin:patients_adverseevent_add"), data)
    assert response.status_code == 302, response.context and response.context["adminform"].form.errors
    event = AdverseEvent.objects.get(subject=subject)
    assert event.site_aware_at == local(day, 0, minute=30)
    assert event.report_due_at == local(day + dt.timedelta(days=1), 0, minute=30)
    listed = client.get(reverse("admin:patients_adverseevent_changelist")).content.decode()
    assert f"{day + dt.timedelta(days=1)} 00:30 {SHANGHAI_OFFSET}" in listed


def test_crs_assessment_typed_on_the_event_page_is_read_on_the_sites_clock(world, login):
    subject = site_a(world)
    client = login(world.coordinator)
    data = event_data(client, subject, category="crs", term="Cytokine release syndrome", onset_on=days_ago(4),
                      grade=None)
    assert client.post(reverse("admin:patients_adverseevent_add"), data).status_code == 302
    event = AdverseEvent.objects.get(subject=subject)
    page = client.get(change_url(event))
    (inline,) = page.context["inline_admin_formsets"]
    prefix = inline.formset.prefix
    post = {f"{prefix}-TOTAL_FORMS": "1", f"{prefix}-INITIAL_FORMS": "0", f"{prefix}-MIN_NUM_FORMS": "0",
            f"{prefix}-MAX_NUM_FORMS": "1000", f"{prefix}-0-o2_device": "none", f"{prefix}-0-max_temp_c": "38.5",
            **{f"{prefix}-0-{k}": v for k, v in typed("assessed_at", days_ago(4), "04:00").items()}}
    response = client.post(change_url(event), {**change_form_data(page), **post})
    assert response.status_code == 302, response.context and response.context["inline_admin_formsets"][0].formset.errors
    assert CrsAssessment.objects.get(event=event).assessed_at == local(days_ago(4), 4)


# --- users across several zones -----------------------------------------------------------------------


def test_data_manager_across_zones_sees_each_record_on_its_own_sites_clock(world, login):
    two_zone_world(world)
    moment = local(days_ago(2), 4, UTC)  # 04:00 UTC: 12:00 in Beijing
    for subject, by in ((site_a(world), world.coordinator), (site_b_subject(world), world.coordinator_b)):
        safety.record_medication(subject=subject, drug="tocilizumab", dose=Decimal("8"), dose_unit="mg/kg",
                                 route="iv", given_at=moment, by=by)
    client = login(world.data_manager)
    listed = client.get(reverse("admin:patients_concomitantmedication_changelist")).content.decode()
    assert f"{days_ago(2)} 12:00 {SHANGHAI_OFFSET}" in listed
    assert f"{days_ago(2)} 04:00 {UTC_OFFSET}" in listed

    at_a = ConcomitantMedication.objects.get(subject__site=world.site_a)
    at_b = ConcomitantMedication.objects.get(subject__site=world.site_b)
    page_a = client.get(change_url(at_a)).content.decode()
    page_b = client.get(change_url(at_b)).content.decode()
    # Read-only for a data manager: Django renders it, in the same format as the lists.
    assert SHANGHAI_LABEL in page_a and f"{days_ago(2)} 12:00 {SHANGHAI_OFFSET}" in page_a
    assert UTC_LABEL in page_b and f"{days_ago(2)} 04:00 {UTC_OFFSET}" in page_b


def test_coordinator_of_two_zones_types_each_subjects_site_time(world, login):
    two_zone_world(world)
    MembershipFactory(user=world.coordinator, trial=world.trial, site=world.site_b, role=Membership.Role.COORDINATOR)
    subject_a, subject_b = site_a(world), site_b_subject(world)
    client = login(world.coordinator)
    day = days_ago(2)
    for subject in (subject_a, subject_b):
        response = client.post(reverse("admin:patients_concomitantmedication_add"),
                               medication_data(client, subject, day, "04:00"))
        assert response.status_code == 302, response.context and response.context["adminform"].form.errors
    assert ConcomitantMedication.objects.get(subject=subject_a).given_at == local(day, 4, SHANGHAI)
    assert ConcomitantMedication.objects.get(subject=subject_b).given_at == local(day, 4, UTC)
    add_page = client.get(reverse("admin:patients_concomitantmedication_add")).content.decode()
    assert "Time on the subject's site clock, in the site's time zone." in add_page


def test_subject_page_shows_status_history_on_the_sites_clock(world, login):
    two_zone_world(world)
    subject = site_b_subject(world)
    client = login(world.data_manager)
    html = client.get(reverse("admin:patients_subject_change", args=[subject.pk])).content.decode()
    assert UTC_LABEL in html
    listed = client.get(reverse("admin:patients_subjecttransition_changelist")).content.decode()
    assert "Recorded at (site time)" in listed and f" {UTC_OFFSET}</td>" in listed
    assert f" {SHANGHAI_OFFSET}</td>" not in listed


def test_subject_pages_status_history_writes_each_time_with_its_offset(world, login):
    subject = site_a(world, lymphodepleted_subject)
    html = login(world.coordinator).get(reverse("admin:patients_subject_change", args=[subject.pk])).content.decode()
    recorded = subject.transitions.latest("recorded_at").recorded_at
    assert display.date_time(recorded, SHANGHAI) in html  # "... (UTC+08:00)", as every time is written
    confirmed = subject.eligibility_assessments.get().confirmed_at
    assert f"at {display.date_time(confirmed, SHANGHAI)}" in html
    assert "(UTC+0800)" not in html


def test_locks_are_listed_and_shown_on_their_sites_clock(world, login):
    from locking.models import Lock
    from locking.services import lock_scope

    two_zone_world(world)
    lock_scope(trial=world.trial, level="freeze", reason="Interim analysis", by=world.data_manager, site=world.site_a)
    lock_scope(trial=world.trial, level="freeze", reason="Interim analysis", by=world.data_manager, site=world.site_b)
    client = login(world.data_manager)
    listed = client.get(reverse("admin:locking_lock_changelist")).content.decode()
    assert "Locked at (site time)" in listed
    assert f" {SHANGHAI_OFFSET}</td>" in listed and f" {UTC_OFFSET}</td>" in listed
    at_a = Lock.objects.get(site=world.site_a)
    page = client.get(reverse("admin:locking_lock_change", args=[at_a.pk])).content.decode()
    assert f"Times on this page are on the site's clock: <strong>{SHANGHAI_LABEL}</strong>" in page
