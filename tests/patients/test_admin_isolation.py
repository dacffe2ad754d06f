"""Site isolation in the admin: a user sees the subjects of their sites (or trials), and nothing else.

Two subjects in the ``world`` trial, SA-0001 at site A and SB-0001 at site B, plus a second trial that
shares site A, with its own subject (also coded SA-0001, since codes are per trial) and its own data
manager. Every page, search, filter, choice and count must show a user only what ``trials.access``
grants: site-A staff see SA-0001 of this trial, the data manager both sites of this trial, the other
trial's data manager only the other trial. A record outside the user's scope is a 404, never a 403.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pytest
from django.contrib import admin
from django.contrib.admin.utils import get_fields_from_path
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from patients.admin import ACTIONS
from patients.models import BodyMeasurement, Consent, EligibilityAssessment, Subject, SubjectTransition
from patients.services import enrolment, measurements
from tests.admin_forms import change_form_data
from tests.factories import (
    MembershipFactory,
    SiteFactory,
    TrialSiteFactory,
    UserFactory,
    assessed,
    build_trial,
    days_ago,
    eligible_subject,
    enrolled_subject,
    screened,
)
from trials.models import Membership, Trial

pytestmark = pytest.mark.django_db

R = Membership.Role
SITE_A_ROLES = ["coordinator", "investigator", "monitor"]
ENTRY_ROLES = ["coordinator", "investigator"]
READ_ONLY_MODELS = [Consent, EligibilityAssessment, BodyMeasurement, SubjectTransition]



@dataclass
class Cast:
    world: Any
    a: Subject  # this trial, site A, enrolled in ADULT
    b: Subject  # this trial, site B, enrolled in PED
    other: Subject  # the other trial, site A, enrolled in the other trial's ADULT
    other_trial: Trial
    other_data_manager: Any

    def user(self, role: str) -> Any:
        return self.other_data_manager if role == "other_data_manager" else getattr(self.world, role)

    def visible_to(self, role: str) -> list[Subject]:
        if role in SITE_A_ROLES:
            return [self.a]
        return [self.a, self.b] if role == "data_manager" else [self.other]

    def hidden_from(self, role: str) -> list[Subject]:
        visible = {s.pk for s in self.visible_to(role)}
        return [s for s in (self.a, self.b, self.other) if s.pk not in visible]


def measure(subject: Subject, by: Any) -> None:
    measurements.record_body_measurement(subject=subject, measured_on=days_ago(24), height_cm=Decimal("170.0"),
                                         weight_kg=Decimal("70.0"), by=by)


@pytest.fixture
def cast(world: Any) -> Cast:
    a = enrolled_subject(coordinator=world.coordinator, investigator=world.investigator,
                         trial=world.trial, site=world.site_a)
    measure(a, world.coordinator)
    b = eligible_subject(coordinator=world.coordinator_b, investigator=world.investigator_b,
                         trial=world.trial, site=world.site_b)
    b = enrolment.enrol_subject(subject=b, cohort=world.trial.cohorts.get(code="PED"), enrolled_on=days_ago(20),
                                by=world.coordinator_b)
    measure(b, world.coordinator_b)

    # A second trial at site A, with its own site-A staff and a trial-wide data manager.
    other_trial = build_trial()
    TrialSiteFactory(trial=other_trial, site=world.site_a)
    staff = {role: UserFactory() for role in (R.COORDINATOR, R.INVESTIGATOR, R.DATA_MANAGER)}
    for role, user in staff.items():
        MembershipFactory(user=user, trial=other_trial, role=role,
                          site=None if role == R.DATA_MANAGER else world.site_a)
    other = enrolled_subject(coordinator=staff[R.COORDINATOR], investigator=staff[R.INVESTIGATOR],
                             trial=other_trial, site=world.site_a)
    measure(other, staff[R.COORDINATOR])
    assert (a.code, b.code, other.code) == ("SA-0001", "SB-0001", "SA-0001")
    return Cast(world=world, a=a, b=b, other=other, other_trial=other_trial,
                other_data_manager=staff[R.DATA_MANAGER])


def url(name: str, *args: Any) -> str:
    return reverse(f"admin:{name}", args=args)


def model_url(model: Any, view: str, *args: Any) -> str:
    return url(f"{model._meta.app_label}_{model._meta.model_name}_{view}", *args)


def changelist(client: Any, model: Any, **params: Any) -> Any:
    response = client.get(model_url(model, "changelist"), params)
    assert response.status_code == 200, response.status_code
    return response


def listed(response: Any) -> set[int]:
    return {obj.pk for obj in response.context["cl"].result_list}


def filter_choices(response: Any, field_path: str) -> set[Any]:
    """The values a related list filter offers for this request (its ``lookup_choices``).

    The changelist drops a filter with fewer than two choices from ``cl.filter_specs`` (nothing to
    render), so when it is absent the declared filter is built for the same request to read its choices.
    """
    cl = response.context["cl"]
    specs = [spec for spec in cl.filter_specs if getattr(spec, "field_path", None) == field_path]
    if not specs:
        declared = [f for f in cl.model_admin.list_filter if isinstance(f, tuple) and f[0] == field_path]
        assert len(declared) == 1, f"no list filter on {field_path}"
        field = get_fields_from_path(cl.model, field_path)[-1]
        filter_class = declared[0][1]
        specs = [filter_class(field, response.wsgi_request, {}, cl.model, cl.model_admin, field_path)]
        assert len(specs[0].lookup_choices) < 2  # otherwise the changelist would have shown it
    return {value for value, _label in specs[0].lookup_choices}


def pks(subjects: list[Subject]) -> set[int]:
    return {s.pk for s in subjects}


ALL_ROLES = [*SITE_A_ROLES, "data_manager", "other_data_manager"]


# --- subject changelist: rows, counts, search, filters ----------------------------------------------


@pytest.mark.parametrize("role", ALL_ROLES)
def test_subject_changelist_lists_and_counts_only_visible_subjects(cast: Cast, login: Any, role: str) -> None:
    response = changelist(login(cast.user(role)), Subject)
    visible, hidden = cast.visible_to(role), cast.hidden_from(role)
    cl = response.context["cl"]

    assert listed(response) == pks(visible)
    assert cl.result_count == cl.full_result_count == len(visible)
    html = response.content.decode()
    noun = "subject" if len(visible) == 1 else "subjects"
    assert f"{len(visible)} {noun}" in html
    for subject in visible:
        assert model_url(Subject, "change", subject.pk) in html
    for subject in hidden:
        assert model_url(Subject, "change", subject.pk) not in html


@pytest.mark.parametrize("role", SITE_A_ROLES)
def test_search_for_another_sites_code_finds_nothing(cast: Cast, login: Any, role: str) -> None:
    client = login(cast.user(role))
    own = changelist(client, Subject, q="SA-0001")
    assert listed(own) == {cast.a.pk}  # not the other trial's SA-0001

    response = changelist(client, Subject, q="SB-0001")
    cl = response.context["cl"]
    assert listed(response) == set()
    assert (cl.result_count, cl.full_result_count) == (0, 1)
    assert "SB-0001</a>" not in response.content.decode()


def test_data_manager_search_finds_both_sites_of_their_trial_only(cast: Cast, login: Any) -> None:
    client = login(cast.world.data_manager)
    assert listed(changelist(client, Subject, q="SB-0001")) == {cast.b.pk}
    assert listed(changelist(client, Subject, q="SA-0001")) == {cast.a.pk}


def test_another_trials_data_manager_finds_nothing_of_this_trial(cast: Cast, login: Any) -> None:
    client = login(cast.other_data_manager)
    assert listed(changelist(client, Subject, q="SA-0001")) == {cast.other.pk}
    response = changelist(client, Subject, q="SB-0001")
    assert listed(response) == set()
    assert response.context["cl"].full_result_count == 1


@pytest.mark.parametrize("role", ALL_ROLES)
def test_list_filters_offer_only_visible_sites_trials_and_cohorts(cast: Cast, login: Any, role: str) -> None:
    response = changelist(login(cast.user(role)), Subject)
    visible = cast.visible_to(role)

    assert filter_choices(response, "site") == {s.site_id for s in visible}
    assert filter_choices(response, "trial") == {s.trial_id for s in visible}
    assert filter_choices(response, "cohort") == {s.cohort_id for s in visible}
    if role in SITE_A_ROLES:  # site B's subject is the only one in PED: neither B nor PED is offered
        assert cast.world.site_b.pk not in filter_choices(response, "site")
        assert cast.b.cohort_id not in filter_choices(response, "cohort")
        assert f"site__id__exact={cast.world.site_b.pk}" not in response.content.decode()


@pytest.mark.parametrize("role", SITE_A_ROLES)
def test_filtering_by_another_site_shows_none_of_its_subjects(cast: Cast, login: Any, role: str) -> None:
    """With one visible site the site filter is not rendered, and Django then ignores its parameter:
    the page is the user's own unfiltered list. What matters is that site B's subject never appears."""
    client = login(cast.user(role))
    assert listed(changelist(client, Subject, site__id__exact=cast.world.site_a.pk)) == {cast.a.pk}

    response = changelist(client, Subject, site__id__exact=cast.world.site_b.pk)
    assert cast.b.pk not in listed(response)
    assert {s.site_id for s in response.context["cl"].result_list} == {cast.world.site_a.pk}


def test_filtering_by_another_site_returns_nothing_when_the_site_filter_is_shown(cast: Cast, login: Any) -> None:
    """A coordinator at sites A and C of the trial gets a rendered site filter, offering A and C only."""
    world = cast.world
    site_c = SiteFactory(code="SC")
    TrialSiteFactory(trial=world.trial, site=site_c)
    MembershipFactory(user=world.coordinator, trial=world.trial, site=site_c, role=R.COORDINATOR)
    coordinator = type(world.coordinator).objects.get(pk=world.coordinator.pk)  # access_of() caches per object
    c = screened(trial=world.trial, site=site_c, coordinator=coordinator)
    client = login(coordinator)

    assert filter_choices(changelist(client, Subject), "site") == {world.site_a.pk, site_c.pk}
    assert listed(changelist(client, Subject, site__id__exact=site_c.pk)) == {c.pk}
    response = changelist(client, Subject, site__id__exact=world.site_b.pk)
    assert listed(response) == set()
    assert (response.context["cl"].result_count, response.context["cl"].full_result_count) == (0, 2)


def test_data_manager_filters_by_either_site(cast: Cast, login: Any) -> None:
    client = login(cast.world.data_manager)
    assert listed(changelist(client, Subject, site__id__exact=cast.world.site_b.pk)) == {cast.b.pk}
    assert listed(changelist(client, Subject, site__id__exact=cast.world.site_a.pk)) == {cast.a.pk}
    assert cast.other.pk not in listed(changelist(client, Subject, trial__id__exact=cast.other_trial.pk))


# --- subject pages and actions of a hidden subject: 404 ------------------------------------------------


@pytest.mark.parametrize("role", ALL_ROLES)
def test_hidden_subjects_pages_are_404(cast: Cast, login: Any, role: str) -> None:
    client = login(cast.user(role))
    own = cast.visible_to(role)[0]
    assert client.get(model_url(Subject, "change", own.pk)).status_code == 200
    assert client.get(model_url(Subject, "history", own.pk)).status_code == 200

    for subject in cast.hidden_from(role):
        for view in ("change", "history", "delete"):
            assert client.get(model_url(Subject, view, subject.pk)).status_code == 404, view
        response = client.post(model_url(Subject, "change", subject.pk), {"sex": "M", "reason_for_change": "x"})
        assert response.status_code == 404
    assert Subject.objects.filter(sex="M").count() == 0


@pytest.mark.parametrize("role", ALL_ROLES)
def test_hidden_subjects_action_urls_are_404(cast: Cast, login: Any, role: str) -> None:
    client = login(cast.user(role))
    hidden = cast.hidden_from(role)
    assert hidden
    before = (Consent.objects.count(), SubjectTransition.objects.count(), BodyMeasurement.objects.count())
    payload = {"version": "v2", "consented_on": days_ago(1), "measured_on": days_ago(1), "height_cm": "170",
               "weight_kg": "70", "failed_on": days_ago(1), "withdrawn_on": days_ago(1), "reason": "test",
               "off_on": days_ago(1)}
    for subject in hidden:
        for action in ACTIONS:
            action_url = url("patients_subject_action", subject.pk, action)
            assert client.get(action_url).status_code == 404, action
            assert client.post(action_url, payload).status_code == 404, action
    assert (Consent.objects.count(), SubjectTransition.objects.count(), BodyMeasurement.objects.count()) == before


def test_own_subjects_action_url_works_for_a_coordinator(cast: Cast, login: Any) -> None:
    """The control for the 404s above: the same URL for a visible subject is the action form."""
    response = login(cast.world.coordinator).get(url("patients_subject_action", cast.a.pk, "consent"))
    assert response.status_code == 200
    assert response.context["subject"] == cast.a


@pytest.mark.parametrize("role", ENTRY_ROLES)
def test_confirming_another_sites_assessment_is_404(cast: Cast, login: Any, role: str) -> None:
    client = login(cast.user(role))
    b_assessment = cast.b.eligibility_assessments.get()
    a_assessment = cast.a.eligibility_assessments.get()
    # The other site's subject, and the other site's assessment under the user's own subject.
    for subject_pk, assessment_pk in ((cast.b.pk, b_assessment.pk), (cast.a.pk, b_assessment.pk)):
        confirm_url = url("patients_subject_confirm_eligibility", subject_pk, assessment_pk)
        assert client.post(confirm_url).status_code == 404
    # The control: the user's own assessment is found (already confirmed, so it redirects back).
    own_url = url("patients_subject_confirm_eligibility", cast.a.pk, a_assessment.pk)
    assert client.post(own_url).status_code == 302


# --- read-only clinical lists ---------------------------------------------------------------------------


def rows_of(model: Any, subjects: list[Subject]) -> set[int]:
    return set(model.objects.filter(subject__in=subjects).values_list("pk", flat=True))


@pytest.mark.parametrize("role", ALL_ROLES)
@pytest.mark.parametrize("model", READ_ONLY_MODELS, ids=lambda m: m.__name__)
def test_read_only_lists_exclude_hidden_subjects_rows(cast: Cast, login: Any, role: str, model: Any) -> None:
    response = changelist(login(cast.user(role)), model)
    visible_rows = rows_of(model, cast.visible_to(role))
    assert visible_rows  # every subject has a row of every kind
    assert listed(response) == visible_rows
    cl = response.context["cl"]
    assert cl.result_count == cl.full_result_count == len(visible_rows)


@pytest.mark.parametrize("role", SITE_A_ROLES)
@pytest.mark.parametrize("model", READ_ONLY_MODELS, ids=lambda m: m.__name__)
def test_read_only_lists_search_and_filter_exclude_another_site(cast: Cast, login: Any, role: str,
                                                                 model: Any) -> None:
    client = login(cast.user(role))
    assert listed(changelist(client, model, q="SA-0001")) == rows_of(model, [cast.a])
    assert listed(changelist(client, model, q="SB-0001")) == set()
    if any(isinstance(f, tuple) and f[0] == "subject__site" for f in admin.site.get_model_admin(model).list_filter):
        assert filter_choices(changelist(client, model), "subject__site") == {cast.world.site_a.pk}
        filtered = changelist(client, model, subject__site__id__exact=cast.world.site_b.pk)
        assert listed(filtered) & rows_of(model, [cast.b]) == set()
        assert listed(filtered) <= rows_of(model, [cast.a])


@pytest.mark.parametrize("role", ALL_ROLES)
@pytest.mark.parametrize("model", READ_ONLY_MODELS, ids=lambda m: m.__name__)
def test_read_only_change_pages_of_hidden_rows_are_404(cast: Cast, login: Any, role: str, model: Any) -> None:
    client = login(cast.user(role))
    own_row = model.objects.filter(subject=cast.visible_to(role)[0]).first()
    assert client.get(model_url(model, "change", own_row.pk)).status_code == 200

    for pk in rows_of(model, cast.hidden_from(role)):
        assert client.get(model_url(model, "change", pk)).status_code == 404
        assert client.get(model_url(model, "history", pk)).status_code == 404
        assert client.post(model_url(model, "change", pk), {}).status_code == 404


# --- autocomplete and foreign-key choices ----------------------------------------------------------


def autocomplete(client: Any, model: Any, term: str = "") -> set[int]:
    params = {"app_label": model._meta.app_label, "model_name": model._meta.model_name, "field_name": "subject",
              "term": term}
    response = client.get(url("autocomplete"), params)
    assert response.status_code == 200, response.status_code
    return {int(row["id"]) for row in response.json()["results"]}


@pytest.mark.parametrize("role", ALL_ROLES)
@pytest.mark.parametrize("source", READ_ONLY_MODELS, ids=lambda m: m.__name__)
def test_subject_autocomplete_returns_only_visible_subjects(cast: Cast, login: Any, role: str, source: Any) -> None:
    # Django's autocomplete view serves any foreign key to a model whose admin has search_fields,
    # whether or not a source admin lists it in autocomplete_fields: SubjectAdmin answers it here.
    client = login(cast.user(role))
    assert autocomplete(client, source) == pks(cast.visible_to(role))
    assert autocomplete(client, source, term="SA") == pks([s for s in cast.visible_to(role) if s.code == "SA-0001"])
    expected_b = {cast.b.pk} if role == "data_manager" else set()
    assert autocomplete(client, source, term="SB-0001") == expected_b


def screening_post(client: Any, trial: Trial, site: Any) -> dict[str, Any]:
    """The add form as the page renders it (with the status-history inline's management form), filled in."""
    page = client.get(url("patients_subject_add"))
    assert page.status_code == 200
    return change_form_data(page, trial=trial.pk, site=site.pk, screened_on=days_ago(3).isoformat(), sex="F",
                            diagnosis="b_all", marrow_blasts_pct="40", cns_status="CNS1", prior_lines="2")


@pytest.mark.parametrize("role", ENTRY_ROLES)
def test_screening_form_offers_only_the_users_sites_and_trials(cast: Cast, login: Any, role: str) -> None:
    response = login(cast.user(role)).get(url("patients_subject_add"))
    assert response.status_code == 200
    fields = response.context["adminform"].form.fields
    assert list(fields["site"].queryset) == [cast.world.site_a]
    assert list(fields["trial"].queryset) == [cast.world.trial]


@pytest.mark.parametrize("role", ENTRY_ROLES)
def test_screening_at_own_site_creates_the_subject(cast: Cast, login: Any, role: str) -> None:
    """The control for the refusals below: the same form, at the user's own site, screens a subject."""
    world = cast.world
    client = login(cast.user(role))
    response = client.post(url("patients_subject_add"), screening_post(client, world.trial, world.site_a))
    assert response.status_code == 302, response.context["adminform"].form.errors
    assert Subject.objects.filter(trial=world.trial, site=world.site_a, code="SA-0002").exists()


@pytest.mark.parametrize("role", ENTRY_ROLES)
def test_screening_at_another_site_is_a_form_error(cast: Cast, login: Any, role: str) -> None:
    world = cast.world
    before = Subject.objects.count()
    client = login(cast.user(role))
    response = client.post(url("patients_subject_add"), screening_post(client, world.trial, world.site_b))
    assert response.status_code == 200
    assert "site" in response.context["adminform"].form.errors
    assert Subject.objects.count() == before


def test_screening_in_a_trial_the_user_is_not_in_is_a_form_error(cast: Cast, login: Any) -> None:
    world = cast.world
    before = Subject.objects.count()
    client = login(world.coordinator)
    response = client.post(url("patients_subject_add"), screening_post(client, cast.other_trial, world.site_a))
    assert response.status_code == 200
    assert "trial" in response.context["adminform"].form.errors
    assert Subject.objects.count() == before


def test_screening_at_a_site_the_user_holds_only_in_another_trial_is_a_form_error(cast: Cast, login: Any) -> None:
    """The trial and site choices are offered separately; their pair must still be one the user enters at."""
    world = cast.world
    TrialSiteFactory(trial=cast.other_trial, site=world.site_b)
    MembershipFactory(user=world.coordinator, trial=cast.other_trial, site=world.site_b, role=R.COORDINATOR)
    client = login(world.coordinator)
    fields = client.get(url("patients_subject_add")).context["adminform"].form.fields
    assert world.site_b in fields["site"].queryset  # offered, for the other trial

    before = Subject.objects.count()
    response = client.post(url("patients_subject_add"), screening_post(client, world.trial, world.site_b))
    assert response.status_code == 200
    assert response.context["adminform"].form.errors
    assert Subject.objects.count() == before


# --- monitors read; data managers read both sites and enter nothing --------------------------------


@pytest.mark.parametrize("role", ["monitor", "data_manager"])
def test_read_only_roles_view_the_subject_page_without_a_save_button(cast: Cast, login: Any, role: str) -> None:
    response = login(cast.user(role)).get(model_url(Subject, "change", cast.a.pk))
    assert response.status_code == 200
    assert response.context["has_change_permission"] is False
    assert response.context["subject_actions"] == []
    html = response.content.decode()
    assert 'name="_save"' not in html
    assert "subject-action" not in html


def test_a_coordinator_sees_the_save_button_and_actions(cast: Cast, login: Any) -> None:
    """The control for the read-only test above."""
    response = login(cast.world.coordinator).get(model_url(Subject, "change", cast.a.pk))
    assert response.context["has_change_permission"] is True
    assert response.context["subject_actions"]
    assert 'name="_save"' in response.content.decode()


@pytest.mark.parametrize("role", ["monitor", "data_manager"])
def test_read_only_roles_cannot_change_a_subject(cast: Cast, login: Any, role: str) -> None:
    # The complete amendment that saves for the coordinator (test below) is refused for read-only roles.
    page = login(cast.world.coordinator).get(model_url(Subject, "change", cast.a.pk))
    data = change_form_data(page, sex="M", reason_for_change="Transcription error")
    response = login(cast.user(role)).post(model_url(Subject, "change", cast.a.pk), data)
    assert response.status_code == 403
    cast.a.refresh_from_db()
    assert cast.a.sex == "F"


def test_a_coordinator_can_amend_a_subject(cast: Cast, login: Any) -> None:
    """The control for the 403 above: the same POST by the site's coordinator changes the subject."""
    client = login(cast.world.coordinator)
    page = client.get(model_url(Subject, "change", cast.a.pk))
    data = change_form_data(page, sex="M", reason_for_change="Transcription error")
    response = client.post(model_url(Subject, "change", cast.a.pk), data)
    assert response.status_code == 302, response.context["adminform"].form.errors
    cast.a.refresh_from_db()
    assert cast.a.sex == "M"


@pytest.mark.parametrize("role", ["monitor", "data_manager"])
def test_read_only_roles_get_403_on_visible_subjects_actions(cast: Cast, login: Any, role: str) -> None:
    client = login(cast.user(role))
    for action in ACTIONS:
        action_url = url("patients_subject_action", cast.a.pk, action)
        assert client.get(action_url).status_code == 403, action
        assert client.post(action_url, {"version": "v2", "consented_on": days_ago(1)}).status_code == 403, action
    assert Consent.objects.filter(subject=cast.a).count() == 1


@pytest.mark.parametrize("role", ["monitor", "data_manager"])
def test_read_only_roles_cannot_confirm_eligibility(cast: Cast, login: Any, role: str) -> None:
    subject, assessment = assessed(coordinator=cast.world.coordinator, trial=cast.world.trial,
                                   site=cast.world.site_a)
    response = login(cast.user(role)).post(url("patients_subject_confirm_eligibility", subject.pk, assessment.pk))
    assert response.status_code == 403
    assessment.refresh_from_db()
    assert assessment.confirmed_at is None


@pytest.mark.parametrize("role", ["monitor", "data_manager", "other_data_manager"])
def test_roles_without_data_entry_cannot_open_the_screening_form(cast: Cast, login: Any, role: str) -> None:
    coordinator = login(cast.world.coordinator)
    post = screening_post(coordinator, cast.world.trial, cast.world.site_a)  # what would screen SA-0002
    client = login(cast.user(role))
    assert client.get(url("patients_subject_add")).status_code == 403
    assert client.post(url("patients_subject_add"), post).status_code == 403
    assert not Subject.objects.filter(code="SA-0002").exists()


@pytest.mark.parametrize("role", ALL_ROLES)
def test_the_audit_event_admin_is_closed_to_trial_staff(cast: Cast, login: Any, role: str) -> None:
    """pghistory's event list holds every site's subject codes; only superusers may open it."""
    response = login(cast.user(role)).get(url("pghistory_events_changelist"))
    assert response.status_code == 403


# --- query counts: the same for 1 and 10 subjects ------------------------------------------------------


def count_queries(client: Any, path: str) -> int:
    with CaptureQueriesContext(connection) as ctx:
        response = client.get(path)
    assert response.status_code == 200
    return len(ctx.captured_queries)


@pytest.mark.parametrize("role", ["coordinator", "monitor", "data_manager"])
@pytest.mark.parametrize("model", [Subject, SubjectTransition], ids=lambda m: m.__name__)
def test_changelist_query_count_does_not_grow_with_rows(world: Any, login: Any, role: str, model: Any) -> None:
    client = login(getattr(world, role))
    path = model_url(model, "changelist")
    first = enrolled_subject(coordinator=world.coordinator, investigator=world.investigator,
                             trial=world.trial, site=world.site_a)
    client.get(path)  # warm per-process caches (content types) before counting
    one = count_queries(client, path)

    for n in range(9):
        if n % 3 == 0:
            enrolled_subject(coordinator=world.coordinator, investigator=world.investigator,
                             trial=world.trial, site=world.site_a)
        else:
            screened(trial=world.trial, site=world.site_a, coordinator=world.coordinator)
        screened(trial=world.trial, site=world.site_b, coordinator=world.coordinator_b)
    ten = count_queries(client, path)

    rows = Subject.objects.filter(site=world.site_a).count()
    assert rows == 10 and first.site_id == world.site_a.pk
    assert len(listed(client.get(path))) >= 10
    assert ten == one, f"{one} queries for 1 subject, {ten} for 10"
