"""Data query endpoints: list and read the queries of the caller's sites with their threads; raise,
answer, close and re-open through ``dataqueries.services``. A query of another site is a 404."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import User
from django.db.models import Count, Prefetch, Q, QuerySet
from django_filters import rest_framework as filters
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from config.api import ERRORS, READ_ERRORS, CodeOrIdFilter, acting_user
from dataqueries import services
from dataqueries.models import CheckCode, DataQuery, QueryMessage
from patients.api.serializers import ScopedSubjectField
from patients.models import Subject
from trials.access import access_of
from trials.models import Site, Trial


class MessageSerializer(serializers.ModelSerializer):
    by: serializers.SlugRelatedField[User] = serializers.SlugRelatedField(
        slug_field="username", read_only=True, allow_null=True, help_text="Empty for an automatic check.")

    class Meta:
        model = QueryMessage
        fields = ["kind", "text", "by", "at"]
        read_only_fields = fields


class DataQuerySerializer(serializers.ModelSerializer):
    trial: serializers.SlugRelatedField[Trial] = serializers.SlugRelatedField(slug_field="code", read_only=True)
    site: serializers.SlugRelatedField[Site] = serializers.SlugRelatedField(slug_field="code", read_only=True)
    subject: serializers.SlugRelatedField[Subject] = serializers.SlugRelatedField(slug_field="code", read_only=True)
    record_type = serializers.CharField(read_only=True, help_text="e.g. patients.adverseevent")
    record_id = serializers.IntegerField(source="object_id", read_only=True)
    check = serializers.CharField(source="check_code", read_only=True, help_text="Automatic check code, or empty.")
    raised_by: serializers.SlugRelatedField[User] = serializers.SlugRelatedField(slug_field="username", read_only=True,
                                                                                 allow_null=True)
    messages = MessageSerializer(many=True, read_only=True, help_text="The thread, oldest first.")

    class Meta:
        model = DataQuery
        fields = ["id", "trial", "site", "subject", "record_type", "record_id", "field_name", "origin", "check",
                  "status", "auto_resolved", "raised_by", "raised_at", "text", "messages"]
        read_only_fields = fields


class RaiseSerializer(serializers.Serializer):
    subject = ScopedSubjectField(help_text="Subject code (or id) in your sites.")
    record_type = serializers.ChoiceField(choices=sorted(services.SUBJECT_PATHS),
                                          help_text="The queried record's kind, e.g. patients.adverseevent.")
    record_id = serializers.IntegerField(min_value=1)
    # A declared field (the serializer's metaclass takes it off the class), not Field.field_name.
    field_name = serializers.CharField(max_length=60, help_text="The queried field, e.g. onset_on.")  # type: ignore[assignment]
    text = serializers.CharField(help_text="The question for the site.")


class TextSerializer(serializers.Serializer):
    text = serializers.CharField(allow_blank=True, required=False, default="")


class DataQueryFilter(filters.FilterSet):
    status = filters.ChoiceFilter(choices=DataQuery.Status.choices)
    origin = filters.ChoiceFilter(choices=DataQuery.Origin.choices)
    check = filters.ChoiceFilter(field_name="check_code", choices=CheckCode.choices)
    subject = CodeOrIdFilter(field_name="subject", help_text="Subject code (or id).")
    trial = CodeOrIdFilter(field_name="trial", help_text="Trial code (or id).")
    site = CodeOrIdFilter(field_name="site", help_text="Site code (or id).")

    class Meta:
        model = DataQuery
        fields = ["status", "origin", "check", "subject", "trial", "site"]


def scoped_queries(user: Any) -> QuerySet[DataQuery]:
    """The queries of the user's sites, with what the serializer shows: a constant number of queries."""
    thread = QueryMessage.objects.select_related("by").order_by("at", "pk")
    return (DataQuery.objects.filter(access_of(user).site_q())
            .select_related("trial", "site", "subject", "content_type", "raised_by")
            .prefetch_related(Prefetch("messages", queryset=thread)).order_by("-raised_at", "-pk"))


