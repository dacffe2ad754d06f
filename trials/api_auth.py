"""Token authentication for laboratory and site systems and for personal tokens (DRF imports it early)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions
from rest_framework.request import Request


class TokenAuthentication(authentication.BaseAuthentication):
    """``Authorization: Token <prefix>.<secret>``: a laboratory or site system (trials.ServiceAccount), or a
    person's own token for one trial (trials.PersonalToken), which confines the request to that trial."""

    keyword = "Token"

    def authenticate(self, request: Request) -> tuple[AbstractBaseUser, Any] | None:
        header = authentication.get_authorization_header(request).decode("latin-1").split()
        if not header or header[0] != self.keyword:
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Malformed token header.")
        # The Idempotency-Key middleware authenticates before the view does: reuse its answer.
        cached = getattr(request._request, "_token_authentication", None)
        if cached is not None and cached[0] == header[1]:
            return cached[1]
        result = self._credential_user(header[1])
        request._request._token_authentication = (header[1], result)
        return result

    def _credential_user(self, raw: str) -> tuple[AbstractBaseUser, Any]:
        from trials.access import restrict_to_trial
        from trials.models import PersonalToken
        from trials.services import authenticate_token

        credential = authenticate_token(raw)
        if credential is None:
            raise exceptions.AuthenticationFailed("Invalid, expired or revoked token.")
        from config.audit import note_personal_token, note_service_account

        if isinstance(credential, PersonalToken):
            restrict_to_trial(credential.user, credential.trial_id)
            note_personal_token(credential)
        else:
            note_service_account(credential)
        return credential.user, credential

    def authenticate_header(self, request: Request) -> str:
        return self.keyword


class TokenScheme(OpenApiAuthenticationExtension):
    target_class = "trials.api_auth.TokenAuthentication"
    name = "serviceToken"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {"type": "apiKey", "in": "header", "name": "Authorization",
                "description": "`Token <prefix>.<secret>`: a service account's token, issued once by a data "
                                "manager, or a person's own token for one trial (`/personal-tokens/`)."}
