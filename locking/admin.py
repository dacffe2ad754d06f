"""Data locks in the admin: data managers freeze, lock and release; every member reads the locks in scope.

Taking a lock goes through ``locking.services.lock_scope`` and releasing through ``release_lock``; their
refusals appear on the form field they concern. Locks are never edited or deleted.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import BooleanField, Case, Q, QuerySet, Value, When
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from config.api import acting_user
from config.errors import DomainError
from locking.models import Lock
from locking.selectors import visible_locks
from locking.services import check_lock, check_release, lock_scope, release_lock
from patients.models import Subject
from trials.access import access_of
from trials.admin_scoping import NotFoundForHiddenMixin, SiteTimeChangeMixin, add_domain_error, site_time_column
from trials.models import Site, Trial

SCOPE_FIELDS = ["trial", "site", "subject", "level", "reason"]
RECORD_FIELDS = ["locked_by", "locked_at", "released_at", "released_by", "release_reason"]


class LockForm(forms.ModelForm):
    """The add form: the scope (trial; a site of it; or a subject), the level and the reason."""

    user: Any = None  # the requesting user, set by LockAdmin.get_form

    class Meta:
        model = Lock
        fields = SCOPE_FIELDS
        widgets = {"reason": forms.Textarea(attrs={"rows": 3})}

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        if data.get("subject") is not None and data.get("site") is None:
            data["site"] = data["subject"].site  # a subject lock records the subject's site
        if not self.errors:  # the rule needs every value
            try:
                check_lock(trial=data["trial"], site=data.get("site"), subject=data.get("subject"),
                           level=data["level"], reason=data.get("reason", ""), by=self.user)
            except DomainError as err:
                add_domain_error(self, err)
        return data

    def validate_unique(self) -> None:
        """check_lock reports an active lock with its description (and allows tightening a freeze)."""


class ReleaseForm(forms.Form):
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3}), required=False,
                             help_text="Why the data are opened again; recorded in the audit trail.")

    def __init__(self, *args: Any, lock: Lock, user: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lock, self.user = lock, user

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        try:
            check_release(lock=self.lock, reason=data.get("reason", ""), by=self.user)
        except DomainError as err:
            add_domain_error(self, err)
        return data


class ActiveFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "active"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "Active"), ("no", "Released")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() in ("yes", "no"):
            return queryset.filter(released_at__isnull=self.value() == "yes")
        return queryset


@admin.register(Lock)
class LockAdmin(SiteTimeChangeMixin, NotFoundForHiddenMixin, admin.ModelAdmin):
    form = LockForm
    list_display = ["scope", "level", "reason", "locked_by", "locked_at_site_time", "active", "released_by",
                    "released_at_site_time", "release_reason", "release_link"]
    list_filter = [ActiveFilter, "level", ("trial", admin.RelatedOnlyFieldListFilter)]
    list_select_related = ["trial", "site", "subject__site", "locked_by", "released_by"]
    locked_at_site_time = site_time_column("locked_at", "locked at")
    released_at_site_time = site_time_column("released_at", "released at")
    search_fields = ["reason", "trial__code", "site__code", "subject__code"]
    ordering = ["-locked_at", "-pk"]
    autocomplete_fields = ["subject"]
    list_per_page = 50

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        # "releasable": active and of a trial the user manages (the release link), computed in the same query.
        access = access_of(request.user)
        managed = Q() if access.is_superuser else Q(trial_id__in=sorted(t for t in access.trial_ids
                                                                        if access.designs(t)))
        releasable = Case(When(Q(released_at__isnull=True) & managed, then=Value(True)), default=Value(False),
                          output_field=BooleanField())
        return super().get_queryset(request).filter(visible_locks(request.user)).annotate(releasable=releasable)

    # --- permissions: data managers lock and release; every member reads; nobody edits or deletes ---

    def has_module_permission(self, request: HttpRequest) -> bool:
        return access_of(request.user).reads_any

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return access_of(request.user).reads_any

    def has_add_permission(self, request: HttpRequest) -> bool:
        return access_of(request.user).designs()

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # released through the release view, never edited

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    # Django takes a list of names; django-stubs' result type is an invariant list of unions.
    def get_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:  # type: ignore[override]
        return SCOPE_FIELDS if obj is None else ["scope", "level", "reason", *RECORD_FIELDS, "release_link"]

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [] if obj is None else self.get_fields(request, obj)

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        form = super().get_form(request, obj, change=change, **kwargs)
        # A new class per call (modelform_factory), so per request; typed as a plain ModelForm class.
        form.user = request.user  # type: ignore[attr-defined]
        return form

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        # Offer only the trials the user manages, their sites, and the subjects of those trials in scope.
        access = access_of(request.user)
        designed = sorted(t for t in access.trial_ids if access.designs(t))
        if db_field.name == "trial" and not access.is_superuser:
            kwargs["queryset"] = Trial.objects.filter(pk__in=designed)
        elif db_field.name == "site" and not access.is_superuser:
            kwargs["queryset"] = Site.objects.filter(trial_sites__trial_id__in=designed).distinct()
        elif db_field.name == "subject" and not access.is_superuser:
            kwargs["queryset"] = Subject.objects.filter(access.site_q(), trial_id__in=designed)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def save_model(self, request: HttpRequest, obj: Lock, form: forms.Form, change: bool) -> None:
        data = form.cleaned_data
        lock = lock_scope(trial=data["trial"], site=data.get("site"), subject=data.get("subject"),
                          level=data["level"], reason=data["reason"], by=acting_user(request))
        obj.pk = lock.pk
        obj.__dict__.update({k: v for k, v in lock.__dict__.items() if not k.startswith("_")})

    # --- columns ------------------------------------------------------------------------------

    @admin.display(description="scope")
    def scope(self, obj: Lock) -> str:
        return obj.scope_label

    @admin.display(description="active", boolean=True)
    def active(self, obj: Lock) -> bool:
        return obj.active

    @admin.display(description="release")
    def release_link(self, obj: Lock) -> str:
        if not getattr(obj, "releasable", False):
            return ""
        return format_html('<a href="{}">Release…</a>', reverse("admin:locking_lock_release", args=[obj.pk]))

    # --- release ------------------------------------------------------------------------------

    def get_urls(self) -> list[Any]:
        view = self.admin_site.admin_view
        return [path("<path:object_id>/release/", view(self.release_view), name="locking_lock_release"),
                *super().get_urls()]

    def release_view(self, request: HttpRequest, object_id: str) -> HttpResponse:
        lock = self.get_object(request, object_id)  # 404 outside the user's scope
        if not access_of(request.user).designs(lock.trial_id):
            raise PermissionDenied
        form = ReleaseForm(request.POST or None, lock=lock, user=request.user)
        if request.method == "POST" and form.is_valid():
            try:
                release_lock(lock=lock, reason=form.cleaned_data["reason"], by=acting_user(request))
            except DomainError as err:  # a race lost after clean(): show it, nothing was saved
                add_domain_error(form, err)
            else:
                messages.success(request, f"Released: {lock.scope_label}. Data may be changed again.")
                return HttpResponseRedirect(reverse("admin:locking_lock_changelist"))
        context = {**self.admin_site.each_context(request), "opts": self.model._meta, "lock": lock, "form": form,
                   "title": f"Release the {lock.get_level_display().split(' (')[0].lower()} of {lock.scope_label}",
                   "original": lock}
        return TemplateResponse(request, "admin/locking/lock/release.html", context)
