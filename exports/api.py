"""Exports over the API: request an export (a background job), follow its state and progress, download
its package, retry it when it failed."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.http import FileResponse
from django.urls import reverse
from django_filters import rest_framework as filters
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from config.api import ERRORS, READ_ERRORS, CodeOrIdFilter, ErrorSerializer, StrictFilterBackend, acting_user
from config.errors import RuleViolation, StateConflict
from exports.models import ExportJob, State
from exports.selectors import list_export_jobs
from exports.services import create_export_job, is_stalled, retry_export_job
from exports.storage import export_storage
from trials.access import access_of
from trials.models import Trial


class ExportRequestSerializer(serializers.Serializer):
    trial = serializers.CharField(help_text="Trial code, e.g. CART19-ALL.")
    format = serializers.CharField(help_text="Format code: csv, odm, sdtm, casebook...")
    sites = serializers.ListField(child=serializers.CharField(), required=False, allow_empty=True,
                                  help_text="Site codes to export (default: every site you may export).")
    subjects = serializers.ListField(child=serializers.CharField(), required=False, allow_empty=True,
                                     help_text="Subject codes to export (default: every subject of the sites).")


class ExportJobSerializer(serializers.ModelSerializer):
    trial: serializers.SlugRelatedField = serializers.SlugRelatedField(slug_field="code", read_only=True)
    requested_by = serializers.CharField(source="requested_by.get_username", read_only=True)
    progress = serializers.SerializerMethodField()
    stalled = serializers.SerializerMethodField()
    links = serializers.SerializerMethodField()

    class Meta:
        model = ExportJob
        fields = ["id", "trial", "format", "sites", "subjects", "state", "stalled", "progress", "attempts", "error",
                  "requested_by", "created_at", "started_at", "finished_at", "cutoff", "size", "sha256", "links"]
        read_only_fields = fields

    @extend_schema_field(serializers.DictField(child=serializers.IntegerField()))
    def get_progress(self, job: ExportJob) -> dict[str, int]:
        return {"files_done": job.files_done, "files_total": job.files_total}

    def get_stalled(self, job: ExportJob) -> bool:
        return is_stalled(job)

    @extend_schema_field(serializers.DictField(child=serializers.CharField(allow_null=True)))
    def get_links(self, job: ExportJob) -> dict[str, str | None]:
        def url(name: str) -> str:
            return reverse(name, kwargs={"version": "v1", "pk": job.pk})

        retryable = job.state == State.FAILED or is_stalled(job)
        return {"self": url("export-detail"), "file": url("export-file") if job.state == State.DONE else None,
                "retry": url("export-retry") if retryable else None}


class ExportJobDetailSerializer(ExportJobSerializer):
    class Meta(ExportJobSerializer.Meta):
        fields = [*ExportJobSerializer.Meta.fields, "manifest"]
        read_only_fields = fields


class ExportJobFilter(filters.FilterSet):
    trial = CodeOrIdFilter(field_name="trial", help_text="Trial code (or id).")
    state = filters.ChoiceFilter(choices=State.choices)
    format = filters.CharFilter(field_name="format")

    class Meta:
        model = ExportJob
        fields = ["trial", "state", "format"]


def _trial(code: str, user: Any) -> Trial:
    """A trial by code among the caller's trials; another trial is refused as an unknown one."""
    access = access_of(user)
    trial = Trial.objects.filter(code=code).first()
    if trial is None or not (access.is_superuser or trial.pk in access.trial_ids):
        raise RuleViolation("unknown_trial", f"No trial {code} among your trials.", field="trial")
    return trial


@extend_schema(responses={200: ExportJobSerializer, **READ_ERRORS})
class ExportJobViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Your exports; data managers also see their trial's exports within their sites."""

    serializer_class = ExportJobSerializer
    filterset_class = ExportJobFilter
    filter_backends = [StrictFilterBackend]

    def get_queryset(self) -> QuerySet:
        return list_export_jobs(user=self.request.user)

    def get_serializer_class(self) -> type[serializers.BaseSerializer]:
        return ExportJobSerializer if self.action == "list" else ExportJobDetailSerializer

    @extend_schema(responses={200: ExportJobDetailSerializer, **READ_ERRORS})
    def retrieve(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().retrieve(request, *args, **kwargs)

    @extend_schema(summary="Export case report forms (a background job; 202 with the job to follow)",
                   request=ExportRequestSerializer, responses={202: ExportJobDetailSerializer, **ERRORS})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = ExportRequestSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data, user = serializer.validated_data, acting_user(request)
        job = create_export_job(by=user, trial=_trial(data["trial"], user), format_code=data["format"],
                                site_codes=data.get("sites"), subject_codes=data.get("subjects"))
        return Response(ExportJobDetailSerializer(job).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(summary="Download the export's package (a zip with manifest.json)",
                   responses={(200, "application/zip"): OpenApiResponse(OpenApiTypes.BINARY, description="The zip."),
                              409: OpenApiResponse(ErrorSerializer, description="The export is not done."),
                              **READ_ERRORS})
    @action(detail=True, methods=["get"])
    def file(self, request: Request, *args: Any, **kwargs: Any) -> FileResponse:
        job = self.get_object()  # 404 outside the caller's scope
        if job.state != State.DONE:
            raise StateConflict("export_not_done", f"Export #{job.pk} is {job.get_state_display().lower()}; its "
                                "file is available once it is done.")
        response = FileResponse(export_storage().open(job.file_name, "rb"), as_attachment=True,
                                filename=job.file_name.rsplit("/", 1)[-1], content_type="application/zip")
        response["X-Content-SHA256"] = job.sha256
        return response

    @extend_schema(summary="Retry a failed (or stalled) export as a new attempt", request=None,
                   responses={202: ExportJobDetailSerializer, **ERRORS})
    @action(detail=True, methods=["post"])
    def retry(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        job = retry_export_job(job=self.get_object(), by=acting_user(request))
        return Response(ExportJobDetailSerializer(job).data, status=status.HTTP_202_ACCEPTED)
