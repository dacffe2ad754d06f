"""The subject's course in the admin: apheresis, lots, bridging, lymphodepletion, infusions, adverse events
with CRS/ICANS assessments, medications, responses and follow-up.

Each form's ``clean`` runs the service's check, so a refusal appears on its field; ``save_model`` and
``save_formset`` write only through the services. Saved records are shown read-only (corrections
with a reason for change go through the audit workflow).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from django import forms
from django.contrib import admin
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone

from config import display
from config.api import acting_user
from config.compiled import compiled
from config.errors import DomainError
from locking.services import check_writable
from patients import grading
from patients.admin_desk import lock_message
from patients.models import (
    AdverseEvent,
    ApheresisCollection,
    BridgingTherapy,
    ConcomitantMedication,
    CrsAssessment,
    CtcaeTerm,
    DonorCollection,
    FollowUp,
    IcansAssessment,
    Infusion,
    LymphodepletionCourse,
    LymphodepletionDose,
    ProductLot,
    ResponseAssessment,
    SaeReport,
    Subject,
)
from patients.selectors import (
    consents_of,
    doses_of,
    list_overdue_saes,
    records_of,
    sae_report_pending,
)
from patients.services import amendments, outcome, safety, treatment
from patients.timeline import Position, local_date, local_date_of, timeline_from, timeline_of, with_timeline
from trials.access import ENTRY_ROLES, access_of
from trials.admin_scoping import (
    ClinicalAdmin,
    SiteTimeFieldsMixin,
    add_domain_error,
    read_in_site_time,
    site_time_column,
)


def _guard(form: forms.BaseForm, rule: Callable[[], Any]) -> None:
    if not form.errors:
        try:
            rule()
        except DomainError as err:
            add_domain_error(form, err)


class ServiceAdmin(ClinicalAdmin):
    """Add-only admin whose form runs ``rule`` in ``clean`` and whose save calls ``write``."""

    add_fields: list[str] = []
    study_date_field = ""  # the record's clinical date, shown as a study day (day 0 = first infusion)

    def get_queryset(self, request: HttpRequest) -> Any:
        return with_timeline(super().get_queryset(request))

    # Django takes a list of names; django-stubs' result type is an invariant list of unions.
    def get_list_display(self, request: HttpRequest) -> list[str]:  # type: ignore[override]
        return [*super().get_list_display(request), "study_day", "course_day"]

    def _position(self, obj: Any) -> Position:
        day = local_date(getattr(obj, self.study_date_field), obj.subject.site.tzinfo)
        return timeline_from(obj, obj.subject).position(day)

    @admin.display(description="study day")
    def study_day(self, obj: Any) -> int | None:
        return self._position(obj).study_day

    @admin.display(description="course day")
    def course_day(self, obj: Any) -> str:
        position = self._position(obj)
        return "—" if position.course_number is None else f"C{position.course_number} D{position.course_day}"

    def rule(self, data: dict[str, Any], request: HttpRequest) -> None:
        raise NotImplementedError

    # --- a frozen or locked subject: the form is read-only, with the lock's reason, before anyone types ----

    def _named_subject(self, request: HttpRequest) -> Subject | None:
        """The subject an add form was opened for (``?subject=``), within the user's sites."""
        subject_id = request.GET.get("subject", "")
        if not subject_id.isdigit():
            return None
        return Subject.objects.filter(access_of(request.user).site_q()).filter(pk=int(subject_id)).first()

    def changeform_view(self, request: HttpRequest, object_id: str | None = None, form_url: str = "",
                        extra_context: dict[str, Any] | None = None) -> Any:
        obj = self.get_object(request, unquote(object_id)) if object_id else None
        subject = getattr(obj, "subject", None) if obj is not None else self._named_subject(request)
        lock = lock_message(subject) if subject is not None else None
        request.desk_lock = lock  # type: ignore[attr-defined]  # read by get_form and get_inline_instances
        if lock is not None:
            extra_context = {**(extra_context or {}), "desk_lock": lock, "show_save": False,
                             "show_save_and_continue": False, "show_save_and_add_another": False}
        return super().changeform_view(request, object_id, form_url, extra_context)

    def get_inline_instances(self, request: HttpRequest, obj: Any = None) -> list[Any]:
        inlines = super().get_inline_instances(request, obj)
        if getattr(request, "desk_lock", None) is not None:
            for inline in inlines:
                inline.max_num = 0  # existing rows stay visible; no new row is offered
        return inlines

    def write(self, data: dict[str, Any], request: HttpRequest) -> Any:
        raise NotImplementedError

    def amend_fields(self) -> frozenset[str]:
        return amendments.amendable_fields(self.model)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # A saved record opens as a correction form when it has amendable fields (a reason is required).
        return (obj is None or bool(self.amend_fields())) and super().has_change_permission(request, obj)

    # Django takes a list of names; django-stubs' result type is an invariant list of unions.
    def get_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:  # type: ignore[override]
        if obj is None:
            return self.add_fields
        fields = [*self.add_fields, *[f for f in self.get_readonly_fields(request, obj) if f not in self.add_fields]]
        if self.amend_fields() and self.has_change_permission(request, obj):
            fields.append(amendments.REASON_FIELD)
        return fields

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        if obj is None:
            return list(self.readonly_fields)
        fixed = [f for f in self.add_fields if f not in self.amend_fields()]
        if not self.has_change_permission(request, obj):
            fixed = list(self.add_fields)
        return [*fixed, *[f for f in self.readonly_fields if f not in fixed]]

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        if obj is not None and self.amend_fields():
            kwargs["form"] = AmendmentForm
        base = super().get_form(request, obj, change=change, **kwargs)
        model_admin = self

        class ServiceForm(base):  # type: ignore[misc, valid-type]
            def clean(self) -> dict[str, Any]:
                data = super().clean()
                subject = obj.subject if obj is not None else data.get("subject")
                if subject is not None:  # the typed times are the subject's site clock
                    read_in_site_time(self, subject.site)
                if subject is not None:  # a frozen or locked subject: say so on the form
                    _guard(self, lambda: check_writable(trial_id=subject.trial_id, site_id=subject.site_id,
                                                        subject_id=subject.pk))
                if obj is None:
                    _guard(self, lambda: model_admin.rule(data, request))
                elif model_admin.amend_fields():
                    _guard(self, lambda: amendments.check_record_amendment(
                        record=obj, changes=model_admin.changes(self), reason=data.get(amendments.REASON_FIELD, "")))
                return data

        return _read_only_if_locked(request, ServiceForm)

    def changes(self, form: forms.BaseForm) -> dict[str, Any]:
        return {name: form.cleaned_data[name] for name in form.changed_data if name in self.amend_fields()}

    def save_model(self, request: HttpRequest, obj: Any, form: forms.Form, change: bool) -> None:
        if change and not self.amend_fields():
            return  # a page whose inline rows (e.g. doses) are saved by save_formset
        if change:
            saved = self.model.objects.get(pk=obj.pk)
            amendments.amend_record(record=saved, changes=self.changes(form), by=acting_user(request),
                                    reason=form.cleaned_data.get(amendments.REASON_FIELD, ""))
            return
        written = self.write(form.cleaned_data, request)
        obj.pk = written.pk
        obj.__dict__.update({k: v for k, v in written.__dict__.items() if not k.startswith("_")})


