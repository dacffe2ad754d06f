"""The subject's admin pages: a refused action shows the service's message on the right field and saves nothing."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import escape

from config.errors import DomainError
from patients.models import (
    BodyMeasurement,
    Consent,
    EligibilityAnswer,
    EligibilityAssessment,
    OffStudyReason,
    Subject,
    SubjectEvent,
    SubjectStatus,
    SubjectTransition,
)
from patients.services import enrolment, measurements
from tests.factories import assessed, consented, days_ago, eligible_subject, enrolled_subject, screened
from trials.models import EligibilityCriterion, TrialSite

pytestmark = pytest.mark.django_db

S = SubjectStatus
TRACKED = (Subject, Consent, EligibilityAssessment, EligibilityAnswer, SubjectTransition, BodyMeasurement, TrialSite)
NO_INLINE_ROWS = {"transitions-TOTAL_FORMS": "0", "transitions-INITIAL_FORMS": "0"}  # the read-only status history



@pytest.fixture
def coordinator(world: Any, login: Any) -> Any:
    return login(world.coordinator)


# --- helpers ---------------------------------------------------------------------------------------


def table_rows() -> dict[str, list[dict[str, Any]]]:
    return {model.__name__: list(model.objects.order_by("pk").values()) for model in TRACKED}


def refusal(check: Callable[..., None], **kwargs: Any) -> DomainError:
    """The service rule's own refusal, to compare with what the page shows."""
    with pytest.raises(DomainError) as err:
        check(**kwargs)
    return err.value


def action_url(subject: Subject, action: str) -> str:
    return reverse("admin:patients_subject_action", args=[subject.pk, action])


def change_url(subject: Subject) -> str:
    return reverse("admin:patients_subject_change", args=[subject.pk])


def post_action(client: Any, subject: Subject, action: str, data: dict[str, Any]) -> Any:
    return client.post(action_url(subject, action), {**data, "_save": "Save"})


def assert_shown(response: Any, field: str, message: str) -> None:
    """Status 200, the form re-displayed with exactly the service's message on ``field``."""
    assert response.status_code == 200
    errors = response.context["form"].errors
    assert errors.get(field) == [message], errors
    assert escape(message) in response.content.decode()


def assert_redirected_to_subject(response: Any, subject: Subject) -> None:
    assert response.status_code == 302
    assert response["Location"] == change_url(subject)


def local_tomorrow(subject: Subject) -> dt.date:
    return timezone.now().astimezone(ZoneInfo(subject.site.time_zone)).date() + dt.timedelta(days=1)


def at_a(world: Any) -> dict[str, Any]:
    return {"trial": world.trial, "site": world.site_a, "coordinator": world.coordinator}


def criteria_answers(subject: Subject, exclusion_present: bool = False) -> dict[str, str]:
    data = {}
    for c in EligibilityCriterion.objects.filter(trial=subject.trial, active=True):
        met = exclusion_present if c.kind == EligibilityCriterion.Kind.EXCLUSION else True
        data[f"criterion_{c.pk}"] = "yes" if met else "no"
    return data


def iso(day: dt.date) -> str:
    return day.isoformat()


# --- consent ---------------------------------------------------------------------------------------


def test_consent_form_shows_a_refused_date_on_its_field(world, coordinator):
    subject = screened(**at_a(world), on=days_ago(30))
    expected = refusal(enrolment.check_consent, subject=subject, consented_on=days_ago(31))
    before = table_rows()
    response = post_action(coordinator, subject, "consent",
                           {"version": "v1.0", "consented_on": iso(days_ago(31)), "age_at_consent": "30"})
    assert_shown(response, "consented_on", expected.message)
    assert expected.code == "consent_before_screening"
    assert table_rows() == before


def test_consent_form_shows_a_future_date_on_its_field(world, coordinator):
    subject = screened(**at_a(world))
    response = post_action(coordinator, subject, "consent",
                           {"version": "v1.0", "consented_on": iso(local_tomorrow(subject)), "age_at_consent": "30"})
    assert "consented_on" in response.context["form"].errors
    assert "is in the future at site SA" in response.context["form"].errors["consented_on"][0]
    assert not Consent.objects.exists()


