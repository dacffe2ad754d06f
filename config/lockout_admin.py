"""The login-throttling pages (django-axes's access attempts, failures and logins) for superusers and the
data managers among staff. Deleting an access attempt lifts the lock it holds (config.lockout)."""

from __future__ import annotations

from typing import Any

from axes.admin import AccessAttemptAdmin, AccessFailureLogAdmin, AccessLogAdmin
from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from django.contrib import admin
from django.http import HttpRequest

from trials.access import access_of


def manages_logins(request: HttpRequest) -> bool:
    user = request.user
    return user.is_active and (user.is_superuser or (user.is_staff and access_of(user).designs()))


class ManagedByDataManagers:
    """Seen by superusers and staff data managers; attempts are deleted (unlocking), never edited."""

    def has_module_permission(self, request: HttpRequest) -> bool:
        return manages_logins(request)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return manages_logins(request)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ManagedAccessAttemptAdmin(ManagedByDataManagers, AccessAttemptAdmin):
    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return manages_logins(request)


class ManagedAccessFailureLogAdmin(ManagedByDataManagers, AccessFailureLogAdmin):
    pass


class ManagedAccessLogAdmin(ManagedByDataManagers, AccessLogAdmin):
    pass


for model, model_admin in ((AccessAttempt, ManagedAccessAttemptAdmin), (AccessFailureLog, ManagedAccessFailureLogAdmin),
                           (AccessLog, ManagedAccessLogAdmin)):
    if admin.site.is_registered(model):
        admin.site.unregister(model)
    admin.site.register(model, model_admin)
