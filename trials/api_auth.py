"""Token authentication for laboratory and site systems and for personal tokens (DRF imports it early)."""

from __future__ import annotations

from typing import Any

from django.contrib.auth.models import AbstractBaseUser
from django.http import HttpRequest
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from rest_framework import authentication, exceptions, status
from rest_framework.request import Request


class TooManyFailures(exceptions.APIException):
    """The client address or the token has failed too often within the cool-off (config.lockout)."""

    status_code = status.HTTP_429_TOO_MANY_REQUESTS
    default_code = "too_many_failures"


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
        # A refusal is reused too, so that one wrong token counts as one failure.
        cached = getattr(request._request, "_token_authentication", None)
        if cached is not None and cached[0] == header[1]:
            if isinstance(cached[1], exceptions.APIException):
                raise cached[1]
            return cached[1]
        try:
            result = self._credential_user(header[1], request._request)
        except exceptions.APIException as refusal:
            vars(request._request)["_token_authentication"] = (header[1], refusal)
            raise
        vars(request._request)["_token_authentication"] = (header[1], result)
        return result

    def _credential_user(self, raw: str, http_request: HttpRequest) -> tuple[AbstractBaseUser, Any]:
        from config.lockout import TOKEN_USERNAME, lockout_message, record_failure, token_locked_sql
        from trials.access import restrict_to_trial
        from trials.models import PersonalToken
        from trials.services import authenticate_token, token_was_issued

        prefix = raw.partition(".")[0][:40]
        # One query: the token, its user, the user's memberships (the site scope) and the lockout state.
        credential = authenticate_token(raw, extra=token_locked_sql(http_request, prefix))
        if credential is None:
            # A revoked or expired token is not a guess: it is refused, and counts towards no lock.
            if not token_was_issued(raw) and record_failure(http_request, TOKEN_USERNAME.format(prefix=prefix)):
                raise TooManyFailures(lockout_message())
            raise exceptions.AuthenticationFailed("Invalid, expired or revoked token.")
        if vars(credential).get("extra"):  # locked
            raise TooManyFailures(lockout_message())
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