def test_consent_form_without_the_age_shows_it_on_the_age_field(world, coordinator):
    subject = screened(**at_a(world))
    before = table_rows()
    response = post_action(coordinator, subject, "consent", {"version": "v1.0", "consented_on": iso(days_ago(29))})
    assert_shown(response, "age_at_consent", "Record the subject's age at consent.")
    assert table_rows() == before


def test_consent_form_for_a_closed_subject_shows_a_non_field_error(world, coordinator):
    subject = enrolment.record_screen_failure(subject=screened(**at_a(world)), failed_on=days_ago(20),
                                              reason="CD19 negative", by=world.coordinator)
    expected = refusal(enrolment.check_consent, subject=subject, consented_on=days_ago(10))
    before = table_rows()
    response = post_action(coordinator, subject, "consent",
                           {"version": "v1.0", "consented_on": iso(days_ago(10)), "age_at_consent": "30"})
    assert_shown(response, "__all__", expected.message)
    assert table_rows() == before


def test_consent_form_records_consent(world, coordinator):
    subject = screened(**at_a(world))
    response = post_action(coordinator, subject, "consent",
                           {"version": "v1.0", "consented_on": iso(days_ago(29)), "age_at_consent": "34"})
    assert_redirected_to_subject(response, subject)
    consent = subject.consents.get()
    assert (consent.version, consent.consented_on, consent.recorded_by) == ("v1.0", days_ago(29), world.coordinator)
    subject.refresh_from_db()
    assert subject.age_at_consent == 34


# --- height and weight -----------------------------------------------------------------------------


def test_measurement_form_refuses_a_subject_without_consent(world, coordinator):
    subject = screened(**at_a(world))
    expected = refusal(measurements.check_body_measurement, subject=subject, measured_on=days_ago(5))
    before = table_rows()
    response = post_action(coordinator, subject, "measurement",
                           {"measured_on": iso(days_ago(5)), "height_cm": "170", "weight_kg": "60"})
    assert_shown(response, "measured_on", expected.message)
    assert table_rows() == before


def test_measurement_form_records_height_and_weight(world, coordinator):
    subject = consented(**at_a(world))
    response = post_action(coordinator, subject, "measurement",
                           {"measured_on": iso(days_ago(28)), "height_cm": "170.5", "weight_kg": "61.2"})
    assert_redirected_to_subject(response, subject)
    m = subject.measurements.get()
    assert (m.measured_on, m.height_cm, m.weight_kg) == (days_ago(28), Decimal("170.5"), Decimal("61.2"))


# --- eligibility -----------------------------------------------------------------------------------


def test_eligibility_form_refuses_an_assessment_before_consent(world, coordinator):
    subject = consented(**at_a(world), on=days_ago(29))
    expected = refusal(enrolment.check_eligibility_assessment, subject=subject, assessed_on=days_ago(30), answers={})
    assert expected.code == "eligibility_before_consent"
    before = table_rows()
    response = post_action(coordinator, subject, "eligibility",
                           {"assessed_on": iso(days_ago(30)), **criteria_answers(subject)})
    assert_shown(response, "assessed_on", expected.message)
    assert table_rows() == before


def test_eligibility_form_records_the_checklist(world, coordinator):
    subject = consented(**at_a(world))
    response = post_action(coordinator, subject, "eligibility",
                           {"assessed_on": iso(days_ago(25)), **criteria_answers(subject, exclusion_present=True)})
    assert_redirected_to_subject(response, subject)
    assessment = subject.eligibility_assessments.get()
    assert assessment.eligible is False  # the exclusion criterion is present
    assert assessment.answers.count() == EligibilityCriterion.objects.filter(trial=world.trial, active=True).count()
    assert assessment.confirmed_at is None
    subject.refresh_from_db()
    assert subject.status == S.SCREENING


# --- confirmation of eligibility -------------------------------------------------------------------


