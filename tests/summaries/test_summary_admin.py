"""The admin summary page of a trial: linked from the trial's page, scoped to the user's sites, with its plots
rendered as SVG and PNG."""

from __future__ import annotations

import pytest

from tests.summaries.conftest import treated

pytestmark = pytest.mark.django_db


@pytest.fixture
def two_sites(trial_with_d12):
    world = trial_with_d12
    mine = [treated(world, site=world.site_a, coordinator=world.coordinator, investigator=world.investigator,
                    number=f"A{n}") for n in range(2)]
    theirs = treated(world, site=world.site_b, coordinator=world.coordinator_b, investigator=world.investigator_b,
                     number="B1")
    return world, mine, theirs


def page_url(world, suffix: str = "") -> str:
    return f"/admin/trials/trial/{world.trial.pk}/summary/{suffix}"


def test_the_trial_page_links_to_its_summary(two_sites, login):
    world, _mine, _theirs = two_sites
    page = login(world.data_manager).get(f"/admin/trials/trial/{world.trial.pk}/change/")
    assert page.status_code == 200
    assert page_url(world) in page.content.decode()


def test_a_site_coordinator_sees_only_the_sites_subjects(two_sites, login):
    world, mine, theirs = two_sites
    page = login(world.coordinator).get(page_url(world), {"course": "1"})
    assert page.status_code == 200
    content = page.content.decode()
    assert all(s.code in content for s in mine) and theirs.code not in content
    assert "2 subjects at your sites" in content
    for name in ("expansion", "cytokines", "swimmer", "survival"):
        assert f"{page_url(world)}{name}.svg?" in content and f"{page_url(world)}{name}.png?" in content


def test_a_trial_without_a_role_is_not_found(two_sites, login):
    world, _mine, _theirs = two_sites
    world.coordinator.memberships.update(active=False)
    assert login(world.coordinator).get(page_url(world)).status_code == 404


@pytest.mark.parametrize("fmt", ["svg", "png"])
@pytest.mark.parametrize("name", ["expansion", "cytokines", "swimmer", "survival"])
def test_each_plot_renders(two_sites, login, name, fmt):
    world, mine, theirs = two_sites
    response = login(world.coordinator).get(page_url(world, f"{name}.{fmt}"), {"course": "1", "download": "1"})
    assert response.status_code == 200
    assert response["Content-Type"] == {"svg": "image/svg+xml", "png": "image/png"}[fmt]
    assert f"-{name}-course1.{fmt}" in response["Content-Disposition"]
    assert len(response.content) > 5_000
    if fmt == "png":
        assert response.content.startswith(b"\x89PNG")
        return
    svg = response.content.decode()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    if name == "survival":  # censoring marks and numbers at risk
        assert 'id="at-risk' in svg and "At risk" in svg
    per_subject = {"expansion": "subject-{}", "swimmer": "subject-{}", "cytokines": "episode-{}-1-IL6"}
    if name in per_subject:  # one element per subject of the caller's site, none for another site's
        assert all(per_subject[name].format(s.code) in svg for s in mine)
        assert per_subject[name].format(theirs.code) not in svg