def _read_only_if_locked(request: HttpRequest, form_class: Any) -> Any:
    if getattr(request, "desk_lock", None) is not None:
        for field in form_class.base_fields.values():
            field.disabled = True
    return form_class


class AmendmentForm(forms.ModelForm):
    """A saved record's correction: the changed values and the reason, kept in the audit trail."""

    reason_for_change = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 2}),
                                        help_text="Required when a saved value is changed; kept in the audit trail.")


@admin.register(ApheresisCollection)
class CollectionAdmin(ServiceAdmin):
    study_date_field = "collected_on"
    add_fields = ["subject", "collection_id", "collected_on", "cd3_cells_1e9"]
    list_display = ["collection_id", "subject", "collected_on", "cd3_cells_1e9"]
    list_select_related = ["subject__site"]
    search_fields = ["collection_id", "subject__code"]

    def rule(self, data: dict[str, Any], request: HttpRequest) -> None:
        treatment.check_collection(subject=data["subject"], collected_on=data["collected_on"],
                                   collection_id=data["collection_id"])

    def write(self, data: dict[str, Any], request: HttpRequest) -> Any:
        return treatment.record_collection(by=acting_user(request), **data)


@admin.register(DonorCollection)
class DonorCollectionAdmin(ServiceAdmin):
    """The donor collection of a donor-derived (allogeneic) product, recorded for its recipient."""

    study_date_field = "collected_on"
    add_fields = ["subject", "donor_code", "donor_type", "hla_matched", "hla_total", "collection_id",
                  "collected_on"]
    list_display = ["collection_id", "subject", "donor_code", "donor_type", "hla_match", "collected_on"]
    list_filter = ["donor_type"]
    list_select_related = ["subject__site"]
    search_fields = ["collection_id", "donor_code", "subject__code"]

    @admin.display(description="HLA match")
    def hla_match(self, obj: DonorCollection) -> str:
        return obj.hla_match

    def rule(self, data: dict[str, Any], request: HttpRequest) -> None:
        treatment.check_donor_collection(**data)

    def write(self, data: dict[str, Any], request: HttpRequest) -> Any:
        return treatment.record_donor_collection(by=acting_user(request), **data)


