"""Protocol design in the admin, edited by the trial's data managers."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest

from config.api import acting_user
from config.errors import DomainError
from trials.access import access_of
from trials.admin_scoping import DesignAdmin, DesignInline, NotFoundForHiddenMixin, add_domain_error
from trials.models import (
    Cohort,
    DoseLevel,
    EligibilityCriterion,
    LymphodepletionRegimen,
    Membership,
    PersonalToken,
    Product,
    RegimenAgent,
    RegistryIdentifier,
    ServiceAccount,
    Site,
    Trial,
    TrialSite,
    Visit,
)
from trials.services import (
    check_personal_token,
    check_service_account,
    issue_personal_token,
    issue_service_account,
    revoke_personal_token,
    revoke_service_account,
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
    fields = ["code", "name", "target_day", "window_before_days", "window_after_days", "expected_assays",
              "primary_response"]


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
    list_display = ["code", "name", "trial", "targets", "scfv_origin", "costimulatory_domain", "vector"]
    list_filter = ["scfv_origin", "costimulatory_domain", "vector"]
    list_select_related = ["trial"]

    @admin.display(description="targets")
    def targets(self, obj: Product) -> str:
        return ", ".join(obj.target_antigens)


class RegimenAgentInline(DesignInline):
    model = RegimenAgent


@admin.register(LymphodepletionRegimen)
class RegimenAdmin(DesignAdmin):
    list_display = ["code", "name", "trial", "dose_tolerance_pct"]
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


@admin.register(ServiceAccount)
class ServiceAccountAdmin(DesignAdmin):
    """Data managers issue and revoke API tokens; a token is shown once, when issued."""

    list_display = ["name", "trial", "site_codes", "token_prefix", "last_used_at", "revoked_at"]
    list_select_related = ["trial"]
    add_fields = ("name", "trial", "sites")
    fields = add_fields
    readonly_fields = []
    actions = ["revoke"]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return super().get_queryset(request).prefetch_related("sites")

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [] if obj is None else ["name", "trial", "sites", "token_prefix", "last_used_at", "revoked_at"]

    # Django takes a list of names; django-stubs' result type is an invariant list of unions.
    def get_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:  # type: ignore[override]
        return list(self.add_fields) if obj is None else self.get_readonly_fields(request, obj)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return obj is None and super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # revoke instead: the audit trail keeps who the account was

    @admin.display(description="sites")
    def site_codes(self, obj: ServiceAccount) -> str:
        return ", ".join(s.code for s in obj.sites.all())

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        base = super().get_form(request, obj, change=change, **kwargs)

        class IssueForm(base):  # type: ignore[misc, valid-type]
            def clean(self) -> dict[str, Any]:
                data = super().clean()
                if not self.errors:
                    try:
                        check_service_account(trial=data["trial"], sites=data["sites"], by=acting_user(request))
                    except DomainError as err:
                        add_domain_error(self, err)
                return data

        return IssueForm

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        data = form.cleaned_data
        account, token = issue_service_account(trial=data["trial"], sites=data["sites"], name=data["name"],
                                               by=acting_user(request))
        obj.pk, obj.name = account.pk, account.name
        messages.warning(request, f"Token for {account.name}: {token} — copy it now; it will not be shown again.")

    def save_related(self, request: HttpRequest, form: Any, formsets: Any, change: bool) -> None:
        pass  # the service set the sites

    @admin.action(description="Revoke the selected service accounts")
    def revoke(self, request: HttpRequest, queryset: QuerySet) -> None:
        for account in queryset.filter(revoked_at__isnull=True):
            try:
                revoke_service_account(account=account, by=acting_user(request))
            except DomainError as err:
                messages.error(request, f"{account.name}: {err.message}")
            else:
                messages.success(request, f"{account.name} revoked.")


@admin.register(PersonalToken)
class PersonalTokenAdmin(NotFoundForHiddenMixin, admin.ModelAdmin):
    """My API tokens: every member issues their own for one of their trials (the secret is shown once) and
    revokes them; a data manager also sees and revokes the tokens of the trials they manage."""

    list_display = ["name", "trial", "user", "token_prefix", "expires_on", "last_used_at", "revoked_at"]
    list_select_related = ["trial", "user"]
    add_fields = ("trial", "name", "expires_on")
    fields = add_fields
    actions = ["revoke"]

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        access = access_of(request.user)
        qs = super().get_queryset(request)
        if access.is_superuser:
            return qs
        managed = sorted(t for t in access.trial_ids if access.designs(t))
        return qs.filter(Q(user_id=request.user.pk) | Q(trial_id__in=managed))

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [] if obj is None else ["name", "trial", "user", "token_prefix", "expires_on", "created_at",
                                       "last_used_at", "revoked_at", "revoked_by"]

    # Django takes a list of names; django-stubs' result type is an invariant list of unions.
    def get_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:  # type: ignore[override]
        return list(self.add_fields) if obj is None else self.get_readonly_fields(request, obj)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return access_of(request.user).reads_any

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return access_of(request.user).reads_any

    def has_add_permission(self, request: HttpRequest) -> bool:
        return access_of(request.user).reads_any

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # issued, then only revoked (the action)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # revoke instead: the audit trail keeps what the token was

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "trial":  # only the trials where the user has a role
            kwargs["queryset"] = Trial.objects.filter(memberships__user_id=acting_user(request).pk,
                                                      memberships__active=True).distinct()
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def get_form(self, request: HttpRequest, obj: Any = None, change: bool = False, **kwargs: Any) -> Any:
        base = super().get_form(request, obj, change=change, **kwargs)

        class IssueForm(base):  # type: ignore[misc, valid-type]
            def clean(self) -> dict[str, Any]:
                data = super().clean()
                if not self.errors:
                    try:
                        check_personal_token(trial=data["trial"], expires_on=data.get("expires_on"),
                                             by=acting_user(request))
                    except DomainError as err:
                        add_domain_error(self, err)
                return data

        return IssueForm

    def save_model(self, request: HttpRequest, obj: Any, form: Any, change: bool) -> None:
        data = form.cleaned_data
        token, secret = issue_personal_token(trial=data["trial"], name=data["name"],
                                             expires_on=data.get("expires_on"), by=acting_user(request))
        obj.pk, obj.name = token.pk, token.name
        messages.warning(request, f"Your API token {token.name} for {token.trial.code}: {secret} — copy it now; "
                         "it will not be shown again.")

    @admin.action(description="Revoke the selected API tokens")
    def revoke(self, request: HttpRequest, queryset: QuerySet) -> None:
        for token in queryset.filter(revoked_at__isnull=True):
            try:
                revoke_personal_token(token=token, by=acting_user(request))
            except DomainError as err:
                messages.error(request, f"{token.name}: {err.message}")
            else:
                messages.success(request, f"{token.name} revoked.")
