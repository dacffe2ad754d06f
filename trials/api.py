"""Protocol reads: the caller's trials and their design, each record named by a stable code.

A site's system reads here the codes it then sends with its writes (cohort, product, dose level,
regimen and agent, visit, eligibility criterion), so it never needs an id from the admin. A trial
the caller holds no membership in is a 404; among sites, only those of the caller's memberships.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Model, QuerySet
from django.http import Http404
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import generics, mixins, serializers, viewsets

from config.api import READ_ERRORS
from trials import selectors
from trials.models import (
    Cohort,
    DoseLevel,
    EligibilityCriterion,
    LymphodepletionRegimen,
    Product,
    RegimenAgent,
    RegistryIdentifier,
    Trial,
    TrialSite,
    Visit,
)


class RegistryIdentifierSerializer(serializers.ModelSerializer):
    class Meta:
        model = RegistryIdentifier
        fields = ["registry", "identifier"]


class TrialSerializer(serializers.ModelSerializer):
    registry_identifiers = RegistryIdentifierSerializer(many=True, read_only=True)

    class Meta:
        model = Trial
        fields = ["code", "title", "phase", "status", "indication", "registry_identifiers",
                  "infusion_window_min_days", "infusion_window_max_days", "reinfusion_allowed", "split_dose_max_days",
                  "sae_report_hours", "capd_age_cutoff_years", "relapse_marrow_blasts_pct", "mrd_negative_below_pct"]
        read_only_fields = fields


class TrialSiteSerializer(serializers.ModelSerializer):
    code = serializers.CharField(source="site.code", read_only=True)
    name = serializers.CharField(source="site.name", read_only=True)
    country = serializers.CharField(source="site.country", read_only=True)
    time_zone = serializers.CharField(source="site.time_zone", read_only=True,
                                      help_text="Dates entered for this site are its local dates.")

    class Meta:
        model = TrialSite
        fields = ["code", "name", "country", "time_zone", "status", "activated_on"]
        read_only_fields = fields


class CohortSerializer(serializers.ModelSerializer):
    class Meta:
        model = Cohort
        fields = ["code", "name", "description"]
        read_only_fields = fields


class ProductSerializer(serializers.ModelSerializer):
    class Meta:
        model = Product
        fields = ["code", "name", "target_antigens", "scfv_origin", "costimulatory_domain", "vector",
                  "allowed_sources"]
        read_only_fields = fields


class DoseLevelSerializer(serializers.ModelSerializer):
    class Meta:
        model = DoseLevel
        fields = ["code", "cells_per_kg", "tolerance_pct"]
        read_only_fields = fields


class RegimenAgentSerializer(serializers.ModelSerializer):
    dose_mg_per_m2_per_day = serializers.DecimalField(source="dose_mg_per_m2", max_digits=7, decimal_places=2,
                                                      read_only=True, help_text="mg/m² per day.")

    class Meta:
        model = RegimenAgent
        fields = ["agent", "dose_mg_per_m2_per_day", "days"]
        read_only_fields = fields


class RegimenSerializer(serializers.ModelSerializer):
    agents = RegimenAgentSerializer(many=True, read_only=True)

    class Meta:
        model = LymphodepletionRegimen
        fields = ["code", "name", "dose_tolerance_pct", "agents"]
        read_only_fields = fields


class VisitSerializer(serializers.ModelSerializer):
    class Meta:
        model = Visit
        fields = ["code", "name", "target_day", "window_before_days", "window_after_days", "expected_assays",
                  "primary_response"]
        read_only_fields = fields


class CriterionSerializer(serializers.ModelSerializer):
    code = serializers.CharField(read_only=True, help_text="I<number> for inclusion, E<number> for exclusion; "
                                                           "the key of an eligibility answer.")

    class Meta:
        model = EligibilityCriterion
        fields = ["code", "kind", "number", "text", "active"]
        read_only_fields = fields


TRIAL_CODE = OpenApiParameter("code", str, OpenApiParameter.PATH, description="The trial's code, e.g. CART19-ALL.")


@extend_schema_view(list=extend_schema(summary="The caller's trials", responses={200: TrialSerializer(many=True),
                                                                                 **READ_ERRORS}),
                    retrieve=extend_schema(summary="A trial and the settings that matter to a client",
                                           parameters=[TRIAL_CODE], responses={200: TrialSerializer, **READ_ERRORS}))
class TrialViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    """Trials the caller holds a membership in, addressed by code."""

    serializer_class = TrialSerializer
    lookup_field = "code"
    lookup_value_regex = "[^/]+"

    def get_queryset(self) -> QuerySet[Trial]:
        return selectors.list_trials(user=self.request.user)


class TrialDesignListApi(generics.ListAPIView):
    """A list of one part of a trial's design; the trial must be one of the caller's (else 404)."""

    select: Any = None  # the selector: (trial) -> QuerySet, or (user, trial) -> QuerySet for sites
    serializer_class: type[serializers.ModelSerializer[Model]]  # set by design_list()

    def trial(self) -> Trial:
        trial = selectors.get_trial(user=self.request.user, code=self.kwargs["code"])
        if trial is None:
            raise Http404
        return trial

    def get_queryset(self) -> QuerySet:
        if getattr(self, "swagger_fake_view", False):  # schema generation: no trial in the URL
            model: type[Model] = self.serializer_class.Meta.model
            return model._default_manager.none()
        return type(self).select(trial=self.trial())


def design_list(name: str, select: Any, serializer: Any, summary: str) -> type[TrialDesignListApi]:
    view = type(name, (TrialDesignListApi,), {"serializer_class": serializer, "select": staticmethod(select)})
    return extend_schema(summary=summary, parameters=[TRIAL_CODE],
                         responses={200: serializer(many=True), **READ_ERRORS})(view)


class TrialSiteListApi(TrialDesignListApi):
    serializer_class = TrialSiteSerializer

    @extend_schema(summary="The trial's sites the caller works at (all of them for a trial-wide role)",
                   parameters=[TRIAL_CODE], responses={200: TrialSiteSerializer(many=True), **READ_ERRORS})
    def get(self, *args: Any, **kwargs: Any) -> Any:
        return super().get(*args, **kwargs)

    def get_queryset(self) -> QuerySet[TrialSite]:
        if getattr(self, "swagger_fake_view", False):
            return TrialSite.objects.none()
        return selectors.list_trial_sites(user=self.request.user, trial=self.trial())


CohortListApi = design_list("CohortListApi", selectors.list_cohorts, CohortSerializer, "The trial's cohorts")
ProductListApi = design_list("ProductListApi", selectors.list_products, ProductSerializer,
                             "The trial's CAR-T products")
DoseLevelListApi = design_list("DoseLevelListApi", selectors.list_dose_levels, DoseLevelSerializer,
                               "The trial's dose levels (CAR+ viable cells per kg)")
RegimenListApi = design_list("RegimenListApi", selectors.list_regimens, RegimenSerializer,
                             "The trial's lymphodepletion regimens with their agents")
VisitListApi = design_list("VisitListApi", selectors.list_visits, VisitSerializer,
                           "The trial's protocol visits (study day 0 is the first infusion)")
CriterionListApi = design_list("CriterionListApi", selectors.list_criteria, CriterionSerializer,
                               "The trial's eligibility criteria, with the codes eligibility answers use")
