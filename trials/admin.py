"""Protocol design in the admin, edited by the trial's data managers."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db.models import Count, QuerySet
from django.http import HttpRequest

from config.admin_scoping import DesignAdmin, DesignInline
from trials.access import access_of
from trials.models import (
    Cohort,
    DoseLevel,
    EligibilityCriterion,
    LymphodepletionRegimen,
    Membership,
    Product,
    RegimenAgent,
    RegistryIdentifier,
    Site,
    Trial,
    TrialSite,
    Visit,
)


class RegistryIdentifierInline(DesignInline):
    model = RegistryIdentifier


class TrialSiteInline(DesignInline):
    model = TrialSite
    fields = ["site", "status", "activated_on", "last_subject_number"]
    readonly_fields = ["last_subject_number"]


class CohortInline(DesignInline):
    model = Cohort


class DoseLevelInline(DesignInline):
    model = DoseLevel


class CriterionInline(DesignInline):
    model = EligibilityCriterion
    fields = ["kind", "number", "text", "active"]


class VisitInline(DesignInline):
    model = Visit
    fields = ["code", "name", "target_day", "window_before_days", "window_after_days", "expected_assays"]


@admin.register(Trial)
class TrialAdmin(DesignAdmin):
    trial_lookup = "pk"
    list_display = ["code", "title", "phase", "status", "indication", "site_count"]
    list_filter = ["status", "phase"]
    search_fields = ["code", "title", "registry_identifiers__identifier"]
    inlines = [RegistryIdentifierInline, TrialSiteInline, CohortInline, DoseLevelInline, CriterionInline,
               VisitInline]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        access = access_of(request.user)
        qs = super(DesignAdmin, self).get_queryset(request).annotate(site_count=Count("trial_sites"))
        return qs if access.is_superuser else qs.filter(pk__in=sorted(access.trial_ids))

    def _trial_id(self, obj: Any) -> int:
        return obj.pk

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.is_superuser  # a data manager designs existing trials; creating one is sponsor work

    @admin.display(description="sites", ordering="site_count")
    def site_count(self, obj: Trial) -> int:
        return obj.site_count  # type: ignore[attr-defined]


@admin.register(Site)
class SiteAdmin(DesignAdmin):
    list_display = ["code", "name", "country", "time_zone"]
    search_fields = ["code", "name"]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        access = access_of(request.user)
        qs = super(DesignAdmin, self).get_queryset(request)
        if access.is_superuser:
            return qs
        return qs.filter(trial_sites__trial_id__in=sorted(access.trial_ids)).distinct()

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.is_superuser

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.is_superuser

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.is_superuser


@admin.register(Product)
class ProductAdmin(DesignAdmin):
    list_display = ["name", "trial", "targets", "scfv_origin", "costimulatory_domain", "vector"]
    list_filter = ["scfv_origin", "costimulatory_domain", "vector"]
    list_select_related = ["trial"]

    @admin.display(description="targets")
    def targets(self, obj: Product) -> str:
        return ", ".join(obj.target_antigens)


class RegimenAgentInline(DesignInline):
    model = RegimenAgent


@admin.register(LymphodepletionRegimen)
class RegimenAdmin(DesignAdmin):
    list_display = ["name", "trial", "dose_tolerance_pct"]
    list_select_related = ["trial"]
    inlines = [RegimenAgentInline]


@admin.register(Membership)
class MembershipAdmin(DesignAdmin):
    list_display = ["user", "role", "trial", "site", "active"]
    list_filter = ["role", "active"]
    list_select_related = ["user", "trial", "site"]
    search_fields = ["user__username", "user__last_name"]

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        access = access_of(request.user)
        if db_field.name == "site" and not access.is_superuser:
            designed = [t for t in access.trial_ids if access.designs(t)]
            kwargs["queryset"] = Site.objects.filter(trial_sites__trial_id__in=designed).distinct()
        return super().formfield_for_foreignkey(db_field, request, **kwargs)
