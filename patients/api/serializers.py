"""Serializers check shape only; every write calls the same service as the admin."""

from __future__ import annotations

from typing import Any

from django.db.models import Q, QuerySet
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from config.api import acting_user
from patients.models import (
    AdverseEvent,
    ApheresisCollection,
    BodyMeasurement,
    BridgingTherapy,
    ConcomitantMedication,
    Consent,
    CrsAssessment,
    DonorCollection,
    EligibilityAssessment,
    FollowUp,
    IcansAssessment,
    Infusion,
    LymphodepletionCourse,
    LymphodepletionDose,
    OffStudyReason,
    ProductLot,
    ResponseAssessment,
    Subject,
    SubjectTransition,
)
from trials.access import access_of


def subject_lookup(value: str) -> dict[str, Any]:
    """The filter a subject reference stands for: an id (digits), a site's screening number written
    ``<site code>/<screening number>`` (e.g. ``BJ01/SCR-017``; neither a code nor an id has a "/"), or a code."""
    if value.isascii() and value.isdigit():  # str.isdigit() alone admits "²", which int() refuses
        return {"pk": int(value)}
    site, slash, number = value.partition("/")
    if slash:
        return {"site__code": site, "screening_number": number} if number else {"pk__in": []}
    return {"code": value}


@extend_schema_field(OpenApiTypes.STR)
class ScopedSubjectField(serializers.RelatedField):
    """A subject by id, by code, or by ``<site code>/<screening number>``, among the subjects the caller may see.

    Visibility, not data entry, decides whether the subject resolves: a monitor naming a subject of
    their own site gets the service's 403 ``not_permitted``, not a misleading "no such subject".
    """

    default_error_messages = {
        "does_not_exist": "No subject {value} in your sites.",
        "ambiguous": "Subject {value} exists in several of your trials; use its id.",
    }

    def get_queryset(self) -> QuerySet:
        user = self.context["request"].user
        return Subject.objects.filter(access_of(user).site_q()).select_related("trial", "site")

    def to_internal_value(self, data: Any) -> Subject:
        value = str(data)
        matches = list(self.get_queryset().filter(**subject_lookup(value))[:2])
        if not matches:
            self.fail("does_not_exist", value=value)
        if len(matches) > 1:
            self.fail("ambiguous", value=value)
        return matches[0]

    def to_representation(self, value: Subject) -> str:
        return value.code


class ScopedRelatedField(serializers.PrimaryKeyRelatedField):
    """A record of a subject, by id, among those the caller may see (the service checks data entry)."""

    def __init__(self, model: Any, subject_path: str = "subject", **kwargs: Any) -> None:
        self.model, self.subject_path = model, subject_path
        super().__init__(**kwargs)

    def get_queryset(self) -> QuerySet:
        user = self.context["request"].user
        return self.model.objects.filter(access_of(user).site_q(
            trial=f"{self.subject_path}__trial", site=f"{self.subject_path}__site"))


class SubjectSerializer(serializers.ModelSerializer):
    trial = serializers.SlugRelatedField(slug_field="code", read_only=True)
    site = serializers.SlugRelatedField(slug_field="code", read_only=True)
    cohort = serializers.SlugRelatedField(slug_field="code", read_only=True)

    class Meta:
        model = Subject
        fields = ["id", "code", "screening_number", "trial", "site", "status", "screened_on", "sex", "age_at_consent",
                  "cohort",
                  "diagnosis", "fusion_genes", "mutations", "marrow_blasts_pct", "extramedullary_disease",
                  "cns_status", "prior_allo_hsct", "prior_cart", "prior_cart_target", "prior_cart_scfv_origin",
                  "prior_lines", "enrolled_on", "off_study_on", "off_study_reason", "off_study_detail"]
        read_only_fields = fields


