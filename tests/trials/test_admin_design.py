"""Protocol design in the admin: every member of a trial reads it, its data managers edit it, and
the members of another trial do not find it at all (404)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from django.urls import reverse

from tests.admin_forms import change_form_data
from tests.factories import MembershipFactory, SiteFactory, TrialSiteFactory, UserFactory, build_trial
from trials.models import Cohort, LymphodepletionRegimen, Membership, Product, Site, Trial

pytestmark = pytest.mark.django_db

R = Membership.Role
READERS = ["coordinator", "investigator", "monitor", "coordinator_b"]



@dataclass
class Other:
    """A second trial at its own site C, with a trial-wide data manager and a site-C coordinator."""

    trial: Trial
    site: Site
    data_manager: Any
    coordinator: Any


@pytest.fixture
def other(world: Any) -> Other:
    trial = build_trial()
    site = SiteFactory(code="SC")
    TrialSiteFactory(trial=trial, site=site)
    data_manager, coordinator = UserFactory(), UserFactory()
    MembershipFactory(user=data_manager, trial=trial, site=None, role=R.DATA_MANAGER)
    MembershipFactory(user=coordinator, trial=trial, site=site, role=R.COORDINATOR)
    return Other(trial=trial, site=site, data_manager=data_manager, coordinator=coordinator)


def admin_url(model: Any, view: str, *args: Any) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


def listed(client: Any, model: Any) -> set[int]:
    response = client.get(admin_url(model, "changelist"))
    assert response.status_code == 200
    return {obj.pk for obj in response.context["cl"].result_list}


# --- the trial page ---------------------------------------------------------------------------------


def test_data_manager_changes_their_trials_design(world: Any, login: Any) -> None:
    client = login(world.data_manager)
    page = client.get(admin_url(Trial, "change", world.trial.pk))
    assert page.status_code == 200
    assert page.context["has_change_permission"] is True
    assert 'name="_save"' in page.content.decode()

    adult = world.trial.cohorts.get(code="ADULT")
    data = change_form_data(page, title="Revised CD19 CAR-T trial")
    cohort_row = next(key[: -len("-id")] for key, value in data.items()
                      if key.startswith("cohorts-") and key.endswith("-id") and value == adult.pk)
    data[f"{cohort_row}-name"] = "Adults 18-70"
    response = client.post(admin_url(Trial, "change", world.trial.pk), data)

    assert response.status_code == 302, response.context["adminform"].form.errors
    world.trial.refresh_from_db()
    adult.refresh_from_db()
    assert (world.trial.title, adult.name) == ("Revised CD19 CAR-T trial", "Adults 18-70")


@pytest.mark.parametrize("role", READERS)
def test_site_staff_read_the_trial_design_without_a_save_button(world: Any, login: Any, role: str) -> None:
    response = login(getattr(world, role)).get(admin_url(Trial, "change", world.trial.pk))
    assert response.status_code == 200
    assert response.context["has_change_permission"] is False
    assert 'name="_save"' not in response.content.decode()
    assert world.trial.title in response.content.decode()


@pytest.mark.parametrize("role", READERS)
def test_site_staff_cannot_change_the_trial_design(world: Any, login: Any, role: str) -> None:
    # The same complete POST that saves for the data manager is refused for site staff.
    page = login(world.data_manager).get(admin_url(Trial, "change", world.trial.pk))
    data = change_form_data(page, title="Changed by site staff")
    response = login(getattr(world, role)).post(admin_url(Trial, "change", world.trial.pk), data)
    assert response.status_code == 403
    world.trial.refresh_from_db()
    assert world.trial.title != "Changed by site staff"


def test_another_trials_data_manager_does_not_find_this_trial(world: Any, other: Other, login: Any) -> None:
    client = login(other.data_manager)
    own = client.get(admin_url(Trial, "change", other.trial.pk))
    assert own.status_code == 200 and own.context["has_change_permission"] is True

    assert listed(client, Trial) == {other.trial.pk}
    page = login(world.data_manager).get(admin_url(Trial, "change", world.trial.pk))
    data = change_form_data(page, title="Changed from another trial")
    for view in ("change", "history", "delete"):
        assert client.get(admin_url(Trial, view, world.trial.pk)).status_code == 404, view
    assert client.post(admin_url(Trial, "change", world.trial.pk), data).status_code == 404
    world.trial.refresh_from_db()
    assert world.trial.title != "Changed from another trial"


def test_trial_search_does_not_find_another_trial(world: Any, other: Other, login: Any) -> None:
    client = login(other.data_manager)
    response = client.get(admin_url(Trial, "changelist"), {"q": world.trial.code})
    assert response.status_code == 200
    assert response.context["cl"].result_count == 0
    response = client.get(admin_url(Trial, "changelist"), {"q": other.trial.code})
    assert {t.pk for t in response.context["cl"].result_list} == {other.trial.pk}


def test_nobody_but_a_superuser_adds_a_trial(world: Any, login: Any) -> None:
    assert login(world.data_manager).get(admin_url(Trial, "add")).status_code == 403
    assert login(world.coordinator).get(admin_url(Trial, "add")).status_code == 403


# --- other design records ---------------------------------------------------------------------------


@pytest.mark.parametrize("model", [Product, LymphodepletionRegimen, Membership], ids=lambda m: m.__name__)
def test_design_lists_and_pages_of_another_trial_are_hidden(world: Any, other: Other, login: Any,
                                                             model: Any) -> None:
    client = login(other.data_manager)
    theirs = set(model.objects.filter(trial=other.trial).values_list("pk", flat=True))
    ours = set(model.objects.filter(trial=world.trial).values_list("pk", flat=True))
    assert theirs and ours
    assert listed(client, model) == theirs
    own_pk = next(iter(theirs))
    assert client.get(admin_url(model, "change", own_pk)).status_code == 200
    for pk in ours:
        assert client.get(admin_url(model, "change", pk)).status_code == 404
        assert client.get(admin_url(model, "delete", pk)).status_code == 404


@pytest.mark.parametrize("model", [Product, LymphodepletionRegimen, Membership], ids=lambda m: m.__name__)
def test_design_add_forms_offer_only_the_trials_a_data_manager_designs(world: Any, other: Other, login: Any,
                                                                        model: Any) -> None:
    response = login(other.data_manager).get(admin_url(model, "add"))
    assert response.status_code == 200
    assert list(response.context["adminform"].form.fields["trial"].queryset) == [other.trial]


def test_membership_form_offers_only_the_designed_trials_sites(world: Any, other: Other, login: Any) -> None:
    response = login(other.data_manager).get(admin_url(Membership, "add"))
    assert list(response.context["adminform"].form.fields["site"].queryset) == [other.site]


def test_a_data_manager_cannot_grant_access_to_another_trial(world: Any, other: Other, login: Any) -> None:
    newcomer = UserFactory()
    post = {"user": newcomer.pk, "role": R.DATA_MANAGER, "trial": world.trial.pk, "site": "", "active": "on"}
    response = login(other.data_manager).post(admin_url(Membership, "add"), post)
    assert response.status_code == 200
    assert "trial" in response.context["adminform"].form.errors
    assert not Membership.objects.filter(user=newcomer).exists()

    post["trial"] = other.trial.pk  # the control: their own trial is accepted
    assert login(other.data_manager).post(admin_url(Membership, "add"), post).status_code == 302
    assert Membership.objects.filter(user=newcomer, trial=other.trial).exists()


@pytest.mark.parametrize("role", READERS)
def test_site_staff_read_but_do_not_add_or_change_design_records(world: Any, login: Any, role: str) -> None:
    client = login(getattr(world, role))
    product = world.trial.products.get()
    assert client.get(admin_url(Product, "add")).status_code == 403
    response = client.get(admin_url(Product, "change", product.pk))
    assert response.status_code == 200
    assert response.context["has_change_permission"] is False
    assert client.post(admin_url(Product, "change", product.pk), {"name": "Renamed"}).status_code == 403
    product.refresh_from_db()
    assert product.name == "hCART19"


def test_sites_of_another_trial_are_hidden(world: Any, other: Other, login: Any) -> None:
    client = login(other.data_manager)
    assert listed(client, Site) == {other.site.pk}
    assert client.get(admin_url(Site, "change", other.site.pk)).status_code == 200
    for site in (world.site_a, world.site_b):
        assert client.get(admin_url(Site, "change", site.pk)).status_code == 404


def test_cohorts_of_another_trial_are_not_editable_through_its_trial_page(world: Any, other: Other,
                                                                          login: Any) -> None:
    """Inline rows belong to the parent: posting this trial's cohort ids under the other trial changes nothing."""
    client = login(other.data_manager)
    page = client.get(admin_url(Trial, "change", other.trial.pk))
    data = change_form_data(page)
    ours = world.trial.cohorts.get(code="ADULT")
    theirs = other.trial.cohorts.get(code="ADULT")
    row = next(key[: -len("-id")] for key, value in data.items()
               if key.startswith("cohorts-") and key.endswith("-id") and value == theirs.pk)
    data[f"{row}-id"] = ours.pk
    data[f"{row}-name"] = "Hijacked"
    response = client.post(admin_url(Trial, "change", other.trial.pk), data)
    assert response.status_code in (200, 302)  # refused, or the row outside the trial's cohorts is skipped
    ours.refresh_from_db()
    theirs.refresh_from_db()
    assert (ours.name, ours.trial_id) == ("Adult", world.trial.pk)
    assert theirs.name == "Adult"
    assert Cohort.objects.filter(name="Hijacked").count() == 0
