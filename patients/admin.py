"""Subjects in the admin: screening log, the subject's page with its allowed actions, and read-only lists.

Every write goes through ``patients.services``; a refused action shows the service's message on the
form field it concerns.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.contrib.admin.widgets import AdminDateWidget
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Q, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse

from config import display
from config.api import acting_user
from config.errors import DomainError
from config.forms import QuietErrorList, Select
from config.reads import shared_reads
from exports.casebook.services import download_casebook
from locking.services import check_writable
from patients import admin_desk, admin_rows
from patients import forms as action_forms
from patients.admin_course import subject_course
from patients.models import (
    BodyMeasurement,
    Consent,
    EligibilityAssessment,
    Subject,
    SubjectStatus,
    SubjectTransition,
)
from patients.selectors import consents_of, eligibility_of, list_overdue_saes, records_of
from patients.services import enrolment
from trials.access import ENTRY_ROLES, access_of
from trials.admin_scoping import (
    ClinicalAdmin,
    ReadOnlyClinicalAdmin,
    add_domain_error,
    site_time_column,
)
from trials.models import Site, Trial

ACTIONS: dict[str, type[action_forms.SubjectActionForm]] = {
    "consent": action_forms.ConsentForm,
    "measurement": action_forms.MeasurementForm,
    "eligibility": action_forms.EligibilityForm,
    "enrol": action_forms.EnrolForm,
    "screen-failure": action_forms.ScreenFailureForm,
    "withdraw-consent": action_forms.WithdrawConsentForm,
    "off-study": action_forms.OffStudyForm,
}

CHARACTERISTICS = [
    "screening_number", "sex", "diagnosis", "fusion_genes", "mutations", "marrow_blasts_pct", "extramedullary_disease",
    "cns_status", "prior_allo_hsct", "prior_cart", "prior_cart_target", "prior_cart_scfv_origin", "prior_lines",
]


class ScreeningForm(forms.ModelForm):
    """The add form: a new subject in the screening log of an active site."""

    user: Any = None  # the requesting user, set by SubjectAdmin.get_form

    class Meta:
        model = Subject
        fields = ["trial", "site", "screened_on", *CHARACTERISTICS]
        widgets = {"screened_on": AdminDateWidget}

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        if not self.errors:
            # Trial and site are offered separately; the pair must be one where the user enters data.
            try:
                enrolment.check_screening_permission(user=self.user, trial=data["trial"], site=data["site"])
                enrolment.check_screening(trial=data["trial"], site=data["site"], screened_on=data["screened_on"])
                enrolment.check_screening_number(trial=data["trial"], site=data["site"],
                                                 screening_number=data.get("screening_number", ""))
            except DomainError as err:
                add_domain_error(self, err)
        return data


class AmendSubjectForm(forms.ModelForm):
    """The change form: characteristics only; a change needs a reason, recorded in the audit trail."""

    reason_for_change = forms.CharField(
        required=False, widget=forms.Textarea(attrs={"rows": 2}),
        help_text="Required when a saved value is changed.",
    )

    class Meta:
        model = Subject
        fields = [*CHARACTERISTICS, "age_at_consent"]
        # Django's markup, written without a template per option (config.forms.Select).
        widgets = {name: Select for name in CHARACTERISTICS if getattr(Subject._meta.get_field(name), "choices", None)}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("error_class", QuietErrorList)  # the page renders 25 fields' error lists, mostly empty
        super().__init__(*args, **kwargs)

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        if not self.errors:
            changed = {name: data[name] for name in self.changed_data if name in enrolment.AMENDABLE_FIELDS}
            subject = self.instance
            try:
                if changed:
                    check_writable(trial_id=subject.trial_id, site_id=subject.site_id, subject_id=subject.pk)
                enrolment.check_amendment(changed=changed, reason=data.get("reason_for_change", ""), subject=subject)
            except DomainError as err:
                add_domain_error(self, err)
        return data


@admin.display(description="status change")
def status_change(transition: SubjectTransition) -> str:
    """``Infused → Follow-up``: the statuses in words."""
    return display.transition(transition.get_from_status_display(), transition.get_to_status_display())


@admin.register(Subject)
class SubjectAdmin(ClinicalAdmin):
    trial_lookup, site_lookup = "trial", "site"
    list_display = ["code", "screening_number", "trial", "site", "status", "cohort", "diagnosis", "screened_on",
                    "enrolled_on", "open_queries"]
    list_filter = ["status", ("trial", admin.RelatedOnlyFieldListFilter),
                   ("site", admin.RelatedOnlyFieldListFilter), ("cohort", admin.RelatedOnlyFieldListFilter),
                   "diagnosis"]
    list_select_related = ["trial", "site", "cohort"]
    search_fields = ["code", "screening_number"]
    ordering = ["trial__code", "code"]
    # Read-only sections of the subject page that other apps add (signatures: its list of signatures), as
    # ``section(request, subject) -> context``; patients does not import those apps. Tables, not inlines:
    # nothing on them is edited here, and an inline's formset costs a form per row.
    page_sections: list[Callable[[HttpRequest, Subject], dict[str, Any]]] = []
    change_form_template = "admin/patients/subject/change_form.html"

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        # Data queries still needing action (open or answered; dataqueries.DataQuery.UNRESOLVED), counted in
        # the changelist's own query, and the change page's (its state says how many). By name: patients does
        # not import the dataqueries app.
        unresolved = Q(data_queries__status__in=admin_desk.UNRESOLVED_QUERIES)
        # The changelist's joins (list_select_related: it is skipped once any is set), which the change page
        # uses too for the subject's trial and site.
        return (super().get_queryset(request).select_related("trial", "site", "cohort")
                .annotate(open_queries=Count("data_queries", filter=unresolved)))

    def get_object(self, request: HttpRequest, object_id: str, from_field: str | None = None) -> Any:
        """Read once per page view (the change page asks three times, and its lock with it); a POST reads it
        afresh each time, as Django does."""
        if request.method != "GET":
            return super().get_object(request, object_id, from_field)
        read: dict[tuple[str, str | None], Any] = request.__dict__.setdefault("_subjects_read", {})
        if (object_id, from_field) not in read:
            read[object_id, from_field] = super().get_object(request, object_id, from_field)
        return read[object_id, from_field]

    @admin.display(description="open queries", ordering="open_queries")
    def open_queries(self, obj: Subject) -> int:
        return obj.open_queries  # type: ignore[attr-defined]

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        kwargs["form"] = AmendSubjectForm if obj is not None else ScreeningForm
        form = super().get_form(request, obj, change=change, **kwargs)
        # A new class per call (modelform_factory), so per request; typed as a plain ModelForm class.
        form.user = request.user  # type: ignore[attr-defined]
        return form

    # Django takes a list of names; django-stubs' result type is an invariant list of unions.
    def get_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:  # type: ignore[override]
        if obj is None:
            return list(ScreeningForm.Meta.fields)
        fields = ["code", "trial", "site", "status", "cohort", "screened_on", "enrolled_on", "off_study_on",
                  "off_study_reason", "off_study_detail", "age_at_consent", *CHARACTERISTICS]
        if self.has_change_permission(request, obj) and admin_desk.lock_message(obj) is None:
            fields.append("reason_for_change")
        return fields

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        if obj is None:
            return []
        fixed = ["code", "trial", "site", "status", "cohort", "screened_on", "enrolled_on", "off_study_on",
                 "off_study_reason", "off_study_detail"]
        if not self.has_change_permission(request, obj) or admin_desk.lock_message(obj) is not None:
            return fixed + ["age_at_consent", *CHARACTERISTICS]
        return fixed

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        # Screening is entry work: offer only the trials and sites where the user enters data.
        access = access_of(request.user)
        if db_field.name in ("site", "trial") and not access.is_superuser:
            pairs = [k for k, roles in access.site_roles.items() if roles & ENTRY_ROLES]
            ids = sorted({site_id for _t, site_id in pairs} if db_field.name == "site" else {t for t, _s in pairs})
            kwargs["queryset"] = (Site if db_field.name == "site" else Trial).objects.filter(pk__in=ids)
            return admin.ModelAdmin.formfield_for_foreignkey(self, db_field, request, **kwargs)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def save_model(self, request: HttpRequest, obj: Subject, form: forms.Form, change: bool) -> None:
        data = form.cleaned_data
        if change:
            changes = {name: data[name] for name in form.changed_data if name in enrolment.AMENDABLE_FIELDS}
            enrolment.amend_subject(subject=obj, changes=changes, reason=data.get("reason_for_change", ""),
                                    by=acting_user(request))
            return
        characteristics = {name: data[name] for name in CHARACTERISTICS}
        created = enrolment.screen_subject(trial=data["trial"], site=data["site"], screened_on=data["screened_on"],
                                           by=acting_user(request), **characteristics)
        obj.pk, obj.code = created.pk, created.code

    # --- the subject's actions -----------------------------------------------------------------

    def get_urls(self) -> list[Any]:
        view = self.admin_site.admin_view
        return [
            path("<path:object_id>/action/<slug:action>/", view(self.action_view), name="patients_subject_action"),
            path("<path:object_id>/casebook/", view(self.casebook_view), name="patients_subject_casebook"),
            path("visits-due/", view(lambda request: admin_desk.visits_view(self, request)),
                 name="patients_subject_visits_due"),
            path("<path:object_id>/labs/", view(lambda request, object_id: admin_desk.labs_view(
                self, request, object_id)), name="patients_subject_labs"),
            path("<path:object_id>/labs/plot.<slug:fmt>", view(lambda request, object_id, fmt: admin_desk.lab_plot_view(
                self, request, object_id, fmt)), name="patients_subject_lab_plot"),
            path("<path:object_id>/eligibility/<int:assessment_id>/confirm/", view(self.confirm_view),
                 name="patients_subject_confirm_eligibility"),
            *super().get_urls(),
        ]

    def _entry_subject(self, request: HttpRequest, object_id: str) -> Subject:
        subject = self.get_object(request, object_id)  # 404 outside the user's sites
        if not self.has_change_permission(request, subject):
            raise PermissionDenied
        return subject

    def action_view(self, request: HttpRequest, object_id: str, action: str) -> HttpResponse:
        form_class = ACTIONS.get(action)
        if form_class is None:
            raise Http404("No such action.")
        subject = self._entry_subject(request, object_id)
        form = form_class(request.POST or None, subject=subject)
        lock = admin_desk.lock_message(subject)
        if lock is not None and request.method != "POST":  # read-only with the lock's reason before anyone types
            for field in form.fields.values():
                field.disabled = True
        if request.method == "POST" and form.is_valid():
            try:
                form.save(by=acting_user(request))
            except DomainError as err:  # a race lost after clean(): show it, nothing was saved
                add_domain_error(form, err)
            else:
                messages.success(request, f"{form.title} for {subject.code}: saved.")
                return HttpResponseRedirect(reverse("admin:patients_subject_change", args=[subject.pk]))
        context = {**self.admin_site.each_context(request), "opts": self.model._meta, "subject": subject,
                   "form": form, "title": f"{form.title}: {subject.code}", "original": subject,
                   "media": self.media + form.media, "desk_lock": lock}
        return TemplateResponse(request, "admin/patients/subject/action.html", context)

    def casebook_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        """The subject's PDF casebook, for whoever reads the subject's site (404 for anyone else); audited."""
        subject = self.get_object(request, unquote(object_id))  # 404 outside the user's sites
        if not self.has_view_permission(request, subject):
            raise Http404("No such record.")
        data = download_casebook(subject=subject, by=acting_user(request))
        response = HttpResponse(data, content_type="application/pdf")
        response["Content-Disposition"] = f'attachment; filename="{subject.code}.pdf"'
        return response

    def confirm_view(self, request: HttpRequest, object_id: str, assessment_id: int) -> HttpResponse:
        subject = self._entry_subject(request, object_id)
        assessment = get_object_or_404(EligibilityAssessment, pk=assessment_id, subject=subject)
        if request.method != "POST":
            return HttpResponseRedirect(reverse("admin:patients_subject_change", args=[subject.pk]))
        try:
            enrolment.confirm_eligibility(assessment=assessment, by=acting_user(request))
        except DomainError as err:
            messages.error(request, err.message)
        else:
            verdict = "eligible" if assessment.eligible else "not eligible"
            messages.success(request, f"Eligibility confirmed: {subject.code} is {verdict}.")
        return HttpResponseRedirect(reverse("admin:patients_subject_change", args=[subject.pk]))

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: dict[str, Any] | None = None) -> HttpResponse:
        subject = self.get_object(request, object_id)
        can_enter = self.has_change_permission(request, subject)
        with shared_reads():  # reads only, before a POST saves anything
            extra = self._subject_page(request, subject, can_enter)
        return super().change_view(request, object_id, form_url, {**extra, **(extra_context or {})})

    def _subject_page(self, request: HttpRequest, subject: Subject, can_enter: bool) -> dict[str, Any]:
        offered = enrolment.offered_actions(subject) if can_enter else []
        return {
            "subject_actions": [(name, ACTIONS[name].title) for name in offered],
            "consents": consents_of(subject),  # the rows the rules read (with who recorded them)
            "measurements": records_of(subject, "measurements"),  # newest first
            "assessments": eligibility_of(subject),  # (assessment, its answers), newest first
            "can_confirm": can_enter and subject.status == SubjectStatus.SCREENING,
            "course": admin_rows.course_rows(subject_course(subject)),
            **admin_desk.desk_context(subject, can_enter=can_enter),
            # Only a serious event can be overdue; the page has read the subject's events (the course list).
            "overdue_saes": list(list_overdue_saes(user=request.user, subject=subject))
            if any(e.serious for e in records_of(subject, "adverse_events")) else [],
            "transitions": [(t, status_change(t)) for t in records_of(subject, "transitions", "recorded_by")],
        } | {key: value for section in self.page_sections for key, value in section(request, subject).items()}


@admin.register(Consent)
class ConsentAdmin(ReadOnlyClinicalAdmin):
    list_display = ["subject", "version", "consented_on", "withdrawn_on"]
    list_select_related = ["subject"]
    search_fields = ["subject__code"]
    list_filter = [("subject__site", admin.RelatedOnlyFieldListFilter)]


@admin.register(EligibilityAssessment)
class EligibilityAssessmentAdmin(ReadOnlyClinicalAdmin):
    list_display = ["subject", "assessed_on", "eligible", "assessed_by", "confirmed_by", "confirmed_at_site_time"]
    list_select_related = ["subject__site", "assessed_by", "confirmed_by"]
    confirmed_at_site_time = site_time_column("confirmed_at", "confirmed at")
    search_fields = ["subject__code"]
    list_filter = ["eligible", ("subject__site", admin.RelatedOnlyFieldListFilter)]


@admin.register(BodyMeasurement)
class BodyMeasurementAdmin(ReadOnlyClinicalAdmin):
    list_display = ["subject", "measured_on", "height_cm", "weight_kg"]
    list_select_related = ["subject"]
    search_fields = ["subject__code"]


@admin.register(SubjectTransition)
class SubjectTransitionAdmin(ReadOnlyClinicalAdmin):
    list_display = ["subject", "effective_on", status_change, "reason", "recorded_by", "recorded_at_site_time"]
    list_select_related = ["subject__site", "recorded_by"]
    recorded_at_site_time = site_time_column("recorded_at", "recorded at")
    list_filter = ["to_status", ("subject__site", admin.RelatedOnlyFieldListFilter)]
    search_fields = ["subject__code"]