def _scoped_collections(model: Any, request: HttpRequest) -> Any:
    """Collections (own or donor) of subjects whose data the user enters, labelled with the subject's code."""
    return model.objects.filter(access_of(request.user).site_q(
        trial="subject__trial", site="subject__site", roles=ENTRY_ROLES)).select_related("subject")


class CollectionChoice(forms.ModelChoiceField):
    def label_from_instance(self, obj: Any) -> str:
        return f"{obj.subject.code}: {obj}"


def _failed_on(data: dict[str, Any]) -> dt.date:
    return data.get("failed_on") or dt.date.today()


@admin.register(ProductLot)
class ProductLotAdmin(ServiceAdmin):
    """Registration on add; release or manufacturing failure on the change page."""

    study_date_field = "release_date"
    add_fields = ["subject", "product", "lot_number", "source", "collection", "donor_collection"]
    release_fields = ["release_date", "viability_pct", "car_positive_pct", "total_viable_car_cells", "qc_pass",
                      "failed_on", "failure_reason"]
    list_display = ["lot_number", "subject", "source", "status", "release_date", "total_viable_car_cells"]
    list_filter = ["status", "source"]
    list_select_related = ["subject__site"]
    search_fields = ["lot_number", "subject__code"]

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        if obj is not None and obj.status != ProductLot.Status.MANUFACTURING:
            return False
        return ClinicalAdmin.has_change_permission(self, request, obj)

    # Django takes a list of names; django-stubs' result type is an invariant list of unions.
    def get_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:  # type: ignore[override]
        return self.add_fields if obj is None else [*self.add_fields, "donor_type", "status", *self.release_fields]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [] if obj is None else [*self.add_fields, "donor_type", "status"]

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        # The recipient's own collections and donor collections, at the sites where the user enters data.
        if db_field.name in ("collection", "donor_collection"):
            kwargs["queryset"] = _scoped_collections(db_field.related_model, request)
            kwargs["form_class"] = CollectionChoice
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def rule(self, data: dict[str, Any], request: HttpRequest) -> None:
        if "subject" in data:  # registration
            treatment.check_lot_registration(subject=data["subject"], product=data["product"], source=data["source"],
                                             collection=data.get("collection"),
                                             donor_collection=data.get("donor_collection"))
            treatment.check_new_lot_number(lot_number=data["lot_number"])

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        form = super().get_form(request, obj, change=change, **kwargs)
        if obj is None:
            return form

        class ReleaseForm(form):  # type: ignore[misc, valid-type]
            def clean(self) -> dict[str, Any]:
                forms.ModelForm.clean(self)
                data = self.cleaned_data
                if data.get("failure_reason"):
                    _guard(self, lambda: treatment.check_manufacturing_failure(
                        lot=obj, failed_on=_failed_on(data), reason=data["failure_reason"]))
                elif not self.errors:
                    _guard(self, lambda: treatment.check_release(
                        lot=obj, release_date=data.get("release_date") or dt.date.max,
                        qc_pass=bool(data.get("qc_pass")), total_viable_car_cells=data.get("total_viable_car_cells")))
                return data

        return _read_only_if_locked(request, ReleaseForm)

    def save_model(self, request: HttpRequest, obj: Any, form: forms.Form, change: bool) -> None:
        if not change:
            return super().save_model(request, obj, form, change)
        data = form.cleaned_data
        lot = ProductLot.objects.get(pk=obj.pk)
        if data.get("failure_reason"):
            treatment.record_manufacturing_failure(lot=lot, failed_on=_failed_on(data), reason=data["failure_reason"],
                                                   by=acting_user(request))
        else:
            treatment.release_lot(lot=lot, release_date=data["release_date"], viability_pct=data["viability_pct"],
                                  car_positive_pct=data["car_positive_pct"],
                                  total_viable_car_cells=data["total_viable_car_cells"], qc_pass=data["qc_pass"],
                                  by=acting_user(request))

    def write(self, data: dict[str, Any], request: HttpRequest) -> Any:
        return treatment.register_lot(by=acting_user(request), **data)


@admin.register(BridgingTherapy)
class BridgingAdmin(ServiceAdmin):
    study_date_field = "started_on"
    add_fields = ["subject", "regimen", "started_on", "ended_on"]
    list_display = ["subject", "regimen", "started_on", "ended_on"]
    list_select_related = ["subject__site"]
    search_fields = ["subject__code"]

    def rule(self, data: dict[str, Any], request: HttpRequest) -> None:
        subject = data["subject"]
        treatment.check_treatment_state(subject=subject, allowed=(treatment.S.ENROLLED, treatment.S.APHERESED),
                                        what="bridging therapy")
        treatment.check_bridging_dates(subject=subject, started_on=data["started_on"], ended_on=data.get("ended_on"))

    def write(self, data: dict[str, Any], request: HttpRequest) -> Any:
        return treatment.record_bridging(by=acting_user(request), **data)