class ScreeningSerializer(serializers.ModelSerializer):
    trial = serializers.SlugRelatedField(slug_field="code", queryset=Subject._meta.get_field("trial")
                                         .related_model.objects.all())
    site = serializers.SlugRelatedField(slug_field="code", queryset=Subject._meta.get_field("site")
                                        .related_model.objects.all())

    class Meta:
        model = Subject
        fields = ["trial", "site", "screened_on", "screening_number", "sex", "diagnosis", "fusion_genes", "mutations",
                  "marrow_blasts_pct", "extramedullary_disease", "cns_status", "prior_allo_hsct", "prior_cart",
                  "prior_cart_target", "prior_cart_scfv_origin", "prior_lines"]
        validators: list[Any] = []  # a taken screening number is the service's 409, not a generic 400

    def create(self, validated_data: dict[str, Any]) -> Subject:
        from patients.services.enrolment import screen_subject

        return screen_subject(by=acting_user(self.context["request"]), **validated_data)


class TransitionSerializer(serializers.ModelSerializer):
    recorded_by = serializers.StringRelatedField()

    class Meta:
        model = SubjectTransition
        fields = ["id", "from_status", "to_status", "effective_on", "reason", "recorded_by", "recorded_at"]


class ConsentSerializer(serializers.ModelSerializer):
    age_at_consent = serializers.IntegerField(min_value=0, max_value=120, required=False, write_only=True)

    class Meta:
        model = Consent
        fields = ["id", "version", "consented_on", "withdrawn_on", "withdrawal_reason", "age_at_consent"]
        read_only_fields = ["id", "withdrawn_on", "withdrawal_reason"]


class MeasurementSerializer(serializers.ModelSerializer):
    class Meta:
        model = BodyMeasurement
        fields = ["id", "measured_on", "height_cm", "weight_kg"]


class EligibilitySerializer(serializers.ModelSerializer):
    answers = serializers.DictField(child=serializers.BooleanField(), write_only=True,
                                    help_text="Criterion id -> met (inclusion met / exclusion present).")
    criteria = serializers.SerializerMethodField()

    class Meta:
        model = EligibilityAssessment
        fields = ["id", "assessed_on", "eligible", "confirmed_at", "answers", "criteria"]
        read_only_fields = ["id", "eligible", "confirmed_at"]

    def get_criteria(self, obj: EligibilityAssessment) -> dict[str, bool]:
        return {str(a.criterion): a.met for a in obj.answers.all()}


class EnrolSerializer(serializers.Serializer):
    cohort = serializers.CharField(help_text="Cohort code of the subject's trial.")
    enrolled_on = serializers.DateField()


class ScreenFailureSerializer(serializers.Serializer):
    failed_on = serializers.DateField()
    reason = serializers.CharField(allow_blank=True)


class WithdrawalSerializer(serializers.Serializer):
    withdrawn_on = serializers.DateField()
    reason = serializers.CharField(allow_blank=True)


class OffStudySerializer(serializers.Serializer):
    off_on = serializers.DateField()
    reason = serializers.ChoiceField(choices=OffStudyReason.choices)
    detail = serializers.CharField(allow_blank=True, required=False, default="")


def _subject_fields(model: Any, fields: list[str], read_only: list[str]) -> type[serializers.ModelSerializer]:
    meta = type("Meta", (), {"model": model, "fields": ["id", "subject", *fields], "read_only_fields": read_only})
    return type(f"{model.__name__}Serializer", (serializers.ModelSerializer,), {
        "Meta": meta, "subject": ScopedSubjectField()})


CollectionSerializer = _subject_fields(ApheresisCollection, ["collection_id", "collected_on", "cd3_cells_1e9"], [])
BridgingSerializer = _subject_fields(BridgingTherapy, ["regimen", "started_on", "ended_on"], [])
ResponseSerializer = _subject_fields(ResponseAssessment, [
    "visit", "assessed_on", "category", "marrow_blasts_pct", "mrd_flow_pct", "mrd_sensitivity_pct",
    "bcr_abl1_is_pct", "extramedullary_status", "cns_status", "antigen_status"], [])
