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
    # A site's own row belongs to no trial: this trial's data managers read its sites', not another's.
    other = SiteFactory(code="SO")
    sites = {e.record_id for e in entries_for(world.data_manager, table="trials.Site")}
    assert sites == {str(world.site_a.pk), str(world.site_b.pk)} and str(other.pk) not in sites


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
    assert entries and {e.trial_id for e in entries if e.table != "trials.Site"} == {other.pk}
    assert {e.record_id for e in entries if e.table == "trials.Site"} == {str(site.pk)}  # its own site only
    assert str(mine.pk) in {e.record_id for e in entries if e.table == "patients.Subject"}


def test_superuser_reads_everything(world, subjects):
    root = UserFactory(username="root", is_superuser=True)
    tables = {e.table for e in entries_for(root)}
    assert {"trials.Site", "patients.Subject", "trials.DoseLevel"} <= tables


@pytest.fixture
def dm_b(world: Any) -> Any:
    """A data manager bound to site B only."""
    user = UserFactory(username="dm_b")
    MembershipFactory(user=user, trial=world.trial, site=world.site_b, role=Membership.Role.DATA_MANAGER)
    return user


def test_site_bound_data_manager_reads_nothing_of_another_site(world, login, subjects, dm_b):
    site_rows = {("trials.TrialSite", str(ts.pk)): ts.site.code for ts in world.trial.trial_sites.all()}
    site_rows |= {("trials.Site", str(s.pk)): s.code for s in (world.site_a, world.site_b)}
    entries = entries_for(dm_b)
    assert {e.site_code for e in entries} == {"SB", None}
    # Their site's own design rows (its screening counter, the site itself) and the trial-level design.
    seen = {site_rows[(e.table, e.record_id)] for e in entries if (e.table, e.record_id) in site_rows}
    assert seen == {"SB"}
    tables = {e.table for e in entries}
    assert {"trials.Site", "trials.TrialSite", "trials.DoseLevel", "trials.RegimenAgent", "patients.Subject"} <= tables
    assert not [e for e in entries if e.table == "trials.Membership" and e.site_code not in ("SB", None)]

    client = login(dm_b)
    api = client.get("/api/v1/audit-events/", {"page_size": 500}).json()["results"]
    assert api and {r["site"] for r in api} == {"SB", None}
    assert client.get("/api/v1/audit-events/", {"site": "SA", "page_size": 500}).json()["results"] == []
    assert {r["site"] for r in client.get("/api/v1/audit-events/", {"site": "SB"}).json()["results"]} == {"SB"}
    trail = client.get(reverse("admin:audit_auditevent_changelist"), {"table": "trials.TrialSite"})
    assert {e.site_code for e in trail.context["page"].object_list} == {"SB"}
    assert client.get(reverse("admin:audit_auditevent_changelist"), {"site": world.site_a.pk}).status_code == 400
    rows = b"".join(client.get(reverse("admin:audit_export")).streaming_content).decode()
    assert ",SB" in rows and ",SA" not in rows and subjects["a"].code not in rows


def test_site_bound_data_manager_may_not_open_another_sites_design_rows(world, login, subjects, dm_b):
    client = login(dm_b)
    other = world.trial.trial_sites.get(site=world.site_a)
    mine = world.trial.trial_sites.get(site=world.site_b)
    history = "admin:audit_record_history"
    assert client.get(reverse(history, args=["trials.TrialSite", other.pk])).status_code == 404
    assert client.get(reverse(history, args=["trials.Site", world.site_a.pk])).status_code == 404
    assert client.get(reverse(history, args=["trials.TrialSite", mine.pk])).status_code == 200
    assert client.get(reverse(history, args=["trials.Site", world.site_b.pk])).status_code == 200
    assert client.get(reverse("admin:audit_subject_history", args=[subjects["a"].pk])).status_code == 404