class DoseInline(admin.TabularInline):
    model = LymphodepletionDose
    fields = ["agent", "given_on", "day", "planned_mg", "administered_mg", "deviation_reason"]
    readonly_fields = ["day", "planned_mg"]
    extra = 1
    can_delete = False

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return True  # the parent course page already checked scope

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return obj is not None and access_of(request.user).can_enter(trial_id=obj.subject.trial_id,
                                                                     site_id=obj.subject.site_id)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "agent":
            course_id = request.resolver_match.kwargs.get("object_id") if request.resolver_match else None
            kwargs["queryset"] = db_field.related_model.objects.filter(
                # pk=None (on the add page) is a valid IS NULL lookup, which django-stubs refuses.
                regimen__in=LymphodepletionCourse.objects.filter(pk=course_id).values("regimen"))  # type: ignore[misc]
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def get_formset(self, request: HttpRequest, obj: Any = None, **kwargs: Any) -> Any:
        formset = super().get_formset(request, obj, **kwargs)

        class DoseForm(formset.form):  # type: ignore[name-defined]
            def clean(self) -> dict[str, Any]:
                data = super().clean()
                if obj is not None and data.get("agent") and not self.instance.pk:
                    _guard(self, lambda: treatment.check_lymphodepletion_dose(
                        course=obj, agent=data["agent"], given_on=data["given_on"],
                        administered_mg=data["administered_mg"], deviation_reason=data.get("deviation_reason", "")))
                return data

        formset.form = DoseForm
        return formset


@admin.register(LymphodepletionCourse)
class LymphodepletionCourseAdmin(ServiceAdmin):
    study_date_field = "planned_infusion_on"
    add_fields = ["subject", "regimen", "planned_infusion_on", "bsa_formula"]
    list_display = ["subject", "course_number", "regimen", "planned_infusion_on", "bsa_m2", "bsa_formula"]
    list_select_related = ["subject__site", "regimen"]
    search_fields = ["subject__code"]
    inlines = [DoseInline]

    def get_inlines(self, request: HttpRequest, obj: Any = None) -> list[Any]:
        return [] if obj is None else self.inlines

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return ClinicalAdmin.has_change_permission(self, request, obj)  # doses are added on the course page

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [] if obj is None else [*self.add_fields, "course_number", "bsa_m2", "measurement"]

    def rule(self, data: dict[str, Any], request: HttpRequest) -> None:
        if "subject" in data:
            treatment.check_lymphodepletion_course(subject=data["subject"], regimen=data["regimen"],
                                                   planned_infusion_on=data["planned_infusion_on"])

    def write(self, data: dict[str, Any], request: HttpRequest) -> Any:
        return treatment.start_lymphodepletion(by=acting_user(request), **data)

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        course = form.instance
        # formset.save() is not called, so set what the admin's change message reads from it.
        formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []
        for dose_form in formset.forms:
            data = dose_form.cleaned_data
            if dose_form.instance.pk or not data or not data.get("agent"):
                continue
            formset.new_objects.append(treatment.record_lymphodepletion_dose(
                course=course, agent=data["agent"], given_on=data["given_on"], administered_mg=data["administered_mg"],
                deviation_reason=data.get("deviation_reason", ""), by=acting_user(request)))


@admin.register(Infusion)
class InfusionAdmin(ServiceAdmin):
    study_date_field = "infused_on"
    add_fields = ["subject", "lot", "dose_level", "cells_per_kg", "infused_at", "fraction_number",
                  "planned_fractions"]
    list_display = ["subject", "course_number", "fraction_number", "infused_on", "infused_at_site_time", "lot",
                    "cells_per_kg", "total_cells"]
    list_select_related = ["subject__site", "lot"]
    search_fields = ["subject__code", "lot__lot_number"]
    infused_at_site_time = site_time_column("infused_at", "infused at")

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [] if obj is None else ["course_number", "infused_on", "weight_kg", "total_cells", "measurement"]

    def rule(self, data: dict[str, Any], request: HttpRequest) -> None:
        subject = data["subject"]
        infused_on = local_date_of(data["infused_at"], subject.site.tzinfo)
        treatment.check_infusion(subject=subject, lot=data["lot"], dose_level=data["dose_level"],
                                 cells_per_kg=data["cells_per_kg"], infused_on=infused_on,
                                 fraction_number=data["fraction_number"], planned_fractions=data["planned_fractions"])

    def write(self, data: dict[str, Any], request: HttpRequest) -> Any:
        return treatment.record_infusion(by=acting_user(request), **data)

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "lot":
            kwargs["queryset"] = ProductLot.objects.filter(access_of(request.user).site_q(
                trial="subject__trial", site="subject__site"), status=ProductLot.Status.RELEASED)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


