"""Token authentication for laboratory and site systems (kept apart from config.api: DRF imports it early)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions
from rest_framework.request import Request


class TokenAuthentication(authentication.BaseAuthentication):
    """``Authorization: Token <prefix>.<secret>`` for laboratory and site systems (trials.ServiceAccount)."""

    keyword = "Token"

    def authenticate(self, request: Request) -> tuple[AbstractBaseUser, Any] | None:
        header = authentication.get_authorization_header(request).decode("latin-1").split()
        if not header or header[0] != self.keyword:
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Malformed token header.")
        from trials.services import authenticate_token

        account = authenticate_token(header[1])
        if account is None:
            raise exceptions.AuthenticationFailed("Invalid or revoked token.")
        from config.audit import note_service_account

        note_service_account(account)
        return account.user, account

    def authenticate_header(self, request: Request) -> str:
        return self.keyword


class TokenScheme(OpenApiAuthenticationExtension):
    target_class = "config.api_auth.TokenAuthentication"
    name = "serviceToken"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {"type": "apiKey", "in": "header", "name": "Authorization",
                "description": "`Token <prefix>.<secret>`, issued once to a service account by a data manager."}
