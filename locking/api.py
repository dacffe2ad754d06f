"""Data locks over the API: list (scoped like the admin), freeze or lock a scope, release with a reason."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django_filters import rest_framework as filters
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.request import Request
from rest_framework.response import Response

from config.api import ERRORS, READ_ERRORS, CodeOrIdFilter, StrictFilterBackend, acting_user
from locking.models import Level, Lock
from locking.selectors import list_locks
from locking.services import lock_scope, release_lock
from patients.models import Subject
from trials.access import access_of
from trials.models import Site, Trial


class LockSerializer(serializers.ModelSerializer):
    trial: serializers.SlugRelatedField[Trial] = serializers.SlugRelatedField(slug_field="code", read_only=True)
    site: serializers.SlugRelatedField[Site] = serializers.SlugRelatedField(slug_field="code", read_only=True,
                                                                           allow_null=True)
    subject: serializers.SlugRelatedField[Subject] = serializers.SlugRelatedField(slug_field="code", read_only=True,
                                                                                 allow_null=True)
    scope = serializers.CharField(source="scope_label", read_only=True)
    locked_by = serializers.CharField(source="locked_by.get_username", read_only=True)
    released_by = serializers.CharField(source="released_by.get_username", read_only=True, allow_null=True,
                                        default=None)
    active = serializers.BooleanField(read_only=True)

    class Meta:
        model = Lock
        fields = ["id", "trial", "site", "subject", "scope", "level", "reason", "active", "locked_by", "locked_at",
                  "released_by", "released_at", "release_reason"]
        read_only_fields = fields


class _MemberCodeField(serializers.SlugRelatedField):
    """A trial or site by code, among the caller's trials (and their sites): others do not exist for them."""

    def __init__(self, model: Any, **kwargs: Any) -> None:
        self.model = model
        super().__init__(slug_field="code", queryset=model.objects.all(), **kwargs)

    def get_queryset(self) -> QuerySet:
        access = access_of(self.context["request"].user)
        if access.is_superuser:
            return self.model.objects.all()
        trials = sorted(access.trial_ids)
        if self.model is Trial:
            return Trial.objects.filter(pk__in=trials)
        return Site.objects.filter(trial_sites__trial_id__in=trials).distinct()


class LockCreateSerializer(serializers.Serializer):
    """The scope by codes: a trial; a site of it; or a subject (by code or id) of it."""

    trial = _MemberCodeField(Trial)
    site = _MemberCodeField(Site, required=False, allow_null=True)
    subject = serializers.CharField(required=False, allow_null=True, help_text="Subject code or id")
    level = serializers.ChoiceField(choices=Level.choices)
    reason = serializers.CharField(allow_blank=True, help_text="Why the data are frozen or locked")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        value = attrs.get("subject")
        if value is None:
            return attrs
        access = access_of(self.context["request"].user)
        subjects = Subject.objects.filter(access.site_q(), trial=attrs["trial"]).select_related("site")
        is_id = value.isascii() and value.isdigit()
        found = subjects.filter(pk=int(value)).first() if is_id else subjects.filter(code=value).first()
        if found is None:
            raise serializers.ValidationError({"subject": [f"No subject {value} of {attrs['trial'].code} in your "
                                                           "sites."]})
        attrs["subject"] = found
        return attrs


class LockReleaseSerializer(serializers.Serializer):
    reason = serializers.CharField(allow_blank=True, help_text="Why the data are opened again")


class LockFilter(filters.FilterSet):
    active = filters.BooleanFilter(field_name="released_at", lookup_expr="isnull", label="Active (not released)")
    level = filters.ChoiceFilter(choices=Level.choices)
    trial = CodeOrIdFilter(field_name="trial", help_text="Trial code (or id).")
    site = CodeOrIdFilter(field_name="site", help_text="Site code (or id).")
    subject = CodeOrIdFilter(field_name="subject", help_text="Subject code (or id).")

    class Meta:
        model = Lock
        fields = ["active", "level", "trial", "site", "subject"]


@extend_schema(responses={200: LockSerializer, **READ_ERRORS})
class LockViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Freezes and locks the caller may see: trial-wide ones of their trials, and those of their sites."""

    serializer_class = LockSerializer
    filterset_class = LockFilter
    filter_backends = [StrictFilterBackend]

    def get_queryset(self) -> QuerySet:
        return list_locks(user=self.request.user)

    @extend_schema(summary="Freeze or lock a trial, a site of it or a subject (data managers)",
                   request=LockCreateSerializer, responses={201: LockSerializer, **ERRORS})
    def create(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        serializer = LockCreateSerializer(data=request.data, context=self.get_serializer_context())
        serializer.is_valid(raise_exception=True)
        lock = lock_scope(by=acting_user(request), **serializer.validated_data)
        return Response(LockSerializer(self._reload(lock)).data, status=status.HTTP_201_CREATED)

    @extend_schema(summary="Release a freeze or lock, with the reason (data managers)", request=LockReleaseSerializer,
                   responses={200: LockSerializer, **ERRORS})
    @action(detail=True, methods=["post"])
    def release(self, request: Request, pk: str, **kwargs: Any) -> Response:
        lock = self.get_object()  # 404 outside the caller's scope
        serializer = LockReleaseSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        release_lock(lock=lock, reason=serializer.validated_data["reason"], by=acting_user(request))
        return Response(LockSerializer(self._reload(lock)).data)

    def _reload(self, lock: Lock) -> Lock:
        return list_locks(user=self.request.user).filter(pk=lock.pk).first() or lock