# The graders' review flags in words (they are stored as codes).
FLAG_WORDS = {
    grading.FLAG_VASOPRESSIN_ALONE: "Vasopressin alone counted as one vasopressor",
    grading.FLAG_FEVER_MASKED: "Fever requirement met by earlier antipyretic or anti-cytokine therapy",
    grading.FLAG_NC_FLOW_MISSING: "Nasal cannula flow not recorded: counted as low-flow",
    grading.FLAG_PRESSORS_WITHOUT_HYPOTENSION: "Vasopressors recorded without hypotension",
    grading.FLAG_ICE_NOT_PERFORMED: "ICE score not performed",
    grading.FLAG_CAPD_NOT_PERFORMED: "CAPD not performed",
    grading.FLAG_ICE_IGNORED: "ICE recorded, but the child is graded with CAPD",
    grading.FLAG_CAPD_IGNORED: "CAPD recorded, but the subject is graded with the ICE score",
    grading.FLAG_UNAROUSABLE_OTHER_CAUSE: "Unarousable from another cause: the ICE domain is still graded",
}


class AssessmentInline(SiteTimeFieldsMixin, admin.StackedInline):
    category: str  # the adverse event category the assessment is made for (set by each subclass)
    rule: Callable[..., None]  # the service's check of a new assessment (set by each subclass)
    extra = 0
    can_delete = False
    readonly = ["derived_grade", "algorithm", "review_flags"]

    @admin.display(description="review flags")
    def review_flags(self, obj: Any) -> str:
        return "; ".join(FLAG_WORDS.get(flag, flag.replace("_", " ").capitalize()) for flag in obj.flags) or "—"

    def get_formset(self, request: HttpRequest, obj: Any = None, **kwargs: Any) -> Any:
        formset = super().get_formset(request, obj, **kwargs)
        if obj is None:
            return formset

        rule = self.rule

        class AssessmentForm(formset.form):  # type: ignore[name-defined]
            def clean(self) -> dict[str, Any]:
                data = super().clean()
                read_in_site_time(self, obj.subject.site)  # assessed_at on the subject's site clock
                if data.get("assessed_at") and not self.instance.pk:  # a new row: the rule, before saving
                    values = assessment_values(data)
                    _guard(self, lambda: rule(event=obj, **values))
                return data

        formset.form = AssessmentForm
        return formset

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return True

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return obj is not None and obj.category == self.category and access_of(request.user).can_enter(
            trial_id=obj.subject.trial_id, site_id=obj.subject.site_id)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return self.readonly


def assessment_values(data: dict[str, Any]) -> dict[str, Any]:
    """An assessment row's cleaned values as the services take them: time, override and the components."""
    components = {k: v for k, v in data.items() if k not in ("id", "event", "DELETE")}
    return {"assessed_at": components.pop("assessed_at"), "override_grade": components.pop("override_grade", None),
            "override_reason": components.pop("override_reason", ""), "components": components}


class CrsInline(AssessmentInline):
    model = CrsAssessment
    category = AdverseEvent.Category.CRS
    rule = staticmethod(safety.check_crs_assessment)
    exclude = ["recorded_by"]


class IcansInline(AssessmentInline):
    model = IcansAssessment
    category = AdverseEvent.Category.ICANS
    rule = staticmethod(safety.check_icans_assessment)
    exclude = ["recorded_by"]
    readonly = ["ice_score", "derived_grade", "algorithm", "review_flags"]


EVENT_FIELDS = ["subject", "category", "ctcae_term", "term", "system_organ_class", "meddra_code",
                "onset_on", "resolved_on", "grade", "serious",
                "sae_death", "sae_life_threatening", "sae_hospitalisation", "sae_disability", "sae_congenital",
                "sae_important", "site_aware_at", "related_to_product", "related_to_lymphodepletion", "outcome",
                "action_taken", "death_on"]


class SaeReportInline(SiteTimeFieldsMixin, admin.TabularInline):
    """Expedited reports of a serious event: added here, saved through the service, never changed."""

    model = SaeReport
    fields = ["kind", "recipient", "sent_at", "reference"]
    extra = 0
    can_delete = False
    verbose_name_plural = "SAE reports"

    def get_formset(self, request: HttpRequest, obj: Any = None, **kwargs: Any) -> Any:
        formset = super().get_formset(request, obj, **kwargs)
        if obj is None:
            return formset

        class ReportForm(formset.form):  # type: ignore[name-defined]
            def clean(self) -> dict[str, Any]:
                data = super().clean()
                read_in_site_time(self, obj.subject.site)  # sent_at on the subject's site clock
                if data.get("sent_at") and data.get("kind") and data.get("recipient") and not self.instance.pk:
                    _guard(self, lambda: safety.check_sae_report(event=obj, kind=data["kind"],
                                                                 recipient=data["recipient"], sent_at=data["sent_at"]))
                return data

        formset.form = ReportForm
        return formset

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return True  # the parent event page already checked scope

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return obj is not None and obj.serious and access_of(request.user).can_enter(
            trial_id=obj.subject.trial_id, site_id=obj.subject.site_id)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class SaeOverdueFilter(admin.SimpleListFilter):
    title = "SAE report"
    parameter_name = "sae_report"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("overdue", "SAE report overdue")]

    def queryset(self, request: HttpRequest, queryset: Any) -> Any:
        return queryset.filter(sae_report_pending()) if self.value() == "overdue" else queryset


