"""Admin base classes that scope every page to the user's memberships.

Clinical records are narrowed to the user's sites (lists, change pages, search, filters, counts,
foreign-key choices and autocomplete all go through ``get_queryset``); a record outside them
is a 404. Protocol-design records are narrowed to the user's trials and edited by data managers.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from types import MethodType
from typing import Any

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.db import models
from django.http import Http404, HttpRequest, HttpResponseRedirect
from django.utils import timezone

from config import display
from config.errors import DomainError
from trials.access import ENTRY_ROLES, access_of


def add_domain_error(form: forms.BaseForm, err: DomainError) -> None:
    """Show a service's refusal on the field it names, or above the form."""
    field = err.field if err.field in form.fields else None
    form.add_error(field, err.message)


# --- site time: wall-clock times are entered and shown in the time zone of the record's site ----------


def site_of(obj: Any) -> Any:
    """The site whose clock a record's times follow (a subject's site; a site itself), or None."""
    for path in (("site",), ("subject", "site"), ("event", "subject", "site")):
        value = obj
        for part in path:
            value = getattr(value, part, None)
        if value is not None:
            return value
    return None


def site_time(moment: dt.datetime | None, site: Any) -> str:
    """A time as the admin shows it: on the site's clock, with the zone's offset (UTC without a site)."""
    return display.date_time(moment, None if site is None else site.tzinfo)


def site_time_column(name: str, description: str) -> Callable[[Any, Any], str]:
    """A list column showing ``name`` on each record's own site clock (users may span several zones)."""

    @admin.display(description=f"{description} (site time)", ordering=name)
    def column(model_admin: Any, obj: Any) -> str:
        return site_time(getattr(obj, name), site_of(obj))

    column.__name__ = f"{name}_site_time"
    return column


def read_in_site_time(form: forms.BaseForm, site: Any) -> None:
    """Re-read the form's date-times as wall-clock times at ``site``.

    Django parsed them in the current zone (the user's zone, or UTC for users across zones); what the
    coordinator typed is the time on the subject's site clock.
    """
    current = timezone.get_current_timezone()
    for name, field in form.fields.items():
        value = form.cleaned_data.get(name)
        if isinstance(field, forms.DateTimeField | forms.SplitDateTimeField) and isinstance(value, dt.datetime):
            form.cleaned_data[name] = timezone.make_aware(timezone.make_naive(value, current), site.tzinfo)


def site_time_help(request: HttpRequest) -> str:
    """The help text of a date-time field: which clock to read it on."""
    label = getattr(request, "site_time_label", None)
    if label:
        return f"Site time: {label}."
    zone = getattr(request, "site_time_zone", None)
    suffix = f" ({zone})" if zone else ""
    return f"Time on the subject's site clock, in the site's time zone{suffix}."