def confirm_url(subject: Subject, assessment: EligibilityAssessment) -> str:
    return reverse("admin:patients_subject_confirm_eligibility", args=[subject.pk, assessment.pk])


def test_a_coordinator_cannot_confirm_eligibility_in_the_admin(world, coordinator):
    subject, assessment = assessed(**at_a(world))
    response = coordinator.post(confirm_url(subject, assessment), follow=True)
    assert response.status_code == 200
    assert response.redirect_chain == [(change_url(subject), 302)]
    shown = [(m.level_tag, str(m)) for m in response.context["messages"]]
    assert shown == [("error", "Only an investigator of site SA may confirm eligibility.")]
    assessment.refresh_from_db()
    subject.refresh_from_db()
    assert (assessment.confirmed_at, assessment.confirmed_by, subject.status) == (None, None, S.SCREENING)


def test_an_investigator_of_another_site_does_not_find_the_subject(world, login):
    subject, assessment = assessed(**at_a(world))
    response = login(world.investigator_b).post(confirm_url(subject, assessment))
    assert response.status_code == 404
    assessment.refresh_from_db()
    assert assessment.confirmed_at is None


def test_the_investigator_confirms_eligibility_in_the_admin(world, login):
    subject, assessment = assessed(**at_a(world))
    response = login(world.investigator).post(confirm_url(subject, assessment), follow=True)
    assert response.redirect_chain == [(change_url(subject), 302)]
    shown = [(m.level_tag, str(m)) for m in response.context["messages"]]
    assert shown == [("success", f"Eligibility confirmed: {subject.code} is eligible.")]
    assessment.refresh_from_db()
    subject.refresh_from_db()
    assert assessment.confirmed_by == world.investigator
    assert subject.status == S.ELIGIBLE


# --- enrolment -------------------------------------------------------------------------------------


def test_enrol_action_for_a_subject_in_screening_shows_eligibility_not_confirmed(world, coordinator):
    subject = consented(**at_a(world))
    assert "enrol" not in [name for name, _ in coordinator.get(change_url(subject)).context["subject_actions"]]
    page = coordinator.get(action_url(subject, "enrol"))
    assert page.status_code == 200
    before = table_rows()
    cohort = world.trial.cohorts.get(code="ADULT")
    response = post_action(coordinator, subject, "enrol", {"cohort": cohort.pk, "enrolled_on": iso(days_ago(20))})
    assert response.status_code == 200
    errors = response.context["form"].errors["__all__"]
    assert len(errors) == 1 and "eligibility has not been confirmed" in errors[0]
    assert "eligibility has not been confirmed" in response.content.decode()
    assert table_rows() == before


def test_enrol_form_shows_a_date_before_eligibility_on_its_field(world, coordinator):
    subject = eligible_subject(**at_a(world), investigator=world.investigator)
    cohort = world.trial.cohorts.get(code="ADULT")
    expected = refusal(enrolment.check_enrolment, subject=subject, cohort=cohort, enrolled_on=days_ago(26))
    assert expected.code == "enrolment_before_eligibility"
    before = table_rows()
    response = post_action(coordinator, subject, "enrol", {"cohort": cohort.pk, "enrolled_on": iso(days_ago(26))})
    assert_shown(response, "enrolled_on", expected.message)
    assert table_rows() == before


def test_enrol_form_enrols_an_eligible_subject(world, coordinator):
    subject = eligible_subject(**at_a(world), investigator=world.investigator)
    cohort = world.trial.cohorts.get(code="PED")
    response = post_action(coordinator, subject, "enrol", {"cohort": cohort.pk, "enrolled_on": iso(days_ago(20))})
    assert_redirected_to_subject(response, subject)
    subject.refresh_from_db()
    assert (subject.status, subject.cohort, subject.enrolled_on) == (S.ENROLLED, cohort, days_ago(20))


# --- screen failure --------------------------------------------------------------------------------


def test_screen_failure_form_needs_a_reason(world, coordinator):
    subject = screened(**at_a(world))
    before = table_rows()
    response = post_action(coordinator, subject, "screen-failure", {"failed_on": iso(days_ago(5)), "reason": " "})
    assert_shown(response, "reason", "A screen failure needs a reason.")
    assert table_rows() == before


