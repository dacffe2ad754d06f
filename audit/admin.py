"""The audit trail in the admin: the filterable trail with its CSV export, a record's history and a
subject's whole history. Read by data managers, monitors (their sites) and superusers only; see
``audit.selectors`` for the scoping. Nothing here writes clinical data."""

from __future__ import annotations

from typing import Any

from django.apps import apps
from django.contrib import admin
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.paginator import Page, Paginator
from django.db.models import Model
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, path, reverse
from django.utils import timezone
from django.utils.text import capfirst

from audit.export import csv_lines
from audit.forms import AuditFilterForm
from audit.models import AuditEvent, AuditExport
from audit.selectors import (
    AuditEntry,
    AuditEntryList,
    AuditFilters,
    AuditScope,
    audit_scope,
    get_audit_subject,
    iter_audit_entries,
    list_audit_entries,
    name_entries,
)
from audit.services import record_export
from audit.tables import table_for
from config.api import acting_user

TRAIL_PAGE_SIZE = 50
HISTORY_PAGE_SIZE = 100


@admin.register(AuditEvent)
class AuditTrailAdmin(admin.ModelAdmin):
    """No change list of its own: its URLs are the audit pages below."""

    def has_module_permission(self, request: HttpRequest) -> bool:
        return audit_scope(request.user) is not None

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return audit_scope(request.user) is not None

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def get_urls(self) -> list[Any]:
        view = self.admin_site.admin_view
        return [
            path("", view(self.trail_view), name="audit_auditevent_changelist"),
            path("export.csv", view(self.export_view), name="audit_export"),
            path("record/<str:label>/<str:pk>/", view(self.record_view), name="audit_record_history"),
            path("subject/<int:pk>/", view(self.subject_view), name="audit_subject_history"),
        ]

    # --- pages ---------------------------------------------------------------------------------------

    def _scope(self, request: HttpRequest) -> AuditScope:
        scope = audit_scope(request.user)
        if scope is None:
            raise PermissionDenied  # coordinators, investigators and service accounts: 403
        return scope

    def _render(self, request: HttpRequest, template: str, context: dict[str, Any], status: int = 200) -> Any:
        context = {**self.admin_site.each_context(request), "opts": self.model._meta, **context}
        return TemplateResponse(request, template, context, status=status)

    def trail_view(self, request: HttpRequest) -> HttpResponse:
        scope = self._scope(request)
        form = AuditFilterForm(request.GET or None, scope=scope)
        page = None
        if not form.is_bound or form.is_valid():
            filters = form.audit_filters() if form.is_bound else AuditFilters()
            entries = list_audit_entries(scope=scope, filters=filters, newest_first=True)
            page = _named(_paginate(entries, TRAIL_PAGE_SIZE).get_page(request.GET.get("page")))
        return self._render(request, "audit/trail.html", {"title": "Audit trail", "form": form, "page": page},
                            status=200 if page is not None else 400)

    def export_view(self, request: HttpRequest) -> HttpResponse | StreamingHttpResponse:
        scope = self._scope(request)
        form = AuditFilterForm(request.GET, scope=scope)
        if not form.is_valid():
            return self._render(request, "audit/trail.html", {"title": "Audit trail", "form": form, "page": None},
                                status=400)
        record_export(by=acting_user(request), filters=form.described())
        lines = csv_lines(iter_audit_entries(scope=scope, filters=form.audit_filters()))
        response = StreamingHttpResponse(lines, content_type="text/csv; charset=utf-8")
        stamp = timezone.now().strftime("%Y%m%dT%H%M%SZ")
        response["Content-Disposition"] = f'attachment; filename="audit-trail-{stamp}.csv"'
        return response

    def record_view(self, request: HttpRequest, label: str, pk: str) -> HttpResponse:
        scope = self._scope(request)
        table = table_for(label)
        if table is None or not scope.reads_table(table):
            raise Http404("No such record in your scope.")
        model = apps.get_model(table.label)
        try:
            record_id = model._meta.pk.to_python(pk)
        except ValidationError as err:
            raise Http404("No such record in your scope.") from err
        entries = list_audit_entries(scope=scope, filters=AuditFilters(table=table.label, record_id=record_id))
        paginator = _paginate(entries, HISTORY_PAGE_SIZE)
        if paginator.count == 0:  # never confirm that a record outside the scope exists
            raise Http404("No such record in your scope.")
        page = _named(paginator.get_page(request.GET.get("page")))
        named = next((e.record_name for e in page.object_list if e.record_name), None)
        context = {
            "title": f"Record history: {named or f'{capfirst(table.name)} {record_id}'}", "table": table,
            "record_id": record_id, "page": page, "record_url": _change_url(model, record_id), "show_record": False,
        }
        if table.label == "patients.Subject":
            context["subject_history_url"] = reverse("admin:audit_subject_history", args=[record_id])
        return self._render(request, "audit/history.html", context)

    def subject_view(self, request: HttpRequest, pk: int) -> HttpResponse:
        scope = self._scope(request)
        subject = get_audit_subject(scope=scope, pk=pk)
        if subject is None:
            raise Http404("No such subject in your scope.")
        entries = list_audit_entries(scope=scope, filters=AuditFilters(subject_id=subject.pk))
        context = {
            "title": f"Subject history: {subject.code} ({subject.trial.code}, site {subject.site.code})",
            "subject": subject,
            "page": _named(_paginate(entries, HISTORY_PAGE_SIZE).get_page(request.GET.get("page"))),
            "record_url": _change_url(type(subject), subject.pk), "show_record": True,
        }
        return self._render(request, "audit/history.html", context)


def _paginate(entries: AuditEntryList, per_page: int) -> Paginator[AuditEntry]:
    # Django's Paginator counts and slices the entries, which is all AuditEntryList offers; django-stubs ask
    # for an iterable too.
    return Paginator(entries, per_page)  # type: ignore[arg-type]


def _named(page: Page[AuditEntry]) -> Page[AuditEntry]:
    """The page's entries with names instead of ids (one query for the page)."""
    page.object_list = name_entries(list(page.object_list))
    return page


def _change_url(model: type[Model], pk: Any) -> str | None:
    try:
        return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_change", args=[pk])
    except NoReverseMatch:
        return None


@admin.register(AuditExport)
class AuditExportAdmin(admin.ModelAdmin):
    """The log of audit-trail exports, for superusers. Rows are written only by ``record_export``."""

    list_display = ["exported_at", "exported_by", "format", "filters"]
    list_select_related = ["exported_by"]
    readonly_fields = ["exported_at", "exported_by", "format", "filters"]

    def has_module_permission(self, request: HttpRequest) -> bool:
        return request.user.is_active and request.user.is_superuser

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.is_active and request.user.is_superuser

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
