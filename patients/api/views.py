"""Subject-level API: the same services as the admin, the same site scoping (others' records are 404)."""

from __future__ import annotations

from typing import Any

from django.db.models import Prefetch, QuerySet
from django.shortcuts import get_object_or_404
from django_filters import rest_framework as filters
from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from config.api import ERRORS, READ_ERRORS, CodeOrIdFilter, StrictFilterBackend, acting_user
from config.errors import RuleViolation
from patients.api import serializers as s
from patients.models import (
    AdverseEvent,
    ApheresisCollection,
    BridgingTherapy,
    ConcomitantMedication,
    DonorCollection,
    FollowUp,
    Infusion,
    LymphodepletionCourse,
    LymphodepletionDose,
    ProductLot,
    ResponseAssessment,
    Subject,
)
from patients.selectors import sae_report_pending
from patients.services import amendments, enrolment, measurements, outcome, safety, treatment
from patients.timeline import with_timeline
from trials.access import access_of
from trials.models import Cohort, EligibilityCriterion

WRITE = {201: None, **ERRORS}


class ScopedViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin,
                    viewsets.GenericViewSet):
    """List, read and create records of subjects in the caller's sites. Writes go through ``write``."""

    trial_path = "subject__trial"
    site_path = "subject__site"
    ordering = ["pk"]
    filter_backends = [StrictFilterBackend]

    def get_queryset(self) -> QuerySet:
        qs = super().get_queryset().filter(access_of(self.request.user).site_q(trial=self.trial_path,
                                                                               site=self.site_path))
        if issubclass(self.get_serializer_class(), s.OnStudySerializer):
            qs = with_timeline(qs)  # study day and course day of every row, in the same query
        return qs.order_by(*self.ordering)

    def write(self, data: dict[str, Any]) -> Any:
        raise NotImplementedError

    def perform_create(self, serializer: serializers.BaseSerializer) -> None:
        serializer.instance = self.write(dict(serializer.validated_data))


class SubjectFilter(filters.FilterSet):
    trial = CodeOrIdFilter(field_name="trial", help_text="Trial code (or id).")
    site = CodeOrIdFilter(field_name="site", help_text="Site code (or id).")
    cohort = CodeOrIdFilter(field_name="cohort", help_text="Cohort code (or id).")
    screening_number = filters.CharFilter(field_name="screening_number",
                                          help_text="The site's screening number (exact); combine with site.")

    class Meta:
        model = Subject
        fields = ["trial", "site", "status", "cohort", "screening_number"]


class SubjectRecordFilter(filters.FilterSet):
    """The filters of every list of subjects' records. Another site's subject and an unknown one both
    give an empty list (a choice filter would say which subjects exist elsewhere)."""

    subject = CodeOrIdFilter(field_name="subject", help_text="Subject code (or id), e.g. BJ01-0001.")
    trial = CodeOrIdFilter(field_name="subject__trial", help_text="Trial code (or id).")
    site = CodeOrIdFilter(field_name="subject__site", help_text="Site code (or id).")


# A subject's own records, read whole (a handful each): no pagination, no filters.
SUBJECT_PART: dict[str, Any] = {"pagination_class": None, "filterset_class": None}


def _decorate(summary: str, request: Any = None, responses: dict[int, Any] | None = None) -> Any:
    return extend_schema(summary=summary, request=request, responses=responses or {200: s.SubjectSerializer,
                                                                                   **ERRORS})


