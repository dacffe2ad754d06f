"""Admin forms for the subject's actions. Each form checks shape; its ``check`` calls the service's rule."""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib.admin.widgets import AdminDateWidget
from django.contrib.auth.models import User

from config.errors import DomainError
from patients.models import OffStudyReason, Subject
from patients.services import enrolment, measurements
from trials.admin_scoping import add_domain_error
from trials.models import Cohort, EligibilityCriterion


class SubjectActionForm(forms.Form):
    """Base: ``rule`` names the service check; ``clean`` shows its refusal on the right field."""

    title = ""
    submit_label = "Save"

    def __init__(self, *args: Any, subject: Subject, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.subject = subject

    def rule(self, data: dict[str, Any]) -> None:
        raise NotImplementedError

    def save(self, *, by: User) -> object:
        raise NotImplementedError

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        if not self.errors:  # the rule needs every value
            try:
                self.rule(data)
            except DomainError as err:
                add_domain_error(self, err)
        return data


class ConsentForm(SubjectActionForm):
    title = "Record informed consent"
    version = forms.CharField(max_length=40, help_text="Consent form version, e.g. v3.0 2024-05-01")
    consented_on = forms.DateField(widget=AdminDateWidget)
    age_at_consent = forms.IntegerField(min_value=0, max_value=120, required=False)

    def rule(self, data: dict[str, Any]) -> None:
        enrolment.check_consent(subject=self.subject, consented_on=data["consented_on"],
                                age_at_consent=data.get("age_at_consent"))

    def save(self, *, by: Any) -> Any:
        return enrolment.record_consent(subject=self.subject, by=by, **self.cleaned_data)


class MeasurementForm(SubjectActionForm):
    title = "Record height and weight"
    measured_on = forms.DateField(widget=AdminDateWidget)
    height_cm = forms.DecimalField(min_value=30, max_value=250, decimal_places=1, label="Height (cm)")
    weight_kg = forms.DecimalField(min_value=1, max_value=350, decimal_places=1, label="Weight (kg)")

    def rule(self, data: dict[str, Any]) -> None:
        measurements.check_body_measurement(subject=self.subject, measured_on=data["measured_on"])

    def save(self, *, by: Any) -> Any:
        return measurements.record_body_measurement(subject=self.subject, by=by, **self.cleaned_data)


class EligibilityForm(SubjectActionForm):
    """One yes/no per active criterion of the trial, in protocol order."""

    title = "Assess eligibility"
    assessed_on = forms.DateField(widget=AdminDateWidget)

    def __init__(self, *args: Any, subject: Subject, **kwargs: Any) -> None:
        super().__init__(*args, subject=subject, **kwargs)
        self.criteria = list(EligibilityCriterion.objects.filter(trial_id=subject.trial_id, active=True)
                             .order_by("kind", "number"))
        for criterion in self.criteria:
            label = "Met" if criterion.kind == EligibilityCriterion.Kind.INCLUSION else "Present"
            self.fields[f"criterion_{criterion.pk}"] = forms.TypedChoiceField(
                label=str(criterion), choices=[("yes", f"{label}: yes"), ("no", f"{label}: no")],
                coerce=lambda v: v == "yes", widget=forms.RadioSelect,
            )

    def answers(self, data: dict[str, Any]) -> dict[EligibilityCriterion, bool]:
        return {c: data[f"criterion_{c.pk}"] for c in self.criteria if f"criterion_{c.pk}" in data}

    def rule(self, data: dict[str, Any]) -> None:
        enrolment.check_eligibility_assessment(subject=self.subject, assessed_on=data["assessed_on"],
                                               answers=self.answers(data))

    def save(self, *, by: Any) -> Any:
        return enrolment.assess_eligibility(subject=self.subject, assessed_on=self.cleaned_data["assessed_on"],
                                            answers=self.answers(self.cleaned_data), by=by)


class EnrolForm(SubjectActionForm):
    title = "Enrol subject"
    submit_label = "Enrol"
    cohort = forms.ModelChoiceField(queryset=Cohort.objects.none())
    enrolled_on = forms.DateField(widget=AdminDateWidget)

    def __init__(self, *args: Any, subject: Subject, **kwargs: Any) -> None:
        super().__init__(*args, subject=subject, **kwargs)
        self.fields["cohort"].queryset = Cohort.objects.filter(trial_id=subject.trial_id)  # type: ignore[attr-defined]

    def rule(self, data: dict[str, Any]) -> None:
        enrolment.check_enrolment(subject=self.subject, cohort=data["cohort"], enrolled_on=data["enrolled_on"])

    def save(self, *, by: Any) -> Any:
        return enrolment.enrol_subject(subject=self.subject, by=by, **self.cleaned_data)


class ScreenFailureForm(SubjectActionForm):
    title = "Record screen failure"
    submit_label = "Record screen failure"
    failed_on = forms.DateField(widget=AdminDateWidget)
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), required=False)

    def rule(self, data: dict[str, Any]) -> None:
        enrolment.check_screen_failure(subject=self.subject, failed_on=data["failed_on"], reason=data["reason"])

    def save(self, *, by: Any) -> Any:
        return enrolment.record_screen_failure(subject=self.subject, by=by, **self.cleaned_data)


class OffStudyForm(SubjectActionForm):
    title = "Take off study"
    submit_label = "Take off study"
    off_on = forms.DateField(widget=AdminDateWidget, label="Off study on", required=False)
    reason = forms.ChoiceField(
        choices=[("", "---------")] + [c for c in OffStudyReason.choices if c[0] != OffStudyReason.CONSENT_WITHDRAWN],
        required=False,
    )
    detail = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), required=False)

    def rule(self, data: dict[str, Any]) -> None:
        enrolment.check_off_study(subject=self.subject, off_on=data["off_on"], reason=data["reason"],
                                  detail=data["detail"])

    def save(self, *, by: Any) -> Any:
        return enrolment.take_off_study(subject=self.subject, by=by, **self.cleaned_data)


class WithdrawConsentForm(SubjectActionForm):
    title = "Record withdrawal of consent"
    submit_label = "Record withdrawal"
    withdrawn_on = forms.DateField(widget=AdminDateWidget)
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), required=False)

    def rule(self, data: dict[str, Any]) -> None:
        enrolment.check_withdrawal(subject=self.subject, withdrawn_on=data["withdrawn_on"], reason=data["reason"])

    def save(self, *, by: Any) -> Any:
        return enrolment.withdraw_consent(subject=self.subject, by=by, **self.cleaned_data)
