"""The trial summary API (issue 12): the figures of a CAR-T paper for one trial, cohort and course, computed
from the caller's sites' records, and the per-subject rows behind them as CSV."""

from __future__ import annotations

import csv
import io
from typing import Any

from django.http import Http404, HttpResponse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, inline_serializer
from rest_framework import renderers, serializers
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from config.api import ERRORS, refuse_unknown_params
from summaries.selectors import load_trial_records
from summaries.summary import public, subject_rows, summarise
from trials.api import TRIAL_CODE
from trials.models import Cohort, Trial
from trials.selectors import get_trial


class SummaryQuerySerializer(serializers.Serializer):
    cohort = serializers.CharField(required=False, max_length=20, help_text="A cohort code of the trial; all "
                                                                             "cohorts when absent.")
    course = serializers.ChoiceField(choices=[1, 2], default=1, help_text="The infusion course: 1 (first "
                                                                           "infusion) or 2 (re-infusion).")

    def cohort_of(self, trial: Trial) -> Cohort | None:
        code = self.validated_data.get("cohort")
        if code is None:
            return None
        cohort = Cohort.objects.filter(trial=trial, code=code).first()
        if cohort is None:
            raise serializers.ValidationError({"cohort": [f"The trial has no cohort {code!r}."]})
        return cohort


def _number(**kwargs: Any) -> serializers.FloatField:
    return serializers.FloatField(allow_null=True, **kwargs)


StatsSerializer = inline_serializer("SummaryStats", {
    "n": serializers.IntegerField(), "median": _number(), "min": _number(), "max": _number()})
RateSerializer = inline_serializer("SummaryRate", {
    "n": serializers.IntegerField(help_text="Events."), "of": serializers.IntegerField(help_text="Denominator."),
    "rate": _number(help_text="n / of, 0..1; null when of is 0.")})


def _pair() -> serializers.ListField:
    return serializers.ListField(child=_number(), min_length=2, max_length=2, help_text="[lower, upper], 95 % CI.")


KmSerializer = inline_serializer("SummaryKaplanMeier", {
    "n": serializers.IntegerField(), "events": serializers.IntegerField(), "median_months": _number(),
    "median_ci": _pair(), "rate_6m": _number(), "rate_12m": _number(),
    "rate_6m_ci": _pair(), "rate_12m_ci": _pair()})
ToxicitySerializer = inline_serializer("SummaryToxicity", {
    "max_grade_counts": serializers.DictField(child=serializers.IntegerField(), help_text="Grade 0-5 -> subjects."),
    "grade": StatsSerializer, "grade_3_or_more": serializers.IntegerField(), "onset_day": StatsSerializer,
    "duration_days": StatsSerializer, "tocilizumab": serializers.IntegerField(),
    "corticosteroids": serializers.IntegerField()})
SummarySerializer = inline_serializer("TrialSummary", {
    "trial": serializers.CharField(), "cohort": serializers.CharField(allow_null=True),
    "course": serializers.IntegerField(), "data_cutoff": serializers.DateTimeField(),
    "n_subjects": serializers.IntegerField(),
    "characteristics": inline_serializer("SummaryCharacteristics", {
        "age_years": StatsSerializer, "sex": serializers.DictField(child=serializers.IntegerField()),
        "product_source": serializers.DictField(child=serializers.IntegerField()),
        "antigen_expression_pct": StatsSerializer, "prior_hsct": serializers.IntegerField(),
        "prior_car_t": serializers.IntegerField()}),
    "dosing": inline_serializer("SummaryDosing", {
        "dose_cells_per_kg": StatsSerializer, "split_doses": serializers.IntegerField(),
        "reinfused_subjects": serializers.IntegerField()}),
    "response": inline_serializer("SummaryResponse", {
        "visit": serializers.CharField(allow_null=True), "counts": serializers.DictField(
            child=serializers.IntegerField()), "not_assessed": serializers.IntegerField(),
        "cr_cri": RateSerializer, "mrd_negative": RateSerializer}),
    "crs": ToxicitySerializer, "icans": ToxicitySerializer,
    "haematologic": inline_serializer("SummaryHaematologic", {
        "anc_below_500_days": StatsSerializer, "neutrophil_recovery_day": StatsSerializer,
        "platelet_recovery_day": StatsSerializer}),
    "kinetics": inline_serializer("SummaryKinetics", {
        "analyte": serializers.CharField(), "baseline_log10": StatsSerializer, "cmax_log10": StatsSerializer,
        "tmax_days": StatsSerializer, "auc_0_28": StatsSerializer, "persistence_days": StatsSerializer,
        "b_cell_aplasia": RateSerializer, "lloq_rule": serializers.CharField(), "auc_rule": serializers.CharField()}),
    "survival": inline_serializer("SummarySurvival", {"os": KmSerializer, "lfs": KmSerializer, "efs": KmSerializer,
                                                      "dor": KmSerializer}),
    "subjects": serializers.ListField(child=serializers.DictField(), help_text="One row per subject and course: "
                                      "every per-subject figure behind the numbers above."),
})

SUMMARY_ERRORS = {code: ERRORS[code] for code in (400, 401, 404)}


class SummaryApiBase(APIView):
    def records(self, request: Request, code: str) -> tuple[Any, int]:
        refuse_unknown_params(request, SummaryQuerySerializer().fields)
        trial = get_trial(user=request.user, code=code)
        if trial is None:
            raise Http404
        params = SummaryQuerySerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        cohort = params.cohort_of(trial)
        return load_trial_records(user=request.user, trial=trial, cohort=cohort), params.validated_data["course"]


class TrialSummaryApi(SummaryApiBase):
    @extend_schema(summary="A trial's summary: the tables of a CAR-T paper, from the caller's sites' records",
                   parameters=[TRIAL_CODE, SummaryQuerySerializer], responses={200: SummarySerializer,
                                                                               **SUMMARY_ERRORS})
    def get(self, request: Request, code: str, **kwargs: Any) -> Response:
        records, course = self.records(request, code)
        return Response(summarise(records, course, now=timezone.now()))


class CsvRenderer(renderers.BaseRenderer):
    """Lets a client ask for ``text/csv``; an error body is still JSON text."""

    media_type = "text/csv"
    format = "csv"
    charset = "utf-8"

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None) -> bytes:
        return renderers.JSONRenderer().render(data)


class TrialSummarySubjectsCsvApi(SummaryApiBase):
    renderer_classes = [renderers.JSONRenderer, CsvRenderer]

    @extend_schema(summary="The per-subject rows of a trial's summary, as CSV",
                   parameters=[TRIAL_CODE, SummaryQuerySerializer],
                   responses={(200, "text/csv"): OpenApiResponse(OpenApiTypes.STR), **SUMMARY_ERRORS})
    def get(self, request: Request, code: str, **kwargs: Any) -> HttpResponse:
        records, course = self.records(request, code)
        rows = [public(r) for r in subject_rows(records, course)]
        response = HttpResponse(subjects_csv(rows), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="{records.trial}-summary-course{course}.csv"'
        return response


def subjects_csv(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    if rows:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in r.items()} for r in rows)
    return out.getvalue()