class SubjectViewSet(ScopedViewSet):
    """Subjects, addressed by id or by code (e.g. ``BJ01-0007``), and their state-machine actions."""

    queryset = Subject.objects.select_related("trial", "site", "cohort")
    trial_path, site_path = "trial", "site"
    ordering = ["trial__code", "code", "pk"]
    filterset_class = SubjectFilter
    lookup_value_regex = "[^/]+"

    def get_serializer_class(self) -> type[serializers.BaseSerializer]:
        return s.ScreeningSerializer if self.action == "create" else s.SubjectSerializer

    def get_object(self) -> Subject:
        value = self.kwargs["pk"]
        qs = self.get_queryset()
        is_id = value.isascii() and value.isdigit()  # str.isdigit() alone admits "²", which int() refuses
        matches = list(qs.filter(pk=int(value))) if is_id else list(qs.filter(code=value)[:2])
        if not matches:
            return get_object_or_404(qs.none())
        if len(matches) > 1:
            raise RuleViolation("ambiguous_code", f"Code {value} exists in several of your trials; use the id.")
        return matches[0]

    @extend_schema(summary="A subject by its site's screening number", parameters=[
        OpenApiParameter("site_code", str, OpenApiParameter.PATH, description="The site's code, e.g. BJ01."),
        OpenApiParameter("number", str, OpenApiParameter.PATH, description="The site's screening number."),
        OpenApiParameter("trial", str, description="Trial code, where the site screens for several trials.")],
        responses={200: s.SubjectSerializer, **READ_ERRORS})
    @action(detail=False, methods=["get"], url_path=r"by-screening-number/(?P<site_code>[^/]+)/(?P<number>[^/]+)")
    def by_screening_number(self, request: Request, site_code: str, number: str, **kwargs: Any) -> Response:
        qs = self.get_queryset().filter(site__code=site_code, screening_number=number)
        if trial := request.query_params.get("trial"):
            qs = qs.filter(trial__code=trial)
        matches = list(qs[:2])
        if not matches:
            return get_object_or_404(qs.none())
        if len(matches) > 1:
            raise RuleViolation("ambiguous_screening_number", f"{site_code}/{number} exists in several of your "
                                "trials; add ?trial=<code>.")
        return Response(s.SubjectSerializer(matches[0]).data)

    @extend_schema(responses={201: s.SubjectSerializer, **ERRORS})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = s.ScreeningSerializer(data=request.data, context=self.get_serializer_context())
        serializer.is_valid(raise_exception=True)
        subject = serializer.save()
        return Response(s.SubjectSerializer(subject).data, status=status.HTTP_201_CREATED)

    def _act(self, serializer_class: Any, run: Any) -> Response:
        subject = self.get_object()
        serializer = serializer_class(data=self.request.data, context=self.get_serializer_context())
        serializer.is_valid(raise_exception=True)
        run(subject, dict(serializer.validated_data), acting_user(self.request))
        subject.refresh_from_db()
        return Response(s.SubjectSerializer(subject).data)

    @extend_schema(summary="Correct the subject's characteristics (reason for change required)",
                   request=s.SubjectAmendmentSerializer, responses={200: s.SubjectSerializer, **ERRORS})
    def partial_update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        subject = self.get_object()
        body, reason = amendment_body(request, enrolment.AMENDABLE_FIELDS)
        serializer = s.SubjectAmendmentSerializer(subject, data=body, partial=True)
        serializer.is_valid(raise_exception=True)
        changes = {k: v for k, v in serializer.validated_data.items() if k in enrolment.AMENDABLE_FIELDS}
        subject = enrolment.amend_subject(subject=subject, changes=changes, reason=reason, by=acting_user(request))
        return Response(s.SubjectSerializer(subject).data)

    @extend_schema(summary="Transition log", responses={200: s.TransitionSerializer(many=True), **READ_ERRORS},
                   filters=False)
    @action(detail=True, methods=["get"], **SUBJECT_PART)
    def transitions(self, request: Request, pk: str, **kwargs: Any) -> Response:
        subject = self.get_object()
        rows = subject.transitions.select_related("recorded_by").order_by("recorded_at", "pk")
        return Response(s.TransitionSerializer(rows, many=True).data)

    @extend_schema(summary="Consents", responses={200: s.ConsentSerializer(many=True), **READ_ERRORS}, filters=False)
    @action(detail=True, methods=["get"], **SUBJECT_PART)
    def consents(self, request: Request, pk: str, **kwargs: Any) -> Response:
        rows = self.get_object().consents.order_by("consented_on", "pk")
        return Response(s.ConsentSerializer(rows, many=True).data)

    @extend_schema(summary="Height and weight", responses={200: s.MeasurementSerializer(many=True), **READ_ERRORS},
                   filters=False)
    @action(detail=True, methods=["get"], url_path="body-measurements", **SUBJECT_PART)
    def body_measurements(self, request: Request, pk: str, **kwargs: Any) -> Response:
        rows = self.get_object().measurements.order_by("measured_on", "pk")
        return Response(s.MeasurementSerializer(rows, many=True).data)

    @extend_schema(summary="Eligibility assessments",
                   responses={200: s.EligibilitySerializer(many=True), **READ_ERRORS}, filters=False)
    @action(detail=True, methods=["get"], url_path="eligibility-assessments", **SUBJECT_PART)
    def eligibility_assessments(self, request: Request, pk: str, **kwargs: Any) -> Response:
        rows = self.get_object().eligibility_assessments.prefetch_related("answers__criterion").order_by("pk")
        return Response(s.EligibilitySerializer(rows, many=True).data)

    @_decorate("Record informed consent", s.ConsentSerializer)
    @action(detail=True, methods=["post"])
    def consent(self, request: Request, pk: str, **kwargs: Any) -> Response:
        return self._act(s.ConsentSerializer, lambda subj, d, by: enrolment.record_consent(subject=subj, by=by, **d))

    @_decorate("Record height and weight", s.MeasurementSerializer)
    @action(detail=True, methods=["post"])
    def measurements(self, request: Request, pk: str, **kwargs: Any) -> Response:
        return self._act(s.MeasurementSerializer,
                         lambda subj, d, by: measurements.record_body_measurement(subject=subj, by=by, **d))

    @_decorate("Assess eligibility against the trial's criteria", s.EligibilitySerializer)
    @action(detail=True, methods=["post"])
    def eligibility(self, request: Request, pk: str, **kwargs: Any) -> Response:
        def run(subject: Subject, data: dict[str, Any], by: Any) -> None:
            criteria = {}  # by id and by code (I1, E3): either names the criterion
            for c in EligibilityCriterion.objects.filter(trial_id=subject.trial_id):
                criteria[str(c.pk)] = criteria[c.code] = c
            unknown = [key for key in data["answers"] if key not in criteria]
            if unknown:
                raise RuleViolation("unknown_criterion", f"Unknown criterion code(s) or id(s): {', '.join(unknown)}.",
                                    field="answers")
            answers = {criteria[key]: met for key, met in data["answers"].items()}
            if len(answers) < len(data["answers"]):
                raise RuleViolation("duplicate_criterion", "A criterion is answered twice (by its code and its id).",
                                    field="answers")
            enrolment.assess_eligibility(subject=subject, assessed_on=data["assessed_on"], answers=answers, by=by)
        return self._act(s.EligibilitySerializer, run)

    @_decorate("Confirm the latest eligibility assessment (investigator)", serializers.Serializer)
    @action(detail=True, methods=["post"], url_path="confirm-eligibility")
    def confirm_eligibility(self, request: Request, pk: str, **kwargs: Any) -> Response:
        def run(subject: Subject, data: dict[str, Any], by: Any) -> None:
            assessment = subject.eligibility_assessments.filter(confirmed_at__isnull=True).order_by(
                "-assessed_on", "-pk").first()
            if assessment is None:
                raise RuleViolation("nothing_to_confirm", f"{subject.code} has no unconfirmed assessment.")
            enrolment.confirm_eligibility(assessment=assessment, by=by)
        return self._act(serializers.Serializer, run)

    @_decorate("Enrol", s.EnrolSerializer)
    @action(detail=True, methods=["post"])
    def enrol(self, request: Request, pk: str, **kwargs: Any) -> Response:
        def run(subject: Subject, data: dict[str, Any], by: Any) -> None:
            value, cohorts = data["cohort"], Cohort.objects.filter(trial_id=subject.trial_id)
            by_id = value.isascii() and value.isdigit() and len(value) < 19
            cohort = (by_id and cohorts.filter(pk=int(value)).first()) or cohorts.filter(code=value).first()
            enrolment.enrol_subject(subject=subject, cohort=cohort, enrolled_on=data["enrolled_on"], by=by)
        return self._act(s.EnrolSerializer, run)

    @_decorate("Record a screen failure", s.ScreenFailureSerializer)
    @action(detail=True, methods=["post"], url_path="screen-failure")
    def screen_failure(self, request: Request, pk: str, **kwargs: Any) -> Response:
        return self._act(s.ScreenFailureSerializer,
                         lambda subj, d, by: enrolment.record_screen_failure(subject=subj, by=by, **d))

    @_decorate("Record withdrawal of consent", s.WithdrawalSerializer)
    @action(detail=True, methods=["post"], url_path="withdraw-consent")
    def withdraw_consent(self, request: Request, pk: str, **kwargs: Any) -> Response:
        return self._act(s.WithdrawalSerializer,
                         lambda subj, d, by: enrolment.withdraw_consent(subject=subj, by=by, **d))

    @_decorate("Take off study", s.OffStudySerializer)
    @action(detail=True, methods=["post"], url_path="off-study")
    def off_study(self, request: Request, pk: str, **kwargs: Any) -> Response:
        return self._act(s.OffStudySerializer, lambda subj, d, by: enrolment.take_off_study(subject=subj, by=by, **d))