FollowUpSerializer = _subject_fields(FollowUp, ["kind", "event_on", "cause_of_death", "cause_of_death_unknown",
                                                "detail"], [])


class DonorCollectionSerializer(serializers.ModelSerializer):
    subject = ScopedSubjectField()
    collection_id = serializers.CharField(max_length=40, help_text="Donor collection bag ID (unique).")  # a taken
    # bag ID is the service's 409 duplicate_collection_id, not the model's generic uniqueness 400

    class Meta:
        model = DonorCollection
        fields = ["id", "subject", "donor_code", "donor_type", "hla_matched", "hla_total", "collection_id",
                  "collected_on"]


@extend_schema_field({"oneOf": [{"type": "integer"}, {"type": "string"}]})
class ScopedDonorCollectionField(serializers.RelatedField):
    """A donor collection by id or by its collection (bag) id, among those the caller may see; shown as its id."""

    default_error_messages = {
        "does_not_exist": "No donor collection {value} in your sites.",
        "ambiguous": "{value} is both a donor collection id and a bag id; give the bag id.",
    }

    def get_queryset(self) -> QuerySet:
        user = self.context["request"].user
        return DonorCollection.objects.filter(access_of(user).site_q(trial="subject__trial", site="subject__site"))

    def to_internal_value(self, data: Any) -> DonorCollection:
        value = str(data)
        match = Q(collection_id=value)
        if value.isascii() and value.isdigit():
            match |= Q(pk=int(value))
        matches = list(self.get_queryset().filter(match)[:2])
        if not matches:
            self.fail("does_not_exist", value=value)
        if len(matches) > 1:
            self.fail("ambiguous", value=value)
        return matches[0]

    def use_pk_only_optimization(self) -> bool:
        return True  # shown as its id, read from the lot's own column: no query per listed lot

    def to_representation(self, value: Any) -> int:
        return value.pk


class LotSerializer(serializers.ModelSerializer):
    subject = ScopedSubjectField()
    collection = ScopedRelatedField(ApheresisCollection, required=False, allow_null=True)
    donor_collection = ScopedDonorCollectionField(required=False, allow_null=True,
                                                  help_text="A donor-derived lot's donor collection: id or bag id.")

    class Meta:
        model = ProductLot
        fields = ["id", "subject", "product", "lot_number", "source", "collection", "donor_collection", "donor_type",
                  "status", "release_date", "viability_pct", "car_positive_pct", "total_viable_car_cells", "qc_pass",
                  "failed_on", "failure_reason"]
        read_only_fields = ["id", "donor_type", "status", "release_date", "viability_pct", "car_positive_pct",
                            "total_viable_car_cells", "qc_pass", "failed_on", "failure_reason"]


class ReleaseSerializer(serializers.Serializer):
    release_date = serializers.DateField()
    viability_pct = serializers.DecimalField(max_digits=5, decimal_places=2, min_value=0, max_value=100)
    car_positive_pct = serializers.DecimalField(max_digits=5, decimal_places=2, min_value=0, max_value=100)
    total_viable_car_cells = serializers.DecimalField(max_digits=16, decimal_places=0, min_value=1)
    qc_pass = serializers.BooleanField()


class FailureSerializer(serializers.Serializer):
    failed_on = serializers.DateField()
    reason = serializers.CharField(allow_blank=True)


class DoseSerializer(serializers.ModelSerializer):
    class Meta:
        model = LymphodepletionDose
        fields = ["id", "agent", "day", "given_on", "planned_mg", "administered_mg", "deviation_reason"]
        read_only_fields = ["id", "day", "planned_mg"]


class CourseSerializer(serializers.ModelSerializer):
    subject = ScopedSubjectField()
    doses = DoseSerializer(many=True, read_only=True)

    class Meta:
        model = LymphodepletionCourse
        fields = ["id", "subject", "course_number", "regimen", "planned_infusion_on", "bsa_formula", "bsa_m2",
                  "measurement", "doses"]
        read_only_fields = ["id", "course_number", "bsa_m2", "measurement", "doses"]


