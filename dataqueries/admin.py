"""Data queries in the admin: the scoped list with its filters, each query's page with its thread and the
actions the user may take (answer, close, re-open), the raise form, and open counts per site.

Every write goes through ``dataqueries.services``; a refusal shows the service's message on the form.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import FieldDoesNotExist, PermissionDenied
from django.db.models import Count, Q, QuerySet
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import NoReverseMatch, path, reverse
from django.utils.html import format_html
from django.utils.text import capfirst

from config.api import acting_user
from config.errors import DomainError, PermissionRefused
from dataqueries import services
from dataqueries.models import DataQuery, QueryMessage
from trials.access import access_of
from trials.admin_scoping import ClinicalAdmin, ReadableFieldsMixin, add_domain_error, site_time_column
from trials.models import Membership

RAISE_ROLES = frozenset({Membership.Role.DATA_MANAGER, Membership.Role.MONITOR})


def queried_in_words(query: DataQuery) -> str:
    """The queried record and field as people say them: "Adverse event 3 of subject BJ01-0001 — Grade".

    Reads only the query's content type (Django's cache) and subject (joined by the list's query)."""
    model = query.content_type.model_class()
    if model is None:  # a record type no longer installed: say what was stored
        return f"{query.record_type} {query.object_id} of subject {query.subject.code} — {query.field_name}"
    try:
        field = str(getattr(model._meta.get_field(query.field_name), "verbose_name", query.field_name))
    except FieldDoesNotExist:  # a field renamed since the query was raised keeps its stored name
        field = query.field_name.replace("_", " ")
    record = capfirst(str(model._meta.verbose_name))
    if model._meta.label == "patients.Subject":
        return f"Subject {query.subject.code} — {capfirst(field)}"
    return f"{record} {query.object_id} of subject {query.subject.code} — {capfirst(field)}"


def queried_record_url(query: DataQuery) -> str | None:
    """The admin page of the queried record (None if the admin has no page for its kind)."""
    ct = query.content_type
    try:
        return reverse(f"admin:{ct.app_label}_{ct.model}_change", args=[query.object_id])
    except NoReverseMatch:
        return None


class RaiseQueryForm(forms.ModelForm):
    """The add form: a person's query on one field of one record of a subject."""

    user: Any = None  # the requesting user, set by DataQueryAdmin.get_form
    record_type = forms.ChoiceField(choices=[(t, t) for t in sorted(services.SUBJECT_PATHS)],
                                    help_text="The kind of record, e.g. patients.adverseevent.")
    record_id = forms.IntegerField(min_value=1, help_text="The record's id.")

    class Meta:
        model = DataQuery
        fields = ["subject", "record_type", "record_id", "field_name", "text"]

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        if not self.errors:
            subject = data["subject"]
            try:
                services.check_can_raise(user=self.user, trial_id=subject.trial_id, site_id=subject.site_id)
                data["record"] = services.find_record(record_type=data["record_type"], record_id=data["record_id"],
                                                      subject=subject)
                services.check_target(subject=subject, record=data["record"], field=data["field_name"])
                services.check_text(data["text"])
            except DomainError as err:
                add_domain_error(self, err)
        return data


class QueryActionForm(forms.Form):
    text = forms.CharField(widget=forms.Textarea(attrs={"rows": 4}), required=False)

    def __init__(self, *args: Any, query: DataQuery, action: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.query, self.action = query, action
        self.title, self.submit_label = ACTIONS[action][0], ACTIONS[action][0]

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        text = data.get("text", "")
        try:
            if self.action == "answer":
                services.check_answer(query=self.query, text=text)
            elif self.action == "close":
                services.check_close(query=self.query)
            else:
                services.check_reopen(query=self.query, text=text)
        except DomainError as err:
            add_domain_error(self, err)
        return data


# action -> (title, permission check, service)
ACTIONS: dict[str, tuple[str, Any, Any]] = {
    "answer": ("Answer", services.check_can_answer, services.answer_query),
    "close": ("Close", services.check_can_manage, services.close_query),
    "reopen": ("Re-open", services.check_can_manage, services.reopen_query),
}


def offered_actions(*, user: Any, query: DataQuery) -> list[tuple[str, str]]:
    """The actions this user may take on the query in its current state."""
    states = {"answer": query.status == DataQuery.Status.OPEN, "close": query.status != DataQuery.Status.CLOSED,
              "reopen": query.status != DataQuery.Status.OPEN}
    offered = []
    for name, (title, permitted, _run) in ACTIONS.items():
        try:
            permitted(user=user, query=query)
        except PermissionRefused:
            continue
        if states[name]:
            offered.append((name, title))
    return offered


class MessageInline(ReadableFieldsMixin, admin.TabularInline):
    """The thread, oldest first; read-only (messages are never changed)."""

    model = QueryMessage
    fields = ("at", "kind", "text", "by")
    readonly_fields = fields
    extra = 0
    can_delete = False
    ordering = ["at", "pk"]
    verbose_name_plural = "thread"

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return True  # the parent query's page already checked the user's scope

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).select_related("by")


@admin.register(DataQuery)
class DataQueryAdmin(ClinicalAdmin):
    trial_lookup, site_lookup = "trial", "site"
    list_display = ["id", "queried", "site", "origin", "check_code", "status", "raised_at_site_time", "raised_by"]
    list_display_links = ["id"]
    raised_at_site_time = site_time_column("raised_at", "raised at")
    list_filter = ["status", ("site", admin.RelatedOnlyFieldListFilter), "origin", "check_code"]
    list_select_related = ["subject", "site", "content_type", "raised_by"]
    search_fields = ["subject__code", "field_name", "text"]
    ordering = ["-raised_at", "-pk"]
    show_facets = admin.ShowFacets.ALWAYS  # each filter choice shows its count (e.g. open queries per site)
    inlines = [MessageInline]
    view_fields = ["trial", "site", "subject", "queried", "origin", "check_code", "status", "auto_resolved",
                   "raised_by", "raised_at", "text"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        access = access_of(request.user)
        return access.designs() or any(roles & RAISE_ROLES for roles in access.site_roles.values())

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # a query changes only through its actions (answer, close, re-open)

    @admin.display(description="queried record and field", ordering="subject__code")
    def queried(self, obj: DataQuery) -> str:
        words, url = queried_in_words(obj), queried_record_url(obj)
        return format_html('<a href="{}" class="queried-record">{}</a>', url, words) if url else words

    # Django takes a list of names; django-stubs' result type is an invariant list of unions.
    def get_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:  # type: ignore[override]
        return list(RaiseQueryForm.Meta.fields) if obj is None else self.view_fields

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [] if obj is None else self.view_fields

    def get_inlines(self, request: HttpRequest, obj: Any) -> list[Any]:
        return [] if obj is None else self.inlines

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        if obj is None:
            kwargs["form"] = RaiseQueryForm
        form = super().get_form(request, obj, change=change, **kwargs)
        form.user = request.user  # type: ignore[attr-defined]  # a class made for this request by get_form
        return form

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "subject":  # subjects where the user may raise queries
            model = db_field.related_model
            kwargs["queryset"] = (model.objects.filter(access_of(request.user).site_q(roles=RAISE_ROLES))
                                  .select_related("trial").order_by("trial__code", "code"))
            return admin.ModelAdmin.formfield_for_foreignkey(self, db_field, request, **kwargs)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def save_model(self, request: HttpRequest, obj: DataQuery, form: forms.Form, change: bool) -> None:
        data = form.cleaned_data
        created = services.raise_query(subject=data["subject"], record=data["record"], field=data["field_name"],
                                       text=data["text"], by=acting_user(request))
        obj.pk, obj.status = created.pk, created.status

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        pass  # the thread's first message was written by raise_query

    def change_view(self, request: HttpRequest, object_id: str, form_url: str = "",
                    extra_context: dict[str, Any] | None = None) -> HttpResponse:
        query = self.get_object(request, object_id)  # 404 outside the user's sites
        extra = {"query_actions": offered_actions(user=request.user, query=query), **(extra_context or {})}
        return super().change_view(request, object_id, form_url, extra)

    # --- actions and the per-site summary ----------------------------------------------------------

    def get_urls(self) -> list[Any]:
        view = self.admin_site.admin_view
        return [
            path("open-by-site/", view(self.open_by_site_view), name="dataqueries_dataquery_open_by_site"),
            path("<path:object_id>/action/<slug:action>/", view(self.action_view),
                 name="dataqueries_dataquery_action"),
            *super().get_urls(),
        ]

    def action_view(self, request: HttpRequest, object_id: str, action: str) -> HttpResponse:
        if action not in ACTIONS:
            raise Http404("No such action.")
        title, permitted, run = ACTIONS[action]
        query = self.get_object(request, object_id)  # 404 outside the user's sites
        try:
            permitted(user=request.user, query=query)
        except PermissionRefused as err:
            raise PermissionDenied(err.message) from err
        form = QueryActionForm(request.POST or None, query=query, action=action)
        if request.method == "POST" and form.is_valid():
            try:
                run(query=query, text=form.cleaned_data["text"], by=acting_user(request))
            except DomainError as err:  # a race lost after clean(): show it, nothing was saved
                add_domain_error(form, err)
            else:
                messages.success(request, f"Query {query.pk}: {title.lower()} saved.")
                return HttpResponseRedirect(reverse("admin:dataqueries_dataquery_change", args=[query.pk]))
        context = {**self.admin_site.each_context(request), "opts": self.model._meta, "query": query,
                   "queried": queried_in_words(query), "queried_url": queried_record_url(query), "form": form,
                   "title": f"{title}: query {query.pk} ({query.subject.code})", "original": query,
                   "media": self.media + form.media}
        return TemplateResponse(request, "admin/dataqueries/dataquery/action.html", context)

    def open_by_site_view(self, request: HttpRequest) -> HttpResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        rows = (self.get_queryset(request).filter(status__in=DataQuery.UNRESOLVED).order_by()
                .values("site_id", "site__code", "site__name")
                .annotate(open=Count("pk", filter=Q(status=DataQuery.Status.OPEN)),
                          answered=Count("pk", filter=Q(status=DataQuery.Status.ANSWERED)),
                          subjects=Count("subject_id", distinct=True))
                .order_by("site__code"))
        context = {**self.admin_site.each_context(request), "opts": self.model._meta, "rows": list(rows),
                   "title": "Open queries by site"}
        return TemplateResponse(request, "admin/dataqueries/dataquery/open_by_site.html", context)
