"""GET /api/v1/audit-events/: the audit trail for data managers and monitors, scoped and filtered like
the admin's (see ``audit.selectors``), newest first, paginated."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from drf_spectacular.utils import extend_schema
from rest_framework import generics, permissions, serializers
from rest_framework.request import Request
from rest_framework.response import Response

from audit.selectors import AuditEntryList, AuditFilters, audit_scope, list_audit_entries
from audit.tables import table_for
from config.api import ERRORS, OffsetDateTimeField, refuse_unknown_params
from patients.models import Subject
from trials.access import access_of
from trials.models import Site


class CanReadAuditTrail(permissions.BasePermission):
    message = "Only data managers, monitors and superusers read the audit trail."

    def has_permission(self, request: Request, view: Any) -> bool:
        return audit_scope(request.user) is not None


class AuditFilterSerializer(serializers.Serializer):
    date_from = serializers.DateField(required=False, help_text="UTC date, inclusive.")
    date_to = serializers.DateField(required=False, help_text="UTC date, inclusive.")
    site = serializers.CharField(required=False, help_text="Site code, e.g. BJ01.")
    user = serializers.CharField(required=False, help_text="Username of the person or service account.")
    table = serializers.CharField(required=False, help_text="Model label, e.g. patients.Subject.")
    subject = serializers.CharField(required=False, help_text="Subject code (or id): the subject and every "
                                                              "record placed under it.")

    def validate_table(self, value: str) -> str:
        table = table_for(value)
        if table is None:
            raise serializers.ValidationError(f"{value} is not an audited table.")
        return table.label

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs.get("date_from") and attrs.get("date_to") and attrs["date_from"] > attrs["date_to"]:
            raise serializers.ValidationError({"date_to": ["The end date is before the start date."]})
        return attrs

    def audit_filters(self) -> AuditFilters:
        data = self.validated_data
        # An unknown site or user matches nothing (id 0), like one outside the caller's scope.
        site_id = user_id = None
        if "site" in data:
            site_id = Site.objects.filter(code=data["site"]).values_list("pk", flat=True).first() or 0
        if "user" in data:
            users = get_user_model().objects.filter(username=data["user"])
            user_id = users.values_list("pk", flat=True).first() or 0
        return AuditFilters(date_from=data.get("date_from"), date_to=data.get("date_to"), site_id=site_id,
                            user_id=user_id, table=data.get("table"), subject_id=self._subject_id(data.get("subject")))

    def _subject_id(self, value: str | None) -> int | None:
        """An id as given (the trail is scoped anyway); a code among the caller's subjects, else 0 (none):
        another site's subject code matches nothing, exactly as an unknown one."""
        if value is None:
            return None
        if value.isascii() and value.isdigit() and len(value) < 19:
            return int(value)
        subjects = Subject.objects.filter(access_of(self.context["request"].user).site_q(), code=value)
        ids = list(subjects.values_list("pk", flat=True)[:2])
        if len(ids) > 1:
            raise serializers.ValidationError({"subject": [f"Subject code {value} exists in several of your trials; "
                                                           "use its id."]})
        return ids[0] if ids else 0


class FieldChangeSerializer(serializers.Serializer):
    field = serializers.CharField(help_text="Column, e.g. marrow_blasts_pct or subject_id.")
    label = serializers.CharField()  # type: ignore[assignment]  # a declared field (the metaclass takes it off the class), not Field.label
    old = serializers.CharField(allow_null=True, help_text="As stored; null for an insert.")
    new = serializers.CharField(allow_null=True, help_text="As stored; null for a delete.")


class AuditRequestSerializer(serializers.Serializer):
    url = serializers.CharField(allow_null=True)
    method = serializers.CharField(allow_null=True)
    request_id = serializers.CharField(allow_null=True)
    # A declared field (the serializer's metaclass takes it off the class), not Field.source.
    source = serializers.CharField(allow_null=True, help_text="admin, api or command, where recorded.")  # type: ignore[assignment]


class AuditEventSerializer(serializers.Serializer):
    id = serializers.CharField(source="slug", help_text="Unique across tables: <event model>:<event id>.")
    timestamp = OffsetDateTimeField(source="at", help_text="UTC, from the database server's clock.")
    action = serializers.CharField(help_text="insert, update or delete.")
    table = serializers.CharField()
    table_name = serializers.CharField()
    record_id = serializers.CharField()
    site = serializers.CharField(source="site_code", allow_null=True)
    subject = serializers.CharField(source="subject_code", allow_null=True)
    subject_id = serializers.IntegerField(allow_null=True)
    user = serializers.CharField(source="username", allow_null=True)
    user_full_name = serializers.CharField(allow_null=True)
    service_account = serializers.CharField(allow_null=True)
    reason = serializers.CharField(allow_null=True)
    request = AuditRequestSerializer(source="*")
    changes = FieldChangeSerializer(many=True)


class AuditEventListApi(generics.ListAPIView):
    serializer_class = AuditEventSerializer
    permission_classes = [permissions.IsAuthenticated, CanReadAuditTrail]
    filter_backends: list[Any] = []

    @extend_schema(parameters=[AuditFilterSerializer], responses={200: AuditEventSerializer(many=True),
                                                                  **{c: ERRORS[c] for c in (400, 401, 403)}})
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    def get_queryset(self) -> AuditEntryList:  # type: ignore[override]
        refuse_unknown_params(self.request, AuditFilterSerializer().fields)
        params = AuditFilterSerializer(data=self.request.query_params, context={"request": self.request})
        params.is_valid(raise_exception=True)
        scope = audit_scope(self.request.user)
        assert scope is not None  # CanReadAuditTrail
        return list_audit_entries(scope=scope, filters=params.audit_filters(), newest_first=True)
