"""Reads of the protocol design, scoped to the caller's memberships (``trials.access``).

A user sees the trials they hold a membership in, and the whole design of those trials (cohorts,
products, dose levels, regimens, visits, criteria): a site needs it to enter data. Among sites,
they see only those of their memberships; a trial-wide data manager sees every site of the trial.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Prefetch, QuerySet

from config.compiled import compiled
from config.reads import shared
from trials.access import access_of
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


def list_trials(*, user: Any) -> QuerySet[Trial]:
    """The caller's trials with their registry identifiers (two queries)."""
    registrations = RegistryIdentifier.objects.order_by("registry", "identifier")
    qs = Trial.objects.prefetch_related(Prefetch("registry_identifiers", queryset=registrations))
    access = access_of(user)
    if not access.is_superuser:
        qs = qs.filter(pk__in=sorted(access.trial_ids))
    return qs.order_by("code", "pk")


def get_trial(*, user: Any, code: str) -> Trial | None:
    """One of the caller's trials by code, or None (another trial does not exist for the caller)."""
    return list_trials(user=user).filter(code=code).first()


def list_trial_sites(*, user: Any, trial: Trial) -> QuerySet[TrialSite]:
    """The trial's sites the caller holds a membership at (all of them for a trial-wide role)."""
    qs = TrialSite.objects.filter(trial=trial).filter(access_of(user).site_q()).select_related("site")
    return qs.order_by("site__code", "pk")


def list_cohorts(*, trial: Trial) -> QuerySet[Cohort]:
    return Cohort.objects.filter(trial=trial).order_by("code", "pk")


def list_products(*, trial: Trial) -> QuerySet[Product]:
    return Product.objects.filter(trial=trial).order_by("code", "pk")


def list_dose_levels(*, trial: Trial) -> QuerySet[DoseLevel]:
    return DoseLevel.objects.filter(trial=trial).order_by("cells_per_kg", "code", "pk")


def list_regimens(*, trial: Trial) -> QuerySet[LymphodepletionRegimen]:
    """Regimens with their agents (two queries)."""
    agents = RegimenAgent.objects.order_by("agent", "pk")
    return (LymphodepletionRegimen.objects.filter(trial=trial)
            .prefetch_related(Prefetch("agents", queryset=agents)).order_by("code", "pk"))


def list_visits(*, trial: Trial) -> QuerySet[Visit]:
    return Visit.objects.filter(trial=trial).order_by("target_day", "code", "pk")


def visit_schedule(trial_id: int) -> list[Visit]:
    """The trial's visits in schedule order (one query; read once within ``config.reads.shared_reads``)."""
    def build(trial: int) -> QuerySet[Visit]:
        return Visit.objects.filter(trial_id=trial).order_by("target_day", "code", "pk")

    return shared(("visit_schedule", trial_id), lambda: compiled("visit schedule", build).rows(trial_id))


def list_criteria(*, trial: Trial) -> QuerySet[EligibilityCriterion]:
    return EligibilityCriterion.objects.filter(trial=trial).order_by("kind", "number", "pk")
