"""Who reads the audit trail: data managers (their trials), monitors (their sites), superusers. Entry
staff get 403; a record or subject outside the reader's scope is a 404, never confirmed."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse

from audit.selectors import audit_scope
from audit.tables import SUBJECT, audited_tables
from tests.audit.conftest import entries_for, screen
from tests.factories import MembershipFactory, SiteFactory, TrialSiteFactory, UserFactory, build_trial, screened
from trials.models import Membership

pytestmark = pytest.mark.django_db


@pytest.fixture
def subjects(world: Any, amended: Any) -> dict[str, Any]:
    return {"a": amended, "b": screen(world, site=world.site_b, by=world.coordinator_b)}


def pages(subject: Any) -> list[str]:
    return [
        reverse("admin:audit_auditevent_changelist"), reverse("admin:audit_export"),
        reverse("admin:audit_record_history", args=["patients.Subject", subject.pk]),
        reverse("admin:audit_subject_history", args=[subject.pk]),
    ]


@pytest.mark.parametrize("role", ["coordinator", "investigator", "coordinator_b"])
def test_entry_staff_may_not_read_the_audit_trail(world, login, subjects, role):
    user = getattr(world, role)
    assert audit_scope(user) is None
    client = login(user)
    for url in pages(subjects["a"]):
        assert client.get(url).status_code == 403, url
    response = client.get("/api/v1/audit-events/")
    assert response.status_code == 403 and response.json()["code"] == "permission_denied"
    assert "Audit trail" not in client.get(reverse("admin:index")).content.decode()


def test_site_b_monitor_sees_nothing_of_site_a(world, login, subjects, monitor_b):
    entries = entries_for(monitor_b)
    assert entries and {e.site_code for e in entries} == {"SB"}
    assert {audited_tables()[e.table].kind for e in entries} == {SUBJECT}  # no design records either
    client = login(monitor_b)
    a = subjects["a"]
    assert client.get(reverse("admin:audit_record_history", args=["patients.Subject", a.pk])).status_code == 404
    assert client.get(reverse("admin:audit_subject_history", args=[a.pk])).status_code == 404
    html = client.get(reverse("admin:audit_auditevent_changelist")).content.decode()
    assert a.code not in html and subjects["b"].code in html
    assert "coord_a" not in html  # site A's staff are not even offered in the user filter
    response = client.get(reverse("admin:audit_auditevent_changelist"), {"site": world.site_a.pk})
    assert response.status_code == 400  # not a site they may choose
    rows = b"".join(client.get(reverse("admin:audit_export")).streaming_content).decode()
    assert a.code not in rows and ",SA" not in rows and ",SB" in rows
    assert {e["site"] for e in client.get("/api/v1/audit-events/").json()["results"]} == {"SB"}


def test_site_a_monitor_reads_site_a_subject_records_only(world, subjects):
    entries = entries_for(world.monitor)
    assert {e.site_code for e in entries} == {"SA"}
    assert {e.table for e in entries} == {"patients.Subject", "patients.SubjectTransition"}


def test_data_manager_reads_both_sites_and_the_design(world, subjects):
    entries = entries_for(world.data_manager)
    assert {e.site_code for e in entries} == {"SA", "SB", None}
    tables = {e.table for e in entries}
    assert {"trials.DoseLevel", "trials.RegimenAgent", "trials.Membership", "trials.TrialSite"} <= tables
    assert "trials.Site" not in tables  # sites belong to no trial: superusers only


def test_other_trials_data_manager_sees_nothing_of_this_trial(world, subjects):
    other = build_trial()
    site = SiteFactory(code="SO")
    TrialSiteFactory(trial=other, site=site)
    dm = UserFactory(username="dm_other")
    MembershipFactory(user=dm, trial=other, site=None, role=Membership.Role.DATA_MANAGER)
    coordinator = UserFactory(username="coord_other")
    MembershipFactory(user=coordinator, trial=other, site=site, role=Membership.Role.COORDINATOR)
    mine = screened(trial=other, site=site, coordinator=coordinator)
    entries = entries_for(dm)
    assert entries and {e.trial_id for e in entries} == {other.pk}
    assert str(mine.pk) in {e.record_id for e in entries if e.table == "patients.Subject"}


def test_superuser_reads_everything(world, subjects):
    root = UserFactory(username="root", is_superuser=True)
    tables = {e.table for e in entries_for(root)}
    assert {"trials.Site", "patients.Subject", "trials.DoseLevel"} <= tables
