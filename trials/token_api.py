"""Personal API tokens over the API: a person lists, issues (interactive login only) and revokes their own."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.db.models import Q, QuerySet
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import generics, serializers, status
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from config.api import ERRORS, READ_ERRORS, acting_user
from config.errors import PermissionRefused
from trials.access import access_of
from trials.models import PersonalToken, Trial
from trials.services import issue_personal_token, not_a_member, revoke_personal_token


class PersonalTokenSerializer(serializers.ModelSerializer):
    trial: serializers.SlugRelatedField[Trial] = serializers.SlugRelatedField(slug_field="code", read_only=True)
    user = serializers.CharField(source="user.get_username", read_only=True)

    class Meta:
        model = PersonalToken
        fields = ["id", "name", "trial", "user", "token_prefix", "expires_on", "created_at", "last_used_at",
                  "revoked_at"]
        read_only_fields = fields


class IssueTokenSerializer(serializers.Serializer):
    trial = serializers.CharField(max_length=30, help_text="Trial code, e.g. CART19-ALL")
    name = serializers.CharField(max_length=100)
    expires_on = serializers.DateField(required=False, allow_null=True, help_text="Last day it works (UTC)")


class IssuedTokenSerializer(PersonalTokenSerializer):
    token = serializers.CharField(read_only=True, help_text="`<prefix>.<secret>`: shown this once, never again")

    class Meta(PersonalTokenSerializer.Meta):
        fields = [*PersonalTokenSerializer.Meta.fields, "token"]
        read_only_fields = fields


def require_interactive_login(request: Request) -> None:
    """Tokens are managed from a password login (a session), never by a token: a leaked token cannot
    make itself new ones."""
    if request.auth is not None:
        raise PermissionRefused("session_required", "Log in with your password to manage API tokens; a token "
                                "cannot issue or revoke tokens.")


def revocable_by(user: AbstractBaseUser) -> QuerySet[PersonalToken]:
    """Tokens ``user`` may revoke: their own, and every token of the trials they manage."""
    access = access_of(user)
    if access.is_superuser:
        return PersonalToken.objects.all()
    managed = sorted(t for t in access.trial_ids if access.designs(t))
    return PersonalToken.objects.filter(Q(user_id=user.pk) | Q(trial_id__in=managed))


class PersonalTokenListApi(generics.ListAPIView):
    """The caller's own personal API tokens (never their secrets), newest first; POST issues one."""

    serializer_class = PersonalTokenSerializer

    def get_queryset(self) -> QuerySet[PersonalToken]:
        if getattr(self, "swagger_fake_view", False):  # schema generation: no caller
            return PersonalToken.objects.none()
        return (PersonalToken.objects.filter(user_id=acting_user(self.request).pk).select_related("trial", "user")
                .order_by("-created_at", "-pk"))

    @extend_schema(summary="List my personal API tokens", responses={200: PersonalTokenSerializer(many=True),
                                                                     **READ_ERRORS})
    def get(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        return super().get(request, *args, **kwargs)

    @extend_schema(summary="Issue myself a token for one trial (password login only; the secret is shown once)",
                   request=IssueTokenSerializer, responses={201: IssuedTokenSerializer, **ERRORS})
    def post(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        require_interactive_login(request)
        data = IssueTokenSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        trial = Trial.objects.filter(code=values["trial"]).first()
        if trial is None:
            raise not_a_member(values["trial"])  # an unknown trial and a foreign one look alike
        token, secret = issue_personal_token(trial=trial, name=values["name"], expires_on=values.get("expires_on"),
                                             by=acting_user(request))
        # no-store: neither caches nor the Idempotency-Key store may keep the secret.
        return Response({**PersonalTokenSerializer(token).data, "token": secret}, status=status.HTTP_201_CREATED,
                        headers={"Cache-Control": "no-store"})


class PersonalTokenRevokeApi(APIView):
    """Revoke a token: its owner, or a data manager of its trial (password login only)."""

    @extend_schema(summary="Revoke a personal API token", request=None,
                   responses={200: PersonalTokenSerializer, **ERRORS})
    def post(self, request: Request, pk: int, **kwargs: Any) -> Response:
        require_interactive_login(request)
        token = get_object_or_404(revocable_by(acting_user(request)), pk=pk)
        token = revoke_personal_token(token=token, by=acting_user(request))
        return Response(PersonalTokenSerializer(token).data)
