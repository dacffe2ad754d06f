"""Assay endpoints: result ingestion (one or a batch), and scoped reads of draws, results and the catalogue.

Ingestion bodies are decoded by msgspec straight into typed rows (under 0.5 µs a row), bypassing DRF's
per-field serializer machinery; everything else about the request (authentication, scoping, error
body, rollback) is DRF's.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec
from django.db.models import QuerySet
from django.shortcuts import get_object_or_404
from django_filters import rest_framework as filters
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    extend_schema,
    extend_schema_view,
    inline_serializer,
)
from rest_framework import exceptions, mixins, serializers, status, viewsets
from rest_framework.request import Request
from rest_framework.response import Response

from assays.models import Analyte, LabDraw, Result
from assays.services import BatchRejected, ResultIn, ingest_results
from config.api import (
    ERRORS,
    READ_ERRORS,
    CodeOrIdFilter,
    ErrorSerializer,
    OffsetDateTimeField,
    acting_user,
    error_body,
    is_json,
)
from config.errors import RuleViolation
from patients.api.serializers import ON_STUDY, OnStudySerializer
from patients.models import Subject
from patients.timeline import with_timeline
from trials.access import access_of
from trials.models import Visit


class ResultBody(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """A result whose ``value`` may be a JSON number (``ResultIn`` takes a text): decoded when a body does not
    decode as texts only."""

    source_ref: str
    subject: str
    accession_number: str
    specimen: str
    collected_at: dt.datetime
    analyte: str
    value: str | float | int
    unit: str = ""
    status: str = "final"
    correction_reason: str = ""


class BatchBody(msgspec.Struct, forbid_unknown_fields=True):
    results: list[ResultBody]


class TextBatch(msgspec.Struct, forbid_unknown_fields=True):
    results: list[ResultIn]


_single = msgspec.json.Decoder(ResultBody)
_batch = msgspec.json.Decoder(BatchBody)
_texts = msgspec.json.Decoder(TextBatch)
_top = msgspec.json.Decoder(dict[str, msgspec.Raw])  # the top-level keys only; values are kept unparsed
_DECODING = (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError, RecursionError)


def _row(body: ResultBody) -> ResultIn:
    value = body.value if isinstance(body.value, str) else repr(body.value)
    return ResultIn(body.source_ref, body.subject, body.accession_number, body.specimen, body.collected_at,
                    body.analyte, value, body.unit, body.status, body.correction_reason)


def _decode_rows(raw: bytes) -> tuple[list[ResultIn], bool]:
    """One result object, or a batch: an object whose ``results`` key holds the rows (decided by decoding
    the body, not by looking for the word in its first bytes), and whether every text is known to fit its
    column and to hold no NUL character. A batch is decoded first as a batch whose values are all texts, as
    laboratory systems mostly send them: straight into ``ResultIn``, with no Python per row, each text held to
    its column's size by the decoder (a body without the escape of a NUL, ``\\u0000``, has none); then as a batch
    that may send numbers or longer texts (each row made into a ``ResultIn``, its texts checked by the service,
    row by row, with every row's refusals). Any other body is decoded as before (its top-level keys, then as a
    batch or a result, with their errors), so a valid batch is parsed once or twice, never more."""
    try:
        return _texts.decode(raw).results, b"\\u0000" not in raw
    except _DECODING:
        pass  # not a batch of texts that fit: a batch with numbers, or the decoding below gives the body its error
    try:
        return [_row(r) for r in _batch.decode(raw).results], False
    except _DECODING:
        pass  # not a valid batch: the decoding below gives this body its answer or its error
    if "results" in _top.decode(raw):
        return [_row(r) for r in _batch.decode(raw).results], False
    return [_row(_single.decode(raw))], False


def _decode_error(err: msgspec.ValidationError | msgspec.DecodeError) -> Response:
    # msgspec says e.g. "Expected `str`, got `int` - at `$.results[3].unit`": keep the path as the field.
    message = str(err)
    path = message.rsplit(" - at `$.", 1)[1].rstrip("`") if " - at `$." in message else "body"
    return Response(error_body("invalid", message.split(" - at ")[0], {path: [message.split(" - at ")[0]]}),
                    status=status.HTTP_400_BAD_REQUEST)


def _body_error(message: str) -> Response:
    return Response(error_body("invalid", message, {"body": [message]}), status=status.HTTP_400_BAD_REQUEST)


def _rejected(err: BatchRejected) -> Response:
    fields: dict[str, list[str]] = {}
    for e in err.errors:
        fields.setdefault(e["field"], []).append(e["message"])
    body = {**error_body(err.code, err.message, fields), "rows": err.errors}
    return Response(body, status=err.http_status)


RESULT_SCHEMA = inline_serializer("ResultIn", {
    "source_ref": serializers.CharField(), "subject": serializers.CharField(help_text="Subject code"),
    "accession_number": serializers.CharField(), "specimen": serializers.ChoiceField(choices=["pb", "bm", "csf",
                                                                                               "serum", "plasma"]),
    "collected_at": OffsetDateTimeField(), "analyte": serializers.CharField(help_text="Analyte code"),
    "value": serializers.CharField(help_text="Number, '<LLOQ', '>ULOQ', '<0.5' or an accepted text"),
    "unit": serializers.CharField(required=False), "status": serializers.CharField(required=False),
    "correction_reason": serializers.CharField(required=False, help_text="Makes this a correction"),
})
TOO_LARGE = OpenApiResponse(ErrorSerializer, description="The body is over the API's limit (DJANGO_API_MAX_BODY_MB, "
                                                         "32 MB by default): `body_too_large`.")
OUTCOME = inline_serializer("IngestOutcome", {"created": serializers.IntegerField(),
                                              "unchanged": serializers.IntegerField(),
                                              "corrected": serializers.IntegerField()})


class ResultSerializer(OnStudySerializer):
    subject: serializers.SlugRelatedField[Subject] = serializers.SlugRelatedField(slug_field="code", read_only=True)
    collected_at = serializers.DateTimeField(source="draw.collected_at", read_only=True)
    study_date_field = "draw__collected_at"
    analyte: serializers.SlugRelatedField[Analyte] = serializers.SlugRelatedField(slug_field="code", read_only=True)
    accession_number = serializers.CharField(source="draw.accession_number", read_only=True)

    class Meta:
        model = Result
        fields = ["id", "source_ref", "subject", "accession_number", "analyte", "value_text", "unit_text", "value",
                  "censored", "flag", "ctcae_grade", "status", "superseded", "correction_reason", "recorded_at",
                  "collected_at", *ON_STUDY]


class DrawSerializer(OnStudySerializer):
    subject: serializers.SlugRelatedField[Subject] = serializers.SlugRelatedField(slug_field="code", read_only=True)
    visit: serializers.SlugRelatedField[Visit] = serializers.SlugRelatedField(slug_field="code", read_only=True)
    study_date_field = "collected_at"

    class Meta:
        model = LabDraw
        fields = ["id", "subject", "accession_number", "specimen", "collected_at", "visit", *ON_STUDY]


class AnalyteSerializer(serializers.ModelSerializer):
    units = serializers.SerializerMethodField()

    class Meta:
        model = Analyte
        fields = ["code", "name", "loinc", "canonical_unit", "kind", "lloq", "uloq", "units", "qualitative_values"]

    def get_units(self, obj: Analyte) -> dict[str, float]:
        return {u.unit: u.factor for u in obj.units.all()}


class LabFilter(filters.FilterSet):
    """Filters shared by draws and results: the subject (code or id), its trial and the site."""

    subject = CodeOrIdFilter(field_name="subject", help_text="Subject code (or id), e.g. BJ01-0001.")
    trial = CodeOrIdFilter(field_name="subject__trial", help_text="Trial code (or id).")
    site = CodeOrIdFilter(field_name="site", help_text="Site code (or id).")
    subject__code = filters.CharFilter(field_name="subject__code", help_text="Subject code (kept for earlier "
                                                                             "clients; prefer `subject`).")


class ResultFilter(LabFilter):
    analyte = filters.CharFilter(field_name="analyte__code", help_text="Analyte code, e.g. CRP.")
    analyte__code = filters.CharFilter(field_name="analyte__code", help_text="Analyte code (kept for earlier "
                                                                             "clients; prefer `analyte`).")
    collected_after = filters.IsoDateTimeFilter(field_name="draw__collected_at", lookup_expr="gte",
                                                help_text="Drawn at or after this time (ISO 8601).")
    collected_before = filters.IsoDateTimeFilter(field_name="draw__collected_at", lookup_expr="lt",
                                                 help_text="Drawn before this time (ISO 8601).")

    class Meta:
        model = Result
        fields = ["subject", "trial", "site", "analyte", "status", "superseded"]


class DrawFilter(LabFilter):
    class Meta:
        model = LabDraw
        fields = ["subject", "trial", "site", "specimen", "accession_number"]


class ResultViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Results of the caller's sites; POST one result (an object) or a batch ({"results": [...]})."""

    serializer_class = ResultSerializer
    filterset_class = ResultFilter

    def get_queryset(self) -> QuerySet:
        qs = with_timeline(Result.objects.select_related("subject__site", "analyte", "draw"))
        return qs.filter(access_of(self.request.user).site_q(trial="subject__trial", site="site")).order_by("pk")

    @extend_schema(summary="Post one result or a batch of up to 10,000 (all or nothing)", request=RESULT_SCHEMA,
                   responses={201: OUTCOME, 200: OUTCOME, **ERRORS, 413: TOO_LARGE, 415: ERRORS[415]})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        if not is_json(request):  # before reading the body: Django may have consumed a form body already
            raise exceptions.UnsupportedMediaType(request.content_type)
        raw = request.body  # decoded by msgspec, not DRF's parsers
        try:
            rows, texts_checked = _decode_rows(raw)
        except (msgspec.ValidationError, msgspec.DecodeError) as err:
            return _decode_error(err)
        except UnicodeDecodeError:
            return _body_error("The body is not valid UTF-8.")
        except RecursionError:
            return _body_error("The body is nested too deeply.")
        try:
            outcome = ingest_results(rows=rows, by=acting_user(request), texts_checked=texts_checked)
        except BatchRejected as err:
            return _rejected(err)
        body = {"created": outcome.created, "unchanged": outcome.unchanged, "corrected": outcome.corrected}
        code = status.HTTP_201_CREATED if outcome.created or outcome.corrected else status.HTTP_200_OK
        return Response(body, status=code)