@admin.register(AdverseEvent)
class AdverseEventAdmin(ServiceAdmin):
    study_date_field = "onset_on"
    add_fields = EVENT_FIELDS
    list_display = ["subject", "term", "category", "grade", "onset_on", "resolved_on", "serious",
                    "report_due_at_site_time"]
    list_filter = ["category", "serious", SaeOverdueFilter, "grade",
                   ("subject__site", admin.RelatedOnlyFieldListFilter)]
    list_select_related = ["subject__site"]
    search_fields = ["subject__code", "term", "ctcae_term__term", "ctcae_term__meddra_code"]
    autocomplete_fields = ["ctcae_term"]
    inlines = [CrsInline, IcansInline, SaeReportInline]
    report_due_at_site_time = site_time_column("report_due_at", "report due")

    def get_inlines(self, request: HttpRequest, obj: Any = None) -> list[Any]:
        if obj is None:
            return []
        reports = [SaeReportInline] if obj.serious else []
        if obj.category == AdverseEvent.Category.CTCAE:
            return reports
        return [CrsInline if obj.category == AdverseEvent.Category.CRS else IcansInline, *reports]

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        form = super().get_form(request, obj, change=change, **kwargs)
        if "term" in form.base_fields:  # a coded event takes its dictionary term when none is reported
            form.base_fields["term"].required = False
        return form

    def get_urls(self) -> list[Any]:
        overdue = path("sae-overdue/", self.admin_site.admin_view(self.overdue_view),
                       name="patients_adverseevent_sae_overdue")
        return [overdue, *super().get_urls()]

    def overdue_view(self, request: HttpRequest) -> HttpResponse:
        """Serious events whose expedited report is overdue, by site (the user's sites only)."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        by_site: dict[Any, list[AdverseEvent]] = {}
        for event in list_overdue_saes(user=request.user):
            by_site.setdefault(event.subject.site, []).append(event)
        context = {**self.admin_site.each_context(request), "opts": self.model._meta, "by_site": by_site,
                   "title": "SAE reports overdue", "now": timezone.now()}
        return TemplateResponse(request, "admin/patients/adverseevent/sae_overdue.html", context)

    readonly_fields = ["grade_scale", "report_due_at"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        fixed = super().get_readonly_fields(request, obj)
        if obj is not None and obj.category != AdverseEvent.Category.CTCAE and "grade" not in fixed:
            fixed.append("grade")  # derived from the assessments below
        return fixed

    def _input(self, data: dict[str, Any]) -> safety.EventInput:
        return safety.EventInput(**{k: v for k, v in data.items() if k in safety.EventInput.__dataclass_fields__})

    def rule(self, data: dict[str, Any], request: HttpRequest) -> None:
        if "subject" in data:
            safety.check_adverse_event(subject=data["subject"], data=self._input(data))

    def write(self, data: dict[str, Any], request: HttpRequest) -> Any:
        return safety.record_adverse_event(subject=data["subject"], data=self._input(data), by=acting_user(request))

    def save_formset(self, request: HttpRequest, form: Any, formset: Any, change: bool) -> None:
        event = AdverseEvent.objects.get(pk=form.instance.pk)
        # formset.save() is not called, so set what the admin's change message reads from it.
        formset.new_objects, formset.changed_objects, formset.deleted_objects = [], [], []
        if formset.model is SaeReport:
            for report_form in formset.forms:
                data = report_form.cleaned_data or {}
                if not report_form.instance.pk and data.get("sent_at"):
                    formset.new_objects.append(safety.record_sae_report(
                        event=event, kind=data["kind"], recipient=data["recipient"], sent_at=data["sent_at"],
                        reference=data.get("reference", ""), by=acting_user(request)))
            return
        record = safety.record_crs_assessment if formset.model is CrsAssessment else safety.record_icans_assessment
        for assessment_form in formset.forms:
            data = dict(assessment_form.cleaned_data or {})
            if assessment_form.instance.pk or not data.get("assessed_at"):
                continue
            formset.new_objects.append(record(event=event, by=acting_user(request), **assessment_values(data)))


@admin.register(ConcomitantMedication)
class MedicationAdmin(ServiceAdmin):
    study_date_field = "given_at"
    add_fields = ["subject", "adverse_event", "drug", "drug_name", "dose", "dose_unit", "route", "given_at",
                  "indication"]
    list_display = ["subject", "drug", "dose", "dose_unit", "route", "given_at_site_time", "adverse_event"]
    list_select_related = ["subject__site", "adverse_event"]
    search_fields = ["subject__code"]
    list_filter = ["drug"]
    given_at_site_time = site_time_column("given_at", "given at")

    def rule(self, data: dict[str, Any], request: HttpRequest) -> None:
        safety.check_medication(subject=data["subject"], drug=data["drug"], drug_name=data.get("drug_name", ""),
                                given_at=data["given_at"], adverse_event=data.get("adverse_event"))

    def write(self, data: dict[str, Any], request: HttpRequest) -> Any:
        return safety.record_medication(by=acting_user(request), **data)

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "adverse_event":
            kwargs["queryset"] = AdverseEvent.objects.filter(access_of(request.user).site_q(
                trial="subject__trial", site="subject__site")).select_related("subject")
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


@admin.register(ResponseAssessment)
class ResponseAdmin(ServiceAdmin):
    study_date_field = "assessed_on"
    add_fields = ["subject", "visit", "assessed_on", "category", "marrow_blasts_pct", "mrd_flow_pct",
                  "mrd_sensitivity_pct", "bcr_abl1_is_pct", "extramedullary_status", "cns_status", "antigen_status"]
    list_display = ["subject", "visit", "assessed_on", "category", "mrd_flow_pct", "antigen_status"]
    list_select_related = ["subject__site", "visit"]
    list_filter = ["category"]
    search_fields = ["subject__code"]

    def _values(self, data: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in data.items() if k not in ("subject", "visit", "assessed_on", "category")}

    def rule(self, data: dict[str, Any], request: HttpRequest) -> None:
        outcome.check_response(subject=data["subject"], assessed_on=data["assessed_on"], category=data["category"],
                               visit=data.get("visit"), values=self._values(data))

    def write(self, data: dict[str, Any], request: HttpRequest) -> Any:
        return outcome.record_response(subject=data["subject"], assessed_on=data["assessed_on"],
                                       category=data["category"], visit=data.get("visit"), by=acting_user(request),
                                       **self._values(data))


@admin.register(FollowUp)
class FollowUpAdmin(ServiceAdmin):
    study_date_field = "event_on"
    add_fields = ["subject", "kind", "event_on", "cause_of_death", "cause_of_death_unknown", "detail"]
    list_display = ["subject", "kind", "event_on", "cause_of_death", "cause_of_death_unknown"]
    list_select_related = ["subject__site"]
    list_filter = ["kind"]
    search_fields = ["subject__code"]

    def rule(self, data: dict[str, Any], request: HttpRequest) -> None:
        outcome.check_follow_up(subject=data["subject"], kind=data["kind"], event_on=data["event_on"],
                                cause_of_death=data.get("cause_of_death", ""),
                                cause_of_death_unknown=data.get("cause_of_death_unknown", False))

    def write(self, data: dict[str, Any], request: HttpRequest) -> Any:
        return outcome.record_follow_up(by=acting_user(request), **data)


# --- the subject's course, in order, with study days ---------------------------------------------------


def _change_url(record: Any) -> str:
    """The admin page of a course record (the course list links each row to it)."""
    if record is None:
        return ""
    return reverse(f"admin:patients_{record._meta.model_name}_change", args=[record.pk])


def _assessments_of(subject: Any, model: type[CrsAssessment] | type[IcansAssessment]) -> list[Any]:
    """The CRS or ICANS assessments of the subject's events, by event and time (SQL compiled once)."""
    def build(subject_id: int) -> QuerySet[Any]:
        in_order = ("event__onset_on", "event_id", "assessed_at", "pk")  # their order, within one subject
        return model._default_manager.filter(event__subject_id=subject_id).order_by(*in_order)

    return compiled(("assessments of a subject", model), build).rows(subject.pk)


