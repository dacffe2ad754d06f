"""Deployment checks of the environment-driven settings (run by `manage.py check --deploy`)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.checks import Error, Tags, register
from django.core.exceptions import ImproperlyConfigured

SECRET_KEY_MESSAGE = ("DJANGO_SECRET_KEY is required when DJANGO_DEBUG is off "
                      "(or a key file: DJANGO_SECRET_KEY_FILE, default var/secret_key).")


def require_secret_key() -> None:
    """Serving without a secret key would sign sessions and CSRF tokens with a public placeholder."""
    if getattr(settings, "SECRET_KEY_MISSING", False) and not settings.DEBUG:
        raise ImproperlyConfigured(SECRET_KEY_MESSAGE)


@register(Tags.security, deploy=True)
def secret_key_is_set(app_configs: Any = None, **kwargs: Any) -> list[Error]:
    if getattr(settings, "SECRET_KEY_MISSING", False) and not settings.DEBUG:
        return [Error(SECRET_KEY_MESSAGE, hint="Export a long random DJANGO_SECRET_KEY.", id="config.E001")]
    return []
