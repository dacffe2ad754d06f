"""Signatures over the API: scoped list and detail with the valid/invalid status, and signing.

Signing is for people in a session (an investigator re-entering the password); a service account's
token is refused (403). A subject outside the caller's sites does not exist for them (404).
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django_filters import rest_framework as filters
from drf_spectacular.utils import extend_schema, extend_schema_field
from rest_framework import exceptions, generics, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from config.api import ERRORS, READ_ERRORS, CodeOrIdFilter, StrictFilterBackend, acting_user
from config.errors import PermissionRefused, RuleViolation
from patients.models import Subject
from signatures import services
from signatures.content import form_labels, model_of, subject_filter
from signatures.models import Meaning, Signature
from signatures.selectors import list_signatures, verify_signature
from trials.access import access_of
from trials.models import ServiceAccount


class SignatureSerializer(serializers.ModelSerializer):
    subject = serializers.CharField(source="subject.code", read_only=True, help_text="The subject's code.")
    record_type = serializers.SerializerMethodField(help_text="The signed form's model, e.g. "
                                                               "patients.adverseevent; null for the casebook.")
    status = serializers.CharField(read_only=True, help_text='"valid", or "invalid" once signed data changed.')

    class Meta:
        model = Signature
        fields = ["id", "subject", "scope", "record_type", "record_id", "meaning", "signer", "signer_name",
                  "signed_at", "content_hash", "status", "invalidated_at", "invalidated_reason"]
        read_only_fields = fields

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_record_type(self, obj: Signature) -> str | None:
        return obj.record_label or None


class SignatureDetailSerializer(SignatureSerializer):
    content_matches = serializers.SerializerMethodField(
        help_text="Whether the covered data, recomputed now, still hashes to content_hash.")

    class Meta(SignatureSerializer.Meta):
        fields = [*SignatureSerializer.Meta.fields, "content_matches"]
        read_only_fields = fields

    def get_content_matches(self, obj: Signature) -> bool:
        return verify_signature(obj).matches


class SignRequestSerializer(serializers.Serializer):
    subject = serializers.CharField(help_text="The subject's id or code.")
    record_type = serializers.ChoiceField(choices=form_labels(), required=False, allow_null=True,
                                          help_text="To sign one form: its model. Omit to sign the casebook.")
    record_id = serializers.IntegerField(min_value=1, required=False, allow_null=True,
                                         help_text="To sign one form: its id.")
    meaning = serializers.ChoiceField(choices=Meaning.choices)
    password = serializers.CharField(write_only=True, trim_whitespace=False, style={"input_type": "password"},
                                     help_text="The signer's password, re-entered for this signature.")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if (attrs.get("record_type") is None) != (attrs.get("record_id") is None):
            missing = "record_id" if attrs.get("record_id") is None else "record_type"
            raise serializers.ValidationError({missing: ["Give both record_type and record_id to sign a form."]})
        return attrs


class SignatureFilter(filters.FilterSet):
    subject = CodeOrIdFilter(field_name="subject", help_text="Subject code (or id).")
    trial = CodeOrIdFilter(field_name="subject__trial", help_text="Trial code (or id).")
    site = CodeOrIdFilter(field_name="subject__site", help_text="Site code (or id).")
    valid = filters.BooleanFilter(field_name="invalidated_at", lookup_expr="isnull",
                                  help_text="true: still valid; false: changed since signed.")

    class Meta:
        model = Signature
        fields = ["subject", "trial", "site", "valid", "meaning", "scope"]


def _visible_subject(request: Request, value: str) -> Subject:
    qs = Subject.objects.filter(access_of(request.user).site_q()).select_related("trial", "site")
    matches = list(qs.filter(pk=int(value))) if value.isascii() and value.isdigit() else list(qs.filter(code=value)[:2])
    if not matches:
        raise exceptions.NotFound(f"No subject {value} in your sites.")
    if len(matches) > 1:
        raise RuleViolation("ambiguous_code", f"Code {value} exists in several of your trials; use the id.",
                            field="subject")
    return matches[0]


def _form_record(subject: Subject, label: str | None, pk: int | None) -> Any:
    if label is None or pk is None:
        return None
    model = model_of(label)
    record = model._default_manager.filter(pk=pk).filter(**subject_filter(label, subject.pk)).first()
    if record is None:
        raise RuleViolation("no_such_record", f"{subject.code} has no {model._meta.verbose_name} #{pk}.",
                            field="record_id")
    return record


class SignatureListApi(generics.ListAPIView):
    """Signatures of subjects at the caller's sites (newest first), and signing."""

    serializer_class = SignatureSerializer
    filter_backends = [StrictFilterBackend]
    filterset_class = SignatureFilter

    def get_queryset(self) -> QuerySet[Signature]:
        return list_signatures(user=self.request.user)

    @extend_schema(summary="List signatures", responses={200: SignatureSerializer(many=True), **READ_ERRORS})
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(summary="Sign a casebook or a form (investigators; password re-entry)",
                   request=SignRequestSerializer, responses={201: SignatureSerializer, **ERRORS})
    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        if isinstance(request.auth, ServiceAccount):
            raise PermissionRefused("service_account_cannot_sign", "A service account cannot sign.")
        data = SignRequestSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        subject = _visible_subject(request, values["subject"])
        record = _form_record(subject, values.get("record_type"), values.get("record_id"))
        signature = services.sign(subject=subject, meaning=values["meaning"], password=values["password"],
                                  by=acting_user(request), record=record)
        signature = self.get_queryset().get(pk=signature.pk)
        return Response(SignatureSerializer(signature).data, status=status.HTTP_201_CREATED)


class SignatureDetailApi(generics.RetrieveAPIView):
    serializer_class = SignatureDetailSerializer

    def get_queryset(self) -> QuerySet[Signature]:
        return list_signatures(user=self.request.user)

    @extend_schema(summary="A signature, with a fresh check of the signed content",
                   responses={200: SignatureDetailSerializer, **READ_ERRORS})
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)
