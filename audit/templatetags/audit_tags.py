"""Links from record pages to their audit history, shown only to users who may read it."""

from __future__ import annotations

from typing import Any

from django import template
from django.urls import reverse

from audit.selectors import audit_scope
from audit.tables import SUBJECT, table_for

register = template.Library()


def _user(context: template.Context) -> Any:
    request = context.get("request")
    return getattr(request, "user", None)


@register.simple_tag(takes_context=True)
def audit_record_history_url(context: template.Context, opts: Any, obj: Any) -> str:
    """The record's audit history page, or '' if the model is not tracked or the user may not read it."""
    if obj is None or getattr(obj, "pk", None) is None or opts is None:
        return ""
    table = table_for(opts.concrete_model._meta.label)
    user = _user(context)
    if table is None or user is None:
        return ""
    scope = audit_scope(user)
    if scope is None or not scope.reads(table.kind):
        return ""
    return reverse("admin:audit_record_history", args=[table.label, obj.pk])


@register.simple_tag(takes_context=True)
def audit_subject_history_url(context: template.Context, subject: Any) -> str:
    """The subject's whole history (every record placed under it), or '' if the user may not read it."""
    user = _user(context)
    scope = audit_scope(user) if user is not None else None
    if subject is None or getattr(subject, "pk", None) is None or scope is None or not scope.reads(SUBJECT):
        return ""
    return reverse("admin:audit_subject_history", args=[subject.pk])