DRAW_KEY = OpenApiParameter(
    "id", OpenApiTypes.STR, OpenApiParameter.PATH,
    description="The draw's id, or its accession number (e.g. `ACC-2024-0117`). All digits is always an id: "
                "reach a numeric accession number with `?accession_number=` on the list.")


@extend_schema_view(retrieve=extend_schema(parameters=[DRAW_KEY],
                                           responses={200: DrawSerializer, 400: ERRORS[400], **READ_ERRORS}))
@extend_schema(responses={200: DrawSerializer, **READ_ERRORS})
class DrawViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Lab draws of the caller's sites, addressed by id or by accession number (as subjects are by code)."""

    serializer_class = DrawSerializer
    filterset_class = DrawFilter
    lookup_value_regex = "[^/]+"

    def get_queryset(self) -> QuerySet:
        qs = with_timeline(LabDraw.objects.select_related("subject__site", "visit"))
        return qs.filter(access_of(self.request.user).site_q(trial="subject__trial", site="site")).order_by("pk")

    def get_object(self) -> LabDraw:
        # Accession numbers are unique per site only: a caller of several sites may see one twice.
        value = self.kwargs["pk"]
        qs = self.get_queryset()
        is_id = value.isascii() and value.isdigit()  # str.isdigit() alone admits "²", which int() refuses
        matches = list(qs.filter(pk=int(value))) if is_id else list(qs.filter(accession_number=value)[:2])
        if not matches:
            return get_object_or_404(qs.none())
        if len(matches) > 1:
            raise RuleViolation("ambiguous_accession", f"Accession number {value} exists at several of your sites; "
                                "use the id.")
        self.check_object_permissions(self.request, matches[0])
        return matches[0]


@extend_schema(responses={200: AnalyteSerializer, **READ_ERRORS})
class AnalyteViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    serializer_class = AnalyteSerializer
    queryset = Analyte.objects.prefetch_related("units").order_by("code")
    lookup_field = "code"