def subject_course(subject: Any) -> list[dict[str, Any]]:
    """Every dated record of the subject in order, with study day (day 0 = first infusion).

    A fixed number of queries (one per kind of record), however long the course.
    """
    tz, zone = subject.site.tzinfo, subject.site.time_zone  # loaded whether or not a record needs the site's date
    infusions = sorted(records_of(subject, "infusions", "lot", "dose_level"), key=lambda i: (i.infused_on, i.pk))
    timeline = timeline_of(subject)
    rows: list[tuple[dt.date, int, str, str, str]] = []

    def add(day: dt.date, kind: str, text: str, order: int = 0, record: Any = None) -> None:
        rows.append((day, order, kind, text, _change_url(record)))

    for c in consents_of(subject):
        add(c.consented_on, "Consent", f"Consent {c.version}", record=c)
        if c.withdrawn_on:
            add(c.withdrawn_on, "Consent", f"Consent withdrawn: {c.withdrawal_reason}", 9, c)
    for a in records_of(subject, "collections"):
        add(a.collected_on, "Apheresis", f"Collection {a.collection_id}", record=a)
    for d in records_of(subject, "donor_collections"):
        hla = f", HLA {d.hla_match}" if d.hla_total is not None else ""
        add(d.collected_on, "Donor collection", f"Collection {d.collection_id} from donor {d.donor_code} "
            f"({d.get_donor_type_display()}{hla})", record=d)
    for lot in records_of(subject, "lots"):
        if lot.release_date:
            add(lot.release_date, "Product", f"Lot {lot.lot_number} released "
                f"({display.cells(lot.total_viable_car_cells)}, viable CAR+)", record=lot)
        if lot.failed_on:
            add(lot.failed_on, "Product", f"Lot {lot.lot_number} manufacture failed: {lot.failure_reason}", record=lot)
    for b in records_of(subject, "bridging"):
        add(b.started_on, "Bridging", f"{b.regimen}" + (f" until {b.ended_on}" if b.ended_on else ""), record=b)
    for d in doses_of(subject):
        note = f" (deviation: {d.deviation_reason})" if d.deviation_reason else ""
        add(d.given_on, "Lymphodepletion", f"{d.agent.get_agent_display()} {d.administered_mg} mg "
            f"(planned {d.planned_mg} mg, BSA {d.course.bsa_m2} m²){note}", 1, d.course)
    for i in infusions:
        add(i.infused_on, "Infusion", f"Course {i.course_number}, fraction {i.fraction_number}/"
            f"{i.planned_fractions}: {display.cells_per_kg(i.cells_per_kg)}, {display.cells(i.total_cells)}, "
            f"lot {i.lot.lot_number}", 2, i)
    # Explicit queries, not prefetch_related (which skips its queries when there is no event).
    assessments: dict[int, list[Any]] = {}
    for assessment in [*_assessments_of(subject, CrsAssessment), *_assessments_of(subject, IcansAssessment)]:
        assessments.setdefault(assessment.event_id, []).append(assessment)
    for e in records_of(subject, "adverse_events"):
        label = {"crs": "CRS", "icans": "ICANS"}.get(e.category, "Adverse event")
        sae = ", serious" if e.serious else ""
        add(e.onset_on, label, f"{e.term}, grade {e.grade} ({e.grade_scale}){sae}" +
            (f", resolved {e.resolved_on}" if e.resolved_on else ""), 3, e)
        for assessment in assessments.get(e.pk, []):
            local = assessment.assessed_at.astimezone(tz)
            override = (f" (derived {assessment.derived_grade}, overridden: {assessment.override_reason})"
                        if assessment.override_grade is not None else "")
            text = f"Assessment at {local:%H:%M} ({zone}): grade {assessment.grade}{override}"
            add(local_date_of(assessment.assessed_at, tz), label, text, 4, e)
    for m in records_of(subject, "medications"):
        name = m.drug_name or m.get_drug_display()
        given = m.given_at.astimezone(tz)
        indication = f" for {m.indication}" if m.indication else ""
        add(local_date_of(m.given_at, tz), "Medication", f"{name} {m.dose.normalize():f} {m.dose_unit} "
            f"{m.get_route_display()} at {given:%H:%M} ({zone}){indication}", 5, m)
    for r in records_of(subject, "responses", "visit"):
        visit = f" at {r.visit.code}" if r.visit else ""
        antigen = f", {r.get_antigen_status_display()}" if r.antigen_status else ""
        add(r.assessed_on, "Response", f"{r.get_category_display()}{visit}{antigen}", 6, r)
    for f in records_of(subject, "follow_ups"):
        detail = outcome.death_detail(cause_of_death=f.cause_of_death, cause_of_death_unknown=f.cause_of_death_unknown,
                                      detail=f.detail)
        add(f.event_on, "Follow-up", f"{f.get_kind_display()} {detail}".strip(), 7, f)
    rows.sort(key=lambda row: (row[0], row[1]))
    return [{"date": day, "position": timeline.position(day), "kind": kind, "text": text, "url": url}
            for day, _order, kind, text, url in rows]


# --- the CTCAE v5.0 dictionary (loaded by migration and ``import_ctcae``; read by everyone who enters AEs) ----


@admin.register(CtcaeTerm)
class CtcaeTermAdmin(admin.ModelAdmin):
    list_display = ["term", "meddra_code", "system_organ_class", "grades"]
    list_filter = ["system_organ_class"]
    search_fields = ["term", "meddra_code"]
    ordering = ["term"]

    @admin.display(description="allowed grades")
    def grades(self, obj: CtcaeTerm) -> str:
        return obj.grades_label()

    def has_module_permission(self, request: HttpRequest) -> bool:
        return access_of(request.user).reads_any

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return access_of(request.user).reads_any  # autocomplete on the adverse event form reads it too

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # the NCI's spreadsheet is the source: ``manage.py import_ctcae``

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