def amendment_body(request: Request, allowed: frozenset[str]) -> tuple[dict[str, Any], str]:
    """The fields to change and the reason; a field that is not amendable is refused by name."""
    if not isinstance(request.data, dict):
        raise RuleViolation("invalid", "Send a JSON object.")
    body = dict(request.data)
    reason = body.pop(amendments.REASON_FIELD, "")
    if not isinstance(reason, str):
        raise RuleViolation("invalid", "The reason for change is text.", field=amendments.REASON_FIELD)
    if unknown := sorted(set(body) - allowed):
        raise RuleViolation("not_amendable", f"{', '.join(unknown)} cannot be changed on a saved record.",
                            field=unknown[0])
    return body, reason


class AmendMixin:
    """PATCH corrects saved values with a ``reason_for_change``, through the same rules as entry."""

    def partial_update(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        record = self.get_object()  # type: ignore[attr-defined]
        allowed = amendments.amendable_fields(type(record))
        body, reason = amendment_body(request, allowed)
        serializer = self.get_serializer(record, data=body, partial=True)  # type: ignore[attr-defined]
        serializer.is_valid(raise_exception=True)
        changes = {name: value for name, value in serializer.validated_data.items() if name in allowed}
        record = amendments.amend_record(record=record, changes=changes, reason=reason, by=acting_user(request))
        return Response(self.get_serializer(record).data)  # type: ignore[attr-defined]


def _crud(model: Any, serializer: Any, write: Any, *, select: tuple[str, ...] = ("subject__site",),
          filter_fields: tuple[str, ...] = ()) -> type[ScopedViewSet]:
    """A scoped list/read/create endpoint whose create calls ``write(data, by)``; amendable records
    also take PATCH (a correction with a reason)."""
    model_ = model
    amendable = amendments.amendable_fields(model)
    bases = (AmendMixin, ScopedViewSet) if amendable else (ScopedViewSet,)

    class Filter(SubjectRecordFilter):
        class Meta:
            model = model_
            fields = ["subject", "trial", "site", *filter_fields]

    class View(*bases):  # type: ignore[misc]
        queryset = model.objects.select_related(*select)
        serializer_class = serializer
        filterset_class = Filter

        def write(self, data: dict[str, Any]) -> Any:
            return write(data, acting_user(self.request))

    View.__name__ = View.__qualname__ = f"{model.__name__}ViewSet"
    if amendable:
        body = s.amendment_serializer(serializer, amendable, f"{model.__name__}Amendment")
        # extend_schema returns the class it decorates; mypy refuses rebinding a class's name.
        View = extend_schema(  # type: ignore[misc]
            request=body, responses={200: serializer, **ERRORS}, methods=["PATCH"],
            summary=f"Correct a saved {model._meta.verbose_name} (reason for change required)")(View)
    return extend_schema(responses={201: serializer, **ERRORS}, methods=["POST"])(View)


CollectionViewSet = _crud(ApheresisCollection, s.CollectionSerializer,
                          lambda d, by: treatment.record_collection(by=by, **d))
DonorCollectionViewSet = _crud(DonorCollection, s.DonorCollectionSerializer,
                               lambda d, by: treatment.record_donor_collection(by=by, **d),
                               filter_fields=("donor_type",))
BridgingViewSet = _crud(BridgingTherapy, s.BridgingSerializer, lambda d, by: treatment.record_bridging(by=by, **d))
MedicationViewSet = _crud(ConcomitantMedication, s.MedicationSerializer,
                          lambda d, by: safety.record_medication(by=by, **d), filter_fields=("drug",))
FollowUpViewSet = _crud(FollowUp, s.FollowUpSerializer, lambda d, by: outcome.record_follow_up(by=by, **d),
                        filter_fields=("kind",))


def _record_response(d: dict[str, Any], by: Any) -> Any:
    return outcome.record_response(subject=d.pop("subject"), assessed_on=d.pop("assessed_on"),
                                   category=d.pop("category"), visit=d.pop("visit", None), by=by, **d)


ResponseViewSet = _crud(ResponseAssessment, s.ResponseSerializer, _record_response, filter_fields=("category",),
                        select=("subject__site", "visit"))


class LotViewSet(_crud(ProductLot, s.LotSerializer, lambda d, by: treatment.register_lot(by=by, **d),  # type: ignore[misc]
                       filter_fields=("status",), select=("subject", "product", "collection",
                                                                   "donor_collection"))):
    @extend_schema(request=s.ReleaseSerializer, responses={200: s.LotSerializer, **ERRORS})
    @action(detail=True, methods=["post"])
    def release(self, request: Request, pk: str, **kwargs: Any) -> Response:
        lot = self.get_object()
        data = s.ReleaseSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        lot = treatment.release_lot(lot=lot, by=acting_user(request), **data.validated_data)
        return Response(s.LotSerializer(lot, context=self.get_serializer_context()).data)

    @extend_schema(request=s.FailureSerializer, responses={200: s.LotSerializer, **ERRORS})
    @action(detail=True, methods=["post"])
    def failure(self, request: Request, pk: str, **kwargs: Any) -> Response:
        lot = self.get_object()
        data = s.FailureSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        lot = treatment.record_manufacturing_failure(lot=lot, by=acting_user(request), **data.validated_data)
        return Response(s.LotSerializer(lot, context=self.get_serializer_context()).data)


class CourseViewSet(_crud(LymphodepletionCourse, s.CourseSerializer,  # type: ignore[misc]
                          lambda d, by: treatment.start_lymphodepletion(by=by, **d), select=("subject", "regimen"))):
    def get_queryset(self) -> QuerySet:
        return super().get_queryset().prefetch_related(
            Prefetch("doses", LymphodepletionDose.objects.select_related("agent")), "regimen__agents")

    @extend_schema(request=s.CourseCreateSerializer, responses={201: s.CourseSerializer, **ERRORS})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        """Open a course; its administered doses may come in the same request (all or nothing)."""
        serializer = s.CourseCreateSerializer(data=request.data, context=self.get_serializer_context())
        serializer.is_valid(raise_exception=True)
        data = dict(serializer.validated_data)
        doses = [treatment.DoseInput(**dose) for dose in data.pop("doses", [])]
        course = treatment.record_lymphodepletion_course(by=acting_user(request), doses=doses, **data)
        course = self.get_queryset().get(pk=course.pk)
        return Response(s.CourseSerializer(course, context=self.get_serializer_context()).data,
                        status=status.HTTP_201_CREATED)

    @extend_schema(request=s.DoseSerializer(many=True), responses={201: s.DoseSerializer(many=True), **ERRORS},
                   summary="Record administered doses: one dose (an object) or several (a list, all or nothing)")
    @action(detail=True, methods=["post"])
    def doses(self, request: Request, pk: str, **kwargs: Any) -> Response:
        course = self.get_object()
        many = isinstance(request.data, list)
        data = s.DoseSerializer(data=request.data, many=many,
                                context={**self.get_serializer_context(), "course": course})
        if not data.is_valid():  # a list's refusals are named doses[2].given_on, as the service names them
            raise serializers.ValidationError({"doses": data.errors} if many else data.errors)
        items = data.validated_data if many else [data.validated_data]
        recorded = treatment.record_lymphodepletion_doses(
            course=course, doses=[treatment.DoseInput(**item) for item in items], by=acting_user(request))
        body = s.DoseSerializer(recorded, many=True).data if many else s.DoseSerializer(recorded[0]).data
        return Response(body, status=status.HTTP_201_CREATED)


InfusionViewSet = _crud(Infusion, s.InfusionSerializer, lambda d, by: treatment.record_infusion(by=by, **d),
                        select=("subject__site", "lot", "dose_level"))


def _record_event(d: dict[str, Any], by: Any) -> Any:
    subject = d.pop("subject")
    return safety.record_adverse_event(subject=subject, data=safety.EventInput(**d), by=by)


class AdverseEventFilter(SubjectRecordFilter):
    sae_report_overdue = filters.BooleanFilter(method="filter_overdue", help_text=(
        "true: serious events whose initial report to the sponsor is past its due time; false: the others."))

    class Meta:
        model = AdverseEvent
        fields = ["subject", "trial", "site", "category", "serious", "sae_report_overdue"]

    def filter_overdue(self, queryset: QuerySet, name: str, value: bool | None) -> QuerySet:
        if value is None:
            return queryset
        return queryset.filter(sae_report_pending()) if value else queryset.exclude(sae_report_pending())


class AdverseEventViewSet(_crud(AdverseEvent, s.AdverseEventSerializer, _record_event,  # type: ignore[misc]
                                filter_fields=("category", "serious"), select=("subject__site", "ctcae_term"))):
    filterset_class = AdverseEventFilter

    @extend_schema(request=s.SaeReportSerializer, responses={201: s.SaeReportSerializer, **ERRORS},
                   summary="Record an SAE report sent (initial or follow-up; to sponsor, ethics or regulator)")
    @action(detail=True, methods=["post"], url_path="sae-reports")
    def sae_reports(self, request: Request, pk: str, **kwargs: Any) -> Response:
        event = self.get_object()
        data = s.SaeReportSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        report = safety.record_sae_report(event=event, by=acting_user(request), **data.validated_data)
        return Response(s.SaeReportSerializer(report).data, status=status.HTTP_201_CREATED)

    def _assess(self, serializer_class: Any, record: Any) -> Response:
        event = self.get_object()
        data = serializer_class(data=self.request.data)
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        assessment = record(event=event, assessed_at=values.pop("assessed_at"),
                            override_grade=values.pop("override_grade", None),
                            override_reason=values.pop("override_reason", ""), components=values,
                            by=acting_user(self.request))
        return Response(serializer_class(assessment).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=s.CrsAssessmentSerializer, responses={201: s.CrsAssessmentSerializer, **ERRORS})
    @action(detail=True, methods=["post"], url_path="crs-assessments")
    def crs_assessments(self, request: Request, pk: str, **kwargs: Any) -> Response:
        return self._assess(s.CrsAssessmentSerializer, safety.record_crs_assessment)

    @extend_schema(request=s.IcansAssessmentSerializer, responses={201: s.IcansAssessmentSerializer, **ERRORS})
    @action(detail=True, methods=["post"], url_path="icans-assessments")
    def icans_assessments(self, request: Request, pk: str, **kwargs: Any) -> Response:
        return self._assess(s.IcansAssessmentSerializer, safety.record_icans_assessment)