def test_screen_failure_form_records_the_failure(world, coordinator):
    subject = screened(**at_a(world))
    response = post_action(coordinator, subject, "screen-failure",
                           {"failed_on": iso(days_ago(5)), "reason": "Marrow blasts below 5%"})
    assert_redirected_to_subject(response, subject)
    subject.refresh_from_db()
    assert subject.status == S.SCREEN_FAILED
    assert subject.transitions.latest("pk").reason == "Marrow blasts below 5%"


# --- withdrawal of consent -------------------------------------------------------------------------


def test_withdraw_consent_form_needs_a_reason(world, coordinator):
    subject = consented(**at_a(world))
    before = table_rows()
    response = post_action(coordinator, subject, "withdraw-consent", {"withdrawn_on": iso(days_ago(5)), "reason": ""})
    assert_shown(response, "reason", "Give the reason for withdrawal.")
    assert table_rows() == before


def test_withdraw_consent_form_takes_the_subject_off_study(world, coordinator):
    subject = consented(**at_a(world))
    response = post_action(coordinator, subject, "withdraw-consent",
                           {"withdrawn_on": iso(days_ago(5)), "reason": "No longer wishes to take part"})
    assert_redirected_to_subject(response, subject)
    subject.refresh_from_db()
    assert (subject.status, subject.off_study_reason) == (S.OFF_STUDY, OffStudyReason.CONSENT_WITHDRAWN)
    assert subject.consents.get().withdrawn_on == days_ago(5)


# --- off study -------------------------------------------------------------------------------------


def test_off_study_form_needs_detail_for_another_reason(world, coordinator):
    subject = enrolled_subject(**at_a(world), investigator=world.investigator)
    before = table_rows()
    response = post_action(coordinator, subject, "off-study",
                           {"off_on": iso(days_ago(2)), "reason": OffStudyReason.OTHER, "detail": ""})
    assert_shown(response, "detail", "Describe the reason.")
    assert table_rows() == before


def test_off_study_form_needs_a_date(world, coordinator):
    subject = enrolled_subject(**at_a(world), investigator=world.investigator)
    before = table_rows()
    response = post_action(coordinator, subject, "off-study",
                           {"off_on": "", "reason": OffStudyReason.DEATH, "detail": ""})
    assert_shown(response, "off_on", "Give the date the subject went off study.")
    assert table_rows() == before


def test_off_study_form_takes_the_subject_off_study(world, coordinator):
    subject = enrolled_subject(**at_a(world), investigator=world.investigator)
    response = post_action(coordinator, subject, "off-study",
                           {"off_on": iso(days_ago(2)), "reason": OffStudyReason.LOST_TO_FOLLOW_UP, "detail": ""})
    assert_redirected_to_subject(response, subject)
    subject.refresh_from_db()
    assert (subject.status, subject.off_study_on, subject.off_study_reason) == (
        S.OFF_STUDY, days_ago(2), OffStudyReason.LOST_TO_FOLLOW_UP)


# --- who reaches the actions -----------------------------------------------------------------------


def test_a_coordinator_of_another_site_does_not_find_the_subjects_actions(world, login):
    subject = screened(**at_a(world))
    client = login(world.coordinator_b)
    assert client.get(action_url(subject, "consent")).status_code == 404
    before = table_rows()
    response = post_action(client, subject, "consent",
                           {"version": "v1", "consented_on": iso(days_ago(29)), "age_at_consent": "30"})
    assert response.status_code == 404
    assert table_rows() == before


def test_a_monitor_sees_the_subject_but_cannot_act(world, login):
    subject = screened(**at_a(world))
    client = login(world.monitor)
    assert client.get(change_url(subject)).status_code == 200
    before = table_rows()
    response = post_action(client, subject, "consent",
                           {"version": "v1", "consented_on": iso(days_ago(29)), "age_at_consent": "30"})
    assert response.status_code == 403
    assert table_rows() == before


# --- screening (the add form) ----------------------------------------------------------------------