class SiteTimeFieldsMixin:
    """Date-time form fields say which clock they are read on."""

    def formfield_for_dbfield(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        field = super().formfield_for_dbfield(db_field, request, **kwargs)  # type: ignore[misc]
        if isinstance(db_field, models.DateTimeField) and field is not None:
            field.help_text = " ".join(filter(None, [str(db_field.help_text or ""), site_time_help(request)]))
        return field


class SiteTimeChangeMixin:
    """A saved record's page reads and shows its times on its site's clock, whoever looks at it."""

    def changeform_view(self, request: HttpRequest, object_id: str | None = None, form_url: str = "",
                        extra_context: dict[str, Any] | None = None) -> Any:
        site = site_of(self.get_object(request, unquote(object_id))) if object_id else None  # type: ignore[attr-defined]
        if site is None:
            return super().changeform_view(request, object_id, form_url, extra_context)  # type: ignore[misc]
        label = site.zone_label()
        request.site_time_label = label  # type: ignore[attr-defined]
        extra_context = {**(extra_context or {}), "site_time_zone": label}
        with timezone.override(site.tzinfo):  # rendered here: the response is lazy
            response = super().changeform_view(request, object_id, form_url, extra_context)  # type: ignore[misc]
            return response.render() if hasattr(response, "render") else response


# --- cell doses and counts: shown by config.display wherever the admin shows them read-only -------------

SHOWN: dict[str, Callable[[Any], str]] = {
    "cells_per_kg": display.cells_per_kg,
    "total_cells": display.cells,
    "total_viable_car_cells": display.cells,
    "cd3_cells_1e9": display.cells_1e9,
}


def current_zone_time(moment: dt.datetime | None) -> str:
    """A date-time on the page's clock: the record's site on its change page (SiteTimeChangeMixin), else UTC."""
    return display.date_time(moment, timezone.get_current_timezone())


def shown_column(name: str, description: str, show: Callable[[Any], str]) -> Callable[[Any], str]:
    """A list column or read-only field showing the model field ``name`` through ``show``."""

    @admin.display(description=description, ordering=name)
    def column(obj: Any) -> str:
        return show(getattr(obj, name))

    column.__name__ = f"{name}_shown"
    return column


class ReadableFieldsMixin:
    """List columns and read-only fields of cell doses and counts read ``1.0 × 10⁶ cells/kg``, not 1000000,
    and those of date-times ``2026-03-14 09:30 (UTC+01:00)`` (config.display), not Django's format.

    Each such field ``x`` of the model gets a column ``x_shown``; the admin's lists of columns, fields and
    read-only fields are read through ``_readable`` whatever subclass computed them, so an admin added
    later shows its doses the same way without naming the columns itself. Input fields stay numbers.
    Inlines take it too (an inline has no list columns; its model is ``self.model``, not its parent's).
    """

    def __init__(self, model: type[models.Model], admin_site: Any) -> None:
        super().__init__(model, admin_site)  # type: ignore[call-arg]
        names = {f.name: f for f in self.model._meta.concrete_fields}  # type: ignore[attr-defined]
        shows = {**{name: current_zone_time for name, f in names.items() if isinstance(f, models.DateTimeField)},
                 **{name: show for name, show in SHOWN.items() if name in names}}
        self.shown = {name: f"{name}_shown" for name in shows}
        for name, column in self.shown.items():
            setattr(self, column, shown_column(name, str(names[name].verbose_name), shows[name]))
        if self.shown:  # instance attributes: they wrap the methods of every subclass
            for name, wrap in (("get_list_display", self._readable_columns),
                               ("get_readonly_fields", self._readable_readonly), ("get_fields", self._readable_fields)):
                if hasattr(self, name):
                    setattr(self, name, wrap(getattr(self, name)))

    # Bound methods (the admin's checks read ``get_list_display.__func__``).
    def _readable_columns(self, method: Callable[..., Any]) -> Callable[..., list[Any]]:
        def readable(admin_: Any, request: HttpRequest) -> list[Any]:
            return [self.shown.get(name, name) if isinstance(name, str) else name for name in method(request)]
        return MethodType(readable, self)

    def _readable_readonly(self, method: Callable[..., Any]) -> Callable[..., list[Any]]:
        # The raw name stays read-only too, so that no form ever offers it as an input.
        def readable(admin_: Any, request: HttpRequest, obj: Any = None) -> list[Any]:
            names = list(method(request, obj))
            return [*names, *[self.shown[name] for name in names if name in self.shown]]
        return MethodType(readable, self)

    def _readable_fields(self, method: Callable[..., Any]) -> Callable[..., list[Any]]:
        def readable(admin_: Any, request: HttpRequest, obj: Any = None) -> list[Any]:
            fields = list(method(request, obj))
            if obj is None:
                return fields
            readonly = set(getattr(self, "get_readonly_fields")(request, obj))  # noqa: B009 - the wrapped one
            editable = getattr(self, "has_change_permission")(request, obj)  # noqa: B009
            shown = [self.shown[name] if name in self.shown and (not editable or name in readonly) else name
                     for name in fields]
            return list(dict.fromkeys(shown))  # a raw name and its column may both have been listed
        return MethodType(readable, self)


class NotFoundForHiddenMixin:
    """An object outside the user's scope does not exist for them: 404, never a redirect or 403."""

    def get_object(self, request: HttpRequest, object_id: str, from_field: str | None = None) -> Any:
        obj = super().get_object(request, object_id, from_field)  # type: ignore[misc]
        if obj is None:
            raise Http404("No such record.")
        return obj


class ClinicalAdmin(ReadableFieldsMixin, SiteTimeFieldsMixin, SiteTimeChangeMixin, NotFoundForHiddenMixin,
                    admin.ModelAdmin):
    """Subject-level records: visible at the user's sites, entered by coordinators and investigators."""

    trial_lookup = "subject__trial"
    site_lookup = "subject__site"
    list_per_page = 50

    def get_queryset(self, request: HttpRequest) -> models.QuerySet:
        qs = super().get_queryset(request)
        return qs.filter(access_of(request.user).site_q(trial=self.trial_lookup, site=self.site_lookup))

    def _obj_scope(self, obj: Any) -> tuple[int, int]:
        subject = obj if self.site_lookup == "site" else obj.subject
        return subject.trial_id, subject.site_id

    def has_module_permission(self, request: HttpRequest) -> bool:
        return access_of(request.user).reads_any

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        access = access_of(request.user)
        if obj is None:
            return access.reads_any
        trial_id, site_id = self._obj_scope(obj)
        return access.can_read(trial_id=trial_id, site_id=site_id)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return access_of(request.user).enters_any

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        access = access_of(request.user)
        if obj is None:
            return access.enters_any
        trial_id, site_id = self._obj_scope(obj)
        return access.can_enter(trial_id=trial_id, site_id=site_id)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # clinical records are never deleted; they are corrected with a reason

    def changeform_view(self, request: HttpRequest, object_id: str | None = None, form_url: str = "",
                        extra_context: dict[str, Any] | None = None) -> Any:
        # A refusal raised while saving (e.g. a lock taken after the form was checked, or a rule of an
        # inline row) rolls the whole save back and is shown as a message, never as an error page.
        try:
            return super().changeform_view(request, object_id, form_url, extra_context)
        except DomainError as err:
            self.message_user(request, f"Nothing was saved: {err.message}", level=messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        access = access_of(request.user)
        target = db_field.related_model
        if target._meta.label == "patients.Subject":
            kwargs["queryset"] = target.objects.filter(access.site_q(roles=ENTRY_ROLES)).select_related("trial")
        elif target._meta.label == "trials.Site" and not access.is_superuser:
            kwargs["queryset"] = target.objects.filter(pk__in=sorted(access.site_ids))
        elif target._meta.label == "trials.Trial" and not access.is_superuser:
            kwargs["queryset"] = target.objects.filter(pk__in=sorted(access.trial_ids))
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


class ReadOnlyClinicalAdmin(ClinicalAdmin):
    """Records written only through the subject's actions: listed and viewed here, never edited."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class DesignAdmin(ReadableFieldsMixin, NotFoundForHiddenMixin, admin.ModelAdmin):
    """Protocol design: every member of a trial reads it; its data managers edit it."""

    trial_lookup = "trial"

    def get_queryset(self, request: HttpRequest) -> models.QuerySet:
        return super().get_queryset(request).filter(access_of(request.user).trial_q(trial=self.trial_lookup))

    def _trial_id(self, obj: Any) -> int:
        for part in self.trial_lookup.split("__"):
            obj = getattr(obj, part)
        return obj.pk

    def has_module_permission(self, request: HttpRequest) -> bool:
        return access_of(request.user).reads_any

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return access_of(request.user).reads_any

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return access_of(request.user).designs()

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        access = access_of(request.user)
        return access.designs() if obj is None else access.designs(self._trial_id(obj))

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self.has_change_permission(request, obj)

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        access = access_of(request.user)
        if db_field.related_model._meta.label == "trials.Trial" and not access.is_superuser:
            designed = [t for t in access.trial_ids if access.designs(t)]
            kwargs["queryset"] = db_field.related_model.objects.filter(pk__in=designed)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)


class DesignInline(admin.TabularInline):
    """Inline rows of a trial-design record, editable by the trial's data managers."""

    extra = 0

    def _designs(self, request: HttpRequest, obj: Any) -> bool:
        access = access_of(request.user)
        if obj is None:
            return access.designs()
        trial_id = obj.pk if obj._meta.label == "trials.Trial" else obj.trial_id
        return access.designs(trial_id)

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return access_of(request.user).reads_any

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._designs(request, obj)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._designs(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._designs(request, obj)
