"""Serializers check shape only; every write calls the same service as the admin."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User
from django.db.models import QuerySet
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
    CtcaeTerm,
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
    SaeReport,
    Subject,
    SubjectTransition,
)
from patients.services import ctcae
from patients.timeline import Position, local_date, timeline_from
from trials.access import access_of
from trials.models import Cohort, DoseLevel, LymphodepletionRegimen, Product, RegimenAgent, Site, Trial, Visit


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

    # Without the pk-only optimisation (RelatedField's default), the value is the instance.
    def to_representation(self, value: Subject) -> str:  # type: ignore[override]
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


class OnStudySerializer(serializers.ModelSerializer):
    """Where the record's clinical date falls (patients.timeline): the study day (day 0 = the first
    infusion), the infusion course it follows and the day of that course (day 0 = the course's infusion).
    Lists annotate their rows with ``with_timeline``; a record just written costs one query."""

    study_date_field = ""  # the record's clinical date or time (a path such as "draw__collected_at")
    subject_attr = "subject"
    study_day = serializers.SerializerMethodField(help_text="Days since the first CAR-T infusion (day 0).")
    course_number = serializers.SerializerMethodField(help_text="The infusion course this record follows.")
    course_day = serializers.SerializerMethodField(help_text="Days since day 0 of that course.")

    def _position(self, obj: Any) -> Position:
        if getattr(obj, "_on_study", None) is None:
            subject, value = obj, obj
            for name in self.subject_attr.split("__"):
                subject = getattr(subject, name)
            for name in self.study_date_field.split("__"):
                value = getattr(value, name)
            day = local_date(value, subject.site.tzinfo)
            obj._on_study = timeline_from(obj, subject).position(day)
        return obj._on_study

    def get_study_day(self, obj: Any) -> int | None:
        return self._position(obj).study_day

    def get_course_number(self, obj: Any) -> int | None:
        return self._position(obj).course_number

    def get_course_day(self, obj: Any) -> int | None:
        return self._position(obj).course_day


ON_STUDY = ["study_day", "course_number", "course_day"]


@extend_schema_field(OpenApiTypes.STR)
class CodeOrIdField(serializers.RelatedField):
    """A related record by its natural code or by its id; the response shows the code.

    A code is looked up within the record's subject (its trial: ``DL1`` is the subject's trial's dose
    level, so a code never matches across the caller's trials); ``within`` narrows further (an agent
    within the course's regimen). An id is looked up among the caller's records (their trials, or
    their sites with ``site_path``), and the service then checks it belongs to the subject's trial.
    Either way, an unknown value and another site's record give the same ``does_not_exist``. A value
    of digits is tried as an id first, then as a code.
    """

    default_error_messages = {
        "does_not_exist": "No {name} {value} here.",
        "incorrect_type": "Give a code or an id, not {data_type}.",
    }

    def __init__(self, model: Any, *, code: str = "code", trial_path: str = "trial", site_path: str | None = None,
                 within: Any = None, **kwargs: Any) -> None:
        self.model, self.code, self.trial_path, self.site_path = model, code, trial_path, site_path
        self.within = within or (lambda field: {trial_path: field.subject_trial_id()})
        kwargs.setdefault("help_text", f"The {model._meta.verbose_name}'s {code.replace('_', ' ')}, or its id.")
        super().__init__(**kwargs)

    def get_queryset(self) -> QuerySet:
        access = access_of(self.context["request"].user)
        if self.site_path is None:
            return self.model.objects.filter(access.trial_q(trial=self.trial_path))
        return self.model.objects.filter(access.site_q(trial=self.trial_path, site=self.site_path))

    def subject_trial_id(self) -> int | None:
        """The trial of the record's subject: the instance's, else the ``subject`` of the same body."""
        instance = getattr(self.parent, "instance", None)
        if instance is not None and getattr(instance, "subject_id", None):
            return instance.subject.trial_id
        subject_field = self.parent.fields.get("subject") if isinstance(self.parent, serializers.Serializer) else None
        raw = getattr(self.parent, "initial_data", {}).get("subject")
        if subject_field is None or raw is None:
            return None
        try:
            return subject_field.to_internal_value(raw).trial_id
        except serializers.ValidationError:
            return None  # the subject field reports it

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, bool) or not isinstance(data, (str, int)):
            self.fail("incorrect_type", data_type=type(data).__name__)
        value, qs = str(data), self.get_queryset()
        found = None
        if value.isascii() and value.isdigit() and len(value) < 19:
            found = qs.filter(pk=int(value)).first()
        if found is None:
            within = {f"{k}_id" if not k.endswith("_id") else k: v for k, v in self.within(self).items()}
            if None not in within.values():
                found = qs.filter(**{self.code: value}, **within).first()
        if found is None:
            self.fail("does_not_exist", name=self.model._meta.verbose_name, value=value)
        return found

    def to_representation(self, value: Any) -> str:
        return getattr(value, self.code)


class SubjectSerializer(serializers.ModelSerializer):
    trial: serializers.SlugRelatedField[Trial] = serializers.SlugRelatedField(slug_field="code", read_only=True)
    site: serializers.SlugRelatedField[Site] = serializers.SlugRelatedField(slug_field="code", read_only=True)
    cohort: serializers.SlugRelatedField[Cohort] = serializers.SlugRelatedField(slug_field="code", read_only=True,
                                                                                 allow_null=True)

    class Meta:
        model = Subject
        fields = ["id", "code", "screening_number", "trial", "site", "status", "screened_on", "sex", "age_at_consent",
                  "cohort",
                  "diagnosis", "fusion_genes", "mutations", "marrow_blasts_pct", "extramedullary_disease",
                  "cns_status", "prior_allo_hsct", "prior_cart", "prior_cart_target", "prior_cart_scfv_origin",
                  "prior_lines", "enrolled_on", "off_study_on", "off_study_reason", "off_study_detail"]
        read_only_fields = fields


class ScreeningSerializer(serializers.ModelSerializer):
    trial = serializers.SlugRelatedField(slug_field="code", queryset=Trial.objects.all())
    site = serializers.SlugRelatedField(slug_field="code", queryset=Site.objects.all())

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
    recorded_by: serializers.StringRelatedField[User] = serializers.StringRelatedField()

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
                                    help_text="Criterion code (I1, E3) or id -> met (inclusion met / "
                                              "exclusion present).")
    criteria = serializers.SerializerMethodField()

    class Meta:
        model = EligibilityAssessment
        fields = ["id", "assessed_on", "eligible", "confirmed_at", "answers", "criteria"]
        read_only_fields = ["id", "eligible", "confirmed_at"]

    def get_criteria(self, obj: EligibilityAssessment) -> dict[str, bool]:
        return {str(a.criterion): a.met for a in obj.answers.all()}


class EnrolSerializer(serializers.Serializer):
    cohort = serializers.CharField(help_text="Cohort code of the subject's trial (or its id).")
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


def _subject_fields(model: Any, fields: list[str], read_only: list[str],
                    study_date: str, **declared: serializers.Field) -> type[serializers.ModelSerializer]:
    meta = type("Meta", (), {"model": model, "fields": ["id", "subject", *fields, *ON_STUDY],
                             "read_only_fields": read_only})
    return type(f"{model.__name__}Serializer", (OnStudySerializer,), {
        "Meta": meta, "subject": ScopedSubjectField(), "study_date_field": study_date, **declared})


CollectionSerializer = _subject_fields(ApheresisCollection, ["collection_id", "collected_on", "cd3_cells_1e9"], [],
                                       "collected_on")
BridgingSerializer = _subject_fields(BridgingTherapy, ["regimen", "started_on", "ended_on"], [], "started_on")
ResponseSerializer = _subject_fields(ResponseAssessment, [
    "visit", "assessed_on", "category", "marrow_blasts_pct", "mrd_flow_pct", "mrd_sensitivity_pct",
    "bcr_abl1_is_pct", "extramedullary_status", "cns_status", "antigen_status"], [], "assessed_on",
    visit=CodeOrIdField(Visit, required=False, allow_null=True))
FollowUpSerializer = _subject_fields(FollowUp, ["kind", "event_on", "cause_of_death", "cause_of_death_unknown",
                                                "detail"], [], "event_on")


class DonorCollectionSerializer(OnStudySerializer):
    subject = ScopedSubjectField()
    study_date_field = "collected_on"
    collection_id = serializers.CharField(max_length=40, help_text="Donor collection bag ID (unique).")  # a taken
    # bag ID is the service's 409 duplicate_collection_id, not the model's generic uniqueness 400

    class Meta:
        model = DonorCollection
        fields = ["id", "subject", "donor_code", "donor_type", "hla_matched", "hla_total", "collection_id",
                  "collected_on", *ON_STUDY]


class LotSerializer(serializers.ModelSerializer):
    subject = ScopedSubjectField()
    product = CodeOrIdField(Product)
    collection = CodeOrIdField(ApheresisCollection, code="collection_id", trial_path="subject__trial",
                               site_path="subject__site", required=False, allow_null=True)
    donor_collection = CodeOrIdField(DonorCollection, code="collection_id", trial_path="subject__trial",
                                     site_path="subject__site", required=False, allow_null=True,
                                     help_text="A donor-derived lot's donor collection: its bag id, or its id.")

    class Meta:
        model = ProductLot
        fields = ["id", "subject", "product", "lot_number", "source", "collection", "donor_collection", "donor_type",
                  "status", "release_date", "viability_pct", "car_positive_pct", "total_viable_car_cells", "qc_pass",
                  "failed_on", "failure_reason"]
        read_only_fields = ["id", "donor_type", "status", "release_date", "viability_pct", "car_positive_pct",
                            "total_viable_car_cells", "qc_pass", "failed_on", "failure_reason"]
        # A taken lot number is the service's 409 duplicate_lot_number, not a generic 400.
        extra_kwargs: dict[str, dict[str, Any]] = {"lot_number": {"validators": []}}


class ReleaseSerializer(serializers.Serializer):
    release_date = serializers.DateField()
    viability_pct = serializers.DecimalField(max_digits=5, decimal_places=2, min_value=0, max_value=100)
    car_positive_pct = serializers.DecimalField(max_digits=5, decimal_places=2, min_value=0, max_value=100)
    total_viable_car_cells = serializers.DecimalField(max_digits=16, decimal_places=0, min_value=1)
    qc_pass = serializers.BooleanField()


class FailureSerializer(serializers.Serializer):
    failed_on = serializers.DateField()
    reason = serializers.CharField(allow_blank=True)


def _dose_regimen(field: serializers.Field) -> dict[str, int | None]:
    """The regimen a dose's agent code is looked up in: the course's, or, for doses posted with a new
    course, the regimen named in the same body."""
    course = field.context.get("course")
    if course is not None:
        return {"regimen": course.regimen_id}
    root = field.root
    raw = root.initial_data.get("regimen") if isinstance(getattr(root, "initial_data", None), dict) else None
    regimen_field = root.fields.get("regimen") if hasattr(root, "fields") else None
    if raw is None or regimen_field is None:
        return {"regimen": None}
    try:
        return {"regimen": regimen_field.to_internal_value(raw).pk}
    except serializers.ValidationError:
        return {"regimen": None}  # the regimen field reports it


class DoseSerializer(serializers.ModelSerializer):
    agent = CodeOrIdField(RegimenAgent, code="agent", trial_path="regimen__trial", within=_dose_regimen,
                          help_text="The agent of the course's regimen (e.g. fludarabine), or its id.")

    class Meta:
        model = LymphodepletionDose
        fields = ["id", "agent", "day", "given_on", "planned_mg", "administered_mg", "deviation_reason"]
        read_only_fields = ["id", "day", "planned_mg"]


class PlannedDoseSerializer(serializers.Serializer):
    agent = serializers.CharField(source="agent.agent", help_text="Agent code, e.g. fludarabine.")
    day = serializers.IntegerField(help_text="Day relative to the planned infusion (day 0).")
    planned_on = serializers.DateField()
    planned_mg = serializers.DecimalField(max_digits=8, decimal_places=1, help_text="mg/m²/day × the course's BSA.")


class CourseSerializer(serializers.ModelSerializer):
    subject = ScopedSubjectField()
    regimen = CodeOrIdField(LymphodepletionRegimen)
    doses = DoseSerializer(many=True, read_only=True)
    plan = serializers.SerializerMethodField(help_text="Every planned dose, computed from the course's BSA.")

    class Meta:
        model = LymphodepletionCourse
        fields = ["id", "subject", "course_number", "regimen", "planned_infusion_on", "bsa_formula", "bsa_m2",
                  "measurement", "plan", "doses"]
        read_only_fields = ["id", "course_number", "bsa_m2", "measurement", "doses"]
        # The service numbers the course (2 for a re-infusion); DRF's unique-together check would test the
        # read-only number at its default of 1 and refuse every second course.
        validators: list[Any] = []

    @extend_schema_field(PlannedDoseSerializer(many=True))
    def get_plan(self, obj: LymphodepletionCourse) -> Any:
        from patients.services.treatment import course_plan

        return PlannedDoseSerializer(course_plan(obj), many=True).data


class CourseCreateSerializer(CourseSerializer):
    """A new course, optionally with the doses already given (recorded in the same transaction)."""

    doses = DoseSerializer(many=True, required=False, help_text="Administered doses (optional).")

    class Meta(CourseSerializer.Meta):
        fields = ["subject", "regimen", "planned_infusion_on", "bsa_formula", "doses"]
        read_only_fields: list[str] = []


class InfusionSerializer(OnStudySerializer):
    subject = ScopedSubjectField()
    lot = CodeOrIdField(ProductLot, code="lot_number", trial_path="subject__trial", site_path="subject__site")
    dose_level = CodeOrIdField(DoseLevel)
    study_date_field = "infused_at"

    class Meta:
        model = Infusion
        fields = ["id", "subject", "lot", "dose_level", "course_number", "fraction_number", "planned_fractions",
                  "infused_at", "infused_on", "cells_per_kg", "weight_kg", "total_cells", "study_day", "course_day"]
        read_only_fields = ["id", "course_number", "infused_on", "weight_kg", "total_cells"]
        validators: list[Any] = []  # the service numbers the course (see CourseSerializer)


@extend_schema_field(OpenApiTypes.STR)
class CtcaeTermField(serializers.RelatedField):
    """A CTCAE v5.0 dictionary term by its name (any case) or its MedDRA code; the response shows the name."""

    default_error_messages = {
        "does_not_exist": "No CTCAE v5.0 term {value} in the dictionary.",
        "incorrect_type": "Give the term or its MedDRA code, not {data_type}.",
    }

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("help_text", "CTCAE v5.0 term (e.g. \"Febrile neutropenia\") or its MedDRA code "
                          "(e.g. 10016288). For \"... - Other, specify\" give the verbatim term in `term`.")
        super().__init__(queryset=CtcaeTerm.objects.all(), **kwargs)

    def to_internal_value(self, data: Any) -> CtcaeTerm:
        if isinstance(data, bool) or not isinstance(data, (str, int)):
            self.fail("incorrect_type", data_type=type(data).__name__)
        term = ctcae.find_term(str(data))
        if term is None:
            self.fail("does_not_exist", value=data)
        return term

    def to_representation(self, value: CtcaeTerm) -> str:  # type: ignore[override]
        return value.term


class AdverseEventSerializer(OnStudySerializer):
    subject = ScopedSubjectField()
    ctcae_term = CtcaeTermField(required=False, allow_null=True)
    study_date_field = "onset_on"

    class Meta:
        model = AdverseEvent
        fields = ["id", "subject", "category", "ctcae_term", "term", "system_organ_class", "meddra_code", "onset_on",
                  "resolved_on", "grade",
                  "grade_scale", "serious", "sae_death", "sae_life_threatening", "sae_hospitalisation",
                  "sae_disability", "sae_congenital", "sae_important", "site_aware_at", "report_due_at",
                  "related_to_product", "related_to_lymphodepletion", "outcome", "action_taken", "death_on", *ON_STUDY]
        read_only_fields = ["id", "grade_scale", "report_due_at"]
        # The model's default category is not the service's: say which. A coded event's term defaults to its
        # dictionary term.
        extra_kwargs = {"category": {"required": True}, "term": {"required": False, "allow_blank": True}}


ASSESSMENT_READ_ONLY = ["id", "event", "derived_grade", "algorithm", "flags"]


class CrsAssessmentSerializer(OnStudySerializer):
    study_date_field, subject_attr = "assessed_at", "event__subject"
    class Meta:
        model = CrsAssessment
        exclude = ["recorded_by", "created_at", "updated_at"]
        read_only_fields = ASSESSMENT_READ_ONLY


class IcansAssessmentSerializer(OnStudySerializer):
    study_date_field, subject_attr = "assessed_at", "event__subject"
    class Meta:
        model = IcansAssessment
        exclude = ["recorded_by", "created_at", "updated_at"]
        read_only_fields = [*ASSESSMENT_READ_ONLY, "ice_score"]


class SaeReportSerializer(serializers.ModelSerializer):
    class Meta:
        model = SaeReport
        fields = ["id", "event", "kind", "recipient", "sent_at", "reference"]
        read_only_fields = ["id", "event"]


class MedicationSerializer(OnStudySerializer):
    subject = ScopedSubjectField()
    study_date_field = "given_at"
    adverse_event = ScopedRelatedField(AdverseEvent, required=False, allow_null=True)

    class Meta:
        model = ConcomitantMedication
        fields = ["id", "subject", "adverse_event", "drug", "drug_name", "dose", "dose_unit", "route", "given_at",
                  "indication", *ON_STUDY]


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