OpenCounts = inline_serializer(name="OpenQueryCounts", fields={
    "by_site": serializers.ListField(child=inline_serializer(name="OpenQueriesOfSite", fields={
        "site": serializers.CharField(), "open": serializers.IntegerField(),
        "answered": serializers.IntegerField()})),
    "by_subject": serializers.ListField(child=inline_serializer(name="OpenQueriesOfSubject", fields={
        "trial": serializers.CharField(), "site": serializers.CharField(), "subject": serializers.CharField(),
        "open": serializers.IntegerField(), "answered": serializers.IntegerField()})),
})


class DataQueryViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Data queries of the caller's sites; ``status`` open/answered/closed, newest first."""

    serializer_class = DataQuerySerializer
    filterset_class = DataQueryFilter

    def get_queryset(self) -> QuerySet[DataQuery]:
        return scoped_queries(self.request.user)

    def _detail(self, query: DataQuery, code: int = status.HTTP_200_OK) -> Response:
        return Response(DataQuerySerializer(self.get_queryset().get(pk=query.pk)).data, status=code)

    @extend_schema(summary="Raise a query on a field of a subject's record", request=RaiseSerializer,
                   responses={201: DataQuerySerializer, **ERRORS})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        body = RaiseSerializer(data=request.data, context=self.get_serializer_context())
        body.is_valid(raise_exception=True)
        data = body.validated_data
        subject = data["subject"]  # among the caller's subjects; the role is checked before the record is looked up
        services.check_can_raise(user=acting_user(request), trial_id=subject.trial_id, site_id=subject.site_id)
        record = services.find_record(record_type=data["record_type"], record_id=data["record_id"], subject=subject)
        query = services.raise_query(subject=data["subject"], record=record, field=data["field_name"],
                                     text=data["text"], by=acting_user(request))
        return self._detail(query, status.HTTP_201_CREATED)

    def _act(self, run: Any) -> Response:
        query = self.get_object()  # 404 outside the caller's sites
        body = TextSerializer(data=self.request.data)
        body.is_valid(raise_exception=True)
        return self._detail(run(query=query, text=body.validated_data["text"], by=acting_user(self.request)))

    @extend_schema(summary="Answer an open query (site)", request=TextSerializer,
                   responses={200: DataQuerySerializer, **ERRORS})
    @action(detail=True, methods=["post"])
    def answer(self, request: Request, pk: str, **kwargs: Any) -> Response:
        return self._act(services.answer_query)

    @extend_schema(summary="Close a query (data manager)", request=TextSerializer,
                   responses={200: DataQuerySerializer, **ERRORS})
    @action(detail=True, methods=["post"])
    def close(self, request: Request, pk: str, **kwargs: Any) -> Response:
        return self._act(services.close_query)

    @extend_schema(summary="Re-open an answered or closed query (data manager)", request=TextSerializer,
                   responses={200: DataQuerySerializer, **ERRORS})
    @action(detail=True, methods=["post"])
    def reopen(self, request: Request, pk: str, **kwargs: Any) -> Response:
        return self._act(services.reopen_query)

    @extend_schema(summary="Open and answered query counts per site and per subject", filters=False,
                   responses={200: OpenCounts, **READ_ERRORS})
    @action(detail=False, methods=["get"], url_path="open-counts", pagination_class=None, filterset_class=None)
    def open_counts(self, request: Request, **kwargs: Any) -> Response:
        qs = DataQuery.objects.filter(access_of(request.user).site_q(), status__in=DataQuery.UNRESOLVED).order_by()
        counts = {"open": Count("pk", filter=Q(status=DataQuery.Status.OPEN)),
                  "answered": Count("pk", filter=Q(status=DataQuery.Status.ANSWERED))}
        by_site = qs.values("site__code").annotate(**counts).order_by("site__code")
        by_subject = (qs.values("trial__code", "site__code", "subject__code").annotate(**counts)
                      .order_by("site__code", "trial__code", "subject__code"))
        return Response({
            "by_site": [{"site": r["site__code"], "open": r["open"], "answered": r["answered"]} for r in by_site],
            "by_subject": [{"trial": r["trial__code"], "site": r["site__code"], "subject": r["subject__code"],
                            "open": r["open"], "answered": r["answered"]} for r in by_subject],
        })