def screening_data(world: Any, **overrides: Any) -> dict[str, Any]:
    return {
        "trial": world.trial.pk, "site": world.site_a.pk, "screened_on": iso(days_ago(3)), "sex": "M",
        "diagnosis": "b_all", "fusion_genes": "KMT2A::AFF1", "mutations": "", "marrow_blasts_pct": "42.5",
        "cns_status": "CNS1", "prior_cart_target": "", "prior_cart_scfv_origin": "", "prior_lines": "2",
        "_save": "Save", **NO_INLINE_ROWS, **overrides,
    }


@pytest.mark.parametrize("status", [TrialSite.Status.PENDING, TrialSite.Status.ON_HOLD])
def test_screening_form_refuses_a_site_not_active_for_the_trial(world, coordinator, status):
    TrialSite.objects.filter(trial=world.trial, site=world.site_a).update(status=status)
    before = table_rows()
    response = coordinator.post(reverse("admin:patients_subject_add"), screening_data(world))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert errors.get("site") == [f"Site SA is not active for {world.trial.code}."], errors
    assert table_rows() == before


def test_screening_form_screens_a_subject(world, coordinator):
    response = coordinator.post(reverse("admin:patients_subject_add"), screening_data(world))
    assert response.status_code == 302, response.context and response.context["adminform"].form.errors
    subject = Subject.objects.get()
    assert (subject.code, subject.status, subject.site, subject.fusion_genes, subject.prior_lines) == (
        "SA-0001", S.SCREENING, world.site_a, ["KMT2A::AFF1"], 2)
    assert subject.transitions.get().recorded_by == world.coordinator


# --- amendments (the change form) ------------------------------------------------------------------


def change_data(subject: Subject, **overrides: Any) -> dict[str, Any]:
    """The change form as the page submits it, with the subject's saved values."""
    subject = Subject.objects.get(pk=subject.pk)
    data: dict[str, Any] = {
        "sex": subject.sex, "diagnosis": subject.diagnosis, "fusion_genes": ",".join(subject.fusion_genes),
        "mutations": ",".join(subject.mutations),
        "marrow_blasts_pct": "" if subject.marrow_blasts_pct is None else str(subject.marrow_blasts_pct),
        "cns_status": subject.cns_status, "prior_cart_target": subject.prior_cart_target,
        "prior_cart_scfv_origin": subject.prior_cart_scfv_origin, "prior_lines": str(subject.prior_lines),
        "age_at_consent": "" if subject.age_at_consent is None else str(subject.age_at_consent),
        "reason_for_change": "", "_save": "Save", **NO_INLINE_ROWS,
    }
    data.update({name: "on" for name in ("extramedullary_disease", "prior_allo_hsct", "prior_cart")
                 if getattr(subject, name)})
    return {**data, **overrides}


def test_change_form_refuses_a_changed_value_without_a_reason(world, coordinator):
    subject = consented(**at_a(world))
    before = table_rows()
    response = coordinator.post(change_url(subject), change_data(subject, marrow_blasts_pct="12.00"))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert errors.get("reason_for_change") == ["Give a reason for the change."], errors
    assert table_rows() == before


def test_change_form_saves_unchanged_values_without_a_reason(world, coordinator):
    subject = consented(**at_a(world))
    before = table_rows()
    response = coordinator.post(change_url(subject), change_data(subject))
    assert response.status_code == 302, response.context["adminform"].form.errors
    assert table_rows() == before


def test_change_form_amends_with_a_reason(world, coordinator):
    subject = consented(**at_a(world))
    response = coordinator.post(change_url(subject), change_data(subject, marrow_blasts_pct="12.00",
                                                                 reason_for_change="Central lab re-read"))
    assert response.status_code == 302
    subject.refresh_from_db()
    assert subject.marrow_blasts_pct == Decimal("12.00")
    event = SubjectEvent.objects.filter(pgh_obj=subject, pgh_label="update").latest("pgh_id")
    assert event.marrow_blasts_pct == Decimal("12.00")
    assert event.pgh_context.metadata["reason"] == "Central lab re-read"