class InfusionSerializer(serializers.ModelSerializer):
    subject = ScopedSubjectField()
    lot = ScopedRelatedField(ProductLot)
    study_day = serializers.SerializerMethodField()

    class Meta:
        model = Infusion
        fields = ["id", "subject", "lot", "dose_level", "course_number", "fraction_number", "planned_fractions",
                  "infused_at", "infused_on", "cells_per_kg", "weight_kg", "total_cells", "study_day"]
        read_only_fields = ["id", "course_number", "infused_on", "weight_kg", "total_cells", "study_day"]

    def get_study_day(self, obj: Infusion) -> int | None:
        if not hasattr(obj, "day0"):  # a record just written has no list annotation
            from patients.selectors import day_zero

            obj.day0 = day_zero(obj.subject)
        day0 = obj.day0
        return None if day0 is None else (obj.infused_on - day0).days


class AdverseEventSerializer(serializers.ModelSerializer):
    subject = ScopedSubjectField()

    class Meta:
        model = AdverseEvent
        fields = ["id", "subject", "category", "term", "meddra_code", "onset_on", "resolved_on", "grade",
                  "grade_scale", "serious", "sae_death", "sae_life_threatening", "sae_hospitalisation",
                  "sae_disability", "sae_congenital", "sae_important", "site_aware_at", "report_due_at",
                  "related_to_product", "related_to_lymphodepletion", "outcome", "action_taken", "death_on"]
        read_only_fields = ["id", "grade_scale", "report_due_at"]


ASSESSMENT_READ_ONLY = ["id", "event", "derived_grade", "algorithm", "flags"]


class CrsAssessmentSerializer(serializers.ModelSerializer):
    class Meta:
        model = CrsAssessment
        exclude = ["recorded_by", "created_at", "updated_at"]
        read_only_fields = ASSESSMENT_READ_ONLY


class IcansAssessmentSerializer(serializers.ModelSerializer):
    class Meta:
        model = IcansAssessment
        exclude = ["recorded_by", "created_at", "updated_at"]
        read_only_fields = [*ASSESSMENT_READ_ONLY, "ice_score"]


class MedicationSerializer(serializers.ModelSerializer):
    subject = ScopedSubjectField()
    adverse_event = ScopedRelatedField(AdverseEvent, required=False, allow_null=True)

    class Meta:
        model = ConcomitantMedication
        fields = ["id", "subject", "adverse_event", "drug", "drug_name", "dose", "dose_unit", "route", "given_at",
                  "indication"]


def amendment_serializer(base: type[serializers.ModelSerializer], amendable: frozenset[str],
                         name: str) -> type[serializers.ModelSerializer]:
    """The PATCH body of a correction: the amendable fields of ``base`` and the reason for change."""
    meta = type("Meta", (), {"model": base.Meta.model, "fields": [*sorted(amendable), "reason_for_change"]})
    declared = {f: base._declared_fields[f] for f in amendable if f in base._declared_fields}
    reason = serializers.CharField(help_text="Why the saved value changes (kept in the audit trail).",
                                   allow_blank=True, required=False)
    return type(name, (serializers.ModelSerializer,), {"Meta": meta, "reason_for_change": reason, **declared})


class SubjectAmendmentSerializer(serializers.ModelSerializer):
    reason_for_change = serializers.CharField(help_text="Why the saved value changes (kept in the audit trail).",
                                              allow_blank=True, required=False)

    class Meta:
        model = Subject
        fields = ["screening_number", "sex", "diagnosis", "fusion_genes", "mutations", "marrow_blasts_pct",
                  "extramedullary_disease", "cns_status", "prior_allo_hsct", "prior_cart", "prior_cart_target",
                  "prior_cart_scfv_origin", "prior_lines", "age_at_consent", "reason_for_change"]
        validators: list[Any] = []  # a taken screening number is the service's 409, not a generic 400
