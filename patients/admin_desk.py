"""The subject page as the coordinator's desk: its state at the top, the next actions as buttons, the visit
calendar; the per-site list of visits to chase; the subject's lab results (table and plots).

Adapters only: what is allowed comes from ``patients.desk.next_actions`` (the services' rules), the dates
and states of visits from ``patients.timeline`` through ``assays.calendar``, site scope from the admin's
``get_queryset`` (``trials.access``).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.http import Http404, HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse

from assays import lab_results
from assays.calendar import subject_calendar, visits_to_chase
from config.api import acting_user
from locking.services import blocking_lock, describe_lock
from patients import admin_rows
from patients.desk import NextAction, next_actions
from patients.models import Subject
from signatures.selectors import subject_signatures_of

UNRESOLVED_QUERIES = ("open", "answered")  # dataqueries.DataQuery.UNRESOLVED, by name (as SubjectAdmin counts)


def action_url(action: NextAction) -> str:
    """The admin page an action opens: the add form with its initial values, or the record's change page."""
    if action.object_id is not None:
        return reverse(f"admin:patients_{action.model}_change", args=[action.object_id])
    return f"{reverse(f'admin:patients_{action.model}_add')}?{urlencode(action.initial)}"


def lock_message(subject: Subject) -> tuple[str, str] | None:
    """(level, the lock's reason as services word it) when the subject is frozen or locked. Read once per
    subject as loaded for a page (the subject page asks for its fields, read-only fields and header)."""
    if "_lock_message" not in subject.__dict__:
        lock = blocking_lock(trial_id=subject.trial_id, site_id=subject.site_id, subject_id=subject.pk)
        subject.__dict__["_lock_message"] = None if lock is None else (lock.get_level_display(), describe_lock(lock))
    message: tuple[str, str] | None = subject.__dict__["_lock_message"]
    return message


def subject_state(subject: Subject) -> dict[str, Any]:
    """What the top of the subject page says: lock, open queries, signature validity."""
    # Counted in the subject's own read when it comes from SubjectAdmin's queryset (the same filter).
    queries = getattr(subject, "open_queries", None)
    if queries is None:
        queries = subject.data_queries.filter(status__in=UNRESOLVED_QUERIES).count()
    signed = subject_signatures_of(subject)  # the rows the page's list of signatures shows
    valid = sum(s.invalidated_at is None for s in signed)
    signatures = {"valid": valid, "invalidated": len(signed) - valid}
    query_link = (f"{reverse('admin:dataqueries_dataquery_changelist')}?"
                  f"{urlencode({'subject__id__exact': subject.pk, 'status__in': ','.join(UNRESOLVED_QUERIES)})}")
    signature_link = f"{reverse('admin:signatures_signature_changelist')}?{urlencode({'q': subject.code})}"
    return {"lock": lock_message(subject), "open_queries": queries, "queries_url": query_link,
            "signatures": signatures, "signatures_url": signature_link}


def desk_context(subject: Subject, *, can_enter: bool) -> dict[str, Any]:
    actions = next_actions(subject) if can_enter else []
    return {
        "next_actions": [(a.key, a.label, action_url(a)) for a in actions],
        "calendar": admin_rows.calendar_rows(subject_calendar(subject)),
        "desk_state": subject_state(subject),
        "labs_url": reverse("admin:patients_subject_labs", args=[subject.pk]),
    }


def visits_view(model_admin: Any, request: HttpRequest) -> HttpResponse:
    """Visits due this week and overdue at the user's sites (every site's own today)."""
    if not model_admin.has_view_permission(request):
        raise Http404("No such page.")
    context = {**model_admin.admin_site.each_context(request), "opts": Subject._meta,
               "rows": visits_to_chase(user=acting_user(request)), "title": "Visits due this week and overdue"}
    return TemplateResponse(request, "admin/patients/subject/visits_due.html", context)


def labs_view(model_admin: Any, request: HttpRequest, object_id: str) -> HttpResponse:
    subject = model_admin.get_object(request, object_id)  # 404 outside the user's sites
    columns, rows = lab_results.lab_table(subject)
    table = [(row, [row.cells.get(code) for code in columns]) for row in rows]
    context = {**model_admin.admin_site.each_context(request), "opts": Subject._meta, "original": subject,
               "subject": subject, "columns": columns, "table": table,
               "title": f"Lab results: {subject.code}", "site_zone": subject.site.zone_label()}
    return TemplateResponse(request, "admin/patients/subject/labs.html", context)


def lab_plot_view(model_admin: Any, request: HttpRequest, object_id: str, fmt: str) -> HttpResponse:
    if fmt not in lab_results.FORMATS:
        raise Http404("No such format.")
    subject = model_admin.get_object(request, object_id)  # 404 outside the user's sites
    data = lab_results.render(lab_results.lab_figure(subject), fmt)
    response = HttpResponse(data, content_type=lab_results.FORMATS[fmt])
    response["Content-Disposition"] = f'inline; filename="{subject.code}-labs.{fmt}"'
    return response
