"""Protocol design: trials, sites, CAR-T products, dose levels, lymphodepletion regimens, visits, roles.

Data managers edit these in the admin; every clinical service reads its numbers from here, so no
protocol number is a constant in code.
"""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from decimal import Decimal
from typing import ClassVar

import pghistory
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.postgres.fields import ArrayField
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import F, Q
from django.utils import timezone

from config import display
from config.audit import audited


class TimeStampedModel(models.Model):
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True


code_validator = RegexValidator(
    r"^[A-Z0-9][A-Z0-9_-]*$", "Use capital letters, digits, '-' and '_' (e.g. CART19-ALL)."
)


class Antigen(models.TextChoices):
    CD19 = "CD19", "CD19"
    CD20 = "CD20", "CD20"
    CD22 = "CD22", "CD22"
    CD38 = "CD38", "CD38"
    CD7 = "CD7", "CD7"
    CD5 = "CD5", "CD5"
    CD33 = "CD33", "CD33"
    CD123 = "CD123", "CD123"
    CLL1 = "CLL1", "CLL-1"
    BCMA = "BCMA", "BCMA"
    GPRC5D = "GPRC5D", "GPRC5D"


class ScfvOrigin(models.TextChoices):
    MURINE = "murine", "Murine"
    HUMANIZED = "humanized", "Humanized"
    FULLY_HUMAN = "fully_human", "Fully human"
    NANOBODY = "nanobody", "Camelid nanobody (VHH)"


@audited
class Trial(TimeStampedModel):
    class Phase(models.TextChoices):
        EARLY_1 = "early_1", "Early phase 1"
        PHASE_1 = "1", "Phase 1"
        PHASE_1_2 = "1/2", "Phase 1/2"
        PHASE_2 = "2", "Phase 2"
        PHASE_3 = "3", "Phase 3"

    class Status(models.TextChoices):
        PLANNED = "planned", "Planned"
        RECRUITING = "recruiting", "Recruiting"
        ACTIVE_NOT_RECRUITING = "active", "Active, not recruiting"
        SUSPENDED = "suspended", "Suspended"
        COMPLETED = "completed", "Completed"
        TERMINATED = "terminated", "Terminated"

    code = models.CharField(max_length=30, unique=True, validators=[code_validator])
    title = models.CharField(max_length=300)
    phase = models.CharField(max_length=10, choices=Phase.choices)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.PLANNED)
    indication = models.CharField(max_length=200, help_text="e.g. Relapsed/refractory CD19+ B-ALL")
    infusion_window_min_days = models.PositiveSmallIntegerField(
        default=2, help_text="Earliest infusion, in days after the last lymphodepletion dose."
    )
    infusion_window_max_days = models.PositiveSmallIntegerField(
        default=7, help_text="Latest infusion, in days after the last lymphodepletion dose."
    )
    reinfusion_allowed = models.BooleanField(
        default=False, help_text="A second CAR-T course (with its own lymphodepletion) may be given."
    )
    # Numbers DOMAIN.md marks as protocol-dependent or unconfirmed are settings of the trial.
    sae_report_hours = models.PositiveSmallIntegerField(
        "SAE report due (hours)",
        default=24, help_text="Expedited report due this many hours after the site learned of an SAE."
    )
    capd_age_cutoff_years = models.PositiveSmallIntegerField(
        "CAPD below age (years)",
        default=12, validators=[MaxValueValidator(18)],
        help_text="ICANS in children younger than this is graded with CAPD instead of ICE.",
    )
    relapse_marrow_blasts_pct = models.DecimalField(
        max_digits=5, decimal_places=2, default=Decimal("5"),
        help_text="Marrow blasts at or above this after CR/CRi define relapse.",
    )
    mrd_negative_below_pct = models.DecimalField(
        "MRD-negative below (%)",
        max_digits=9, decimal_places=6, default=Decimal("0.01"),
        help_text="Flow MRD below this (%) counts as MRD-negative.",
    )
    split_dose_max_days = models.PositiveSmallIntegerField(
        default=7, help_text="All fractions of a split dose are given within this many days of the first."
    )

    class Meta:
        ordering = ["code"]
        constraints = [
            models.CheckConstraint(
                condition=Q(infusion_window_min_days__lte=F("infusion_window_max_days")),
                name="trial_infusion_window_ordered",
                violation_error_message="The infusion window must start before it ends.",
            )
        ]

    def __str__(self) -> str:
        return self.code


class RegistryIdentifier(models.Model):
    """A public registration of the trial (ClinicalTrials.gov, ChiCTR, EU CT...)."""

    class Registry(models.TextChoices):
        CLINICALTRIALS_GOV = "ctgov", "ClinicalTrials.gov"
        CHICTR = "chictr", "Chinese Clinical Trial Registry"
        EU_CT = "euct", "EU Clinical Trials (CTIS)"
        EUDRACT = "eudract", "EudraCT"
        ISRCTN = "isrctn", "ISRCTN"
        OTHER = "other", "Other"

    PATTERNS: ClassVar[dict[str, tuple[str, str]]] = {
        Registry.CLINICALTRIALS_GOV: (r"NCT\d{8}", "NCT followed by 8 digits, e.g. NCT04351022"),
        Registry.CHICTR: (r"ChiCTR(-[A-Z]{2,5}-)?\d{8,12}", "ChiCTR followed by digits, e.g. ChiCTR1800014761"),
        Registry.EU_CT: (r"\d{4}-\d{6}-\d{2}-\d{2}", "e.g. 2023-503456-12-00"),
        Registry.EUDRACT: (r"\d{4}-\d{6}-\d{2}", "e.g. 2016-001234-56"),
        Registry.ISRCTN: (r"ISRCTN\d{8}", "ISRCTN followed by 8 digits"),
    }

    trial = models.ForeignKey(Trial, on_delete=models.CASCADE, related_name="registry_identifiers")
    registry = models.CharField(max_length=10, choices=Registry.choices)
    identifier = models.CharField(max_length=40)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["registry", "identifier"], name="registryidentifier_unique")
        ]

    def clean(self) -> None:
        pattern = self.PATTERNS.get(self.registry)
        if pattern and not re.fullmatch(pattern[0], self.identifier or ""):
            raise ValidationError({"identifier": f"Not a valid identifier for this registry: {pattern[1]}."})

    def __str__(self) -> str:
        return self.identifier


def validate_time_zone(value: str) -> None:
    if value not in zoneinfo.available_timezones():
        raise ValidationError(f"Unknown time zone {value!r}; use an IANA name such as Europe/Paris.")


@audited
class Site(TimeStampedModel):
    code = models.CharField(max_length=10, unique=True, validators=[code_validator])
    name = models.CharField(max_length=200)
    country = models.CharField(
        max_length=2, validators=[RegexValidator(r"^[A-Z]{2}$", "ISO 3166 two-letter country code, e.g. CN.")]
    )
    time_zone = models.CharField(max_length=64, validators=[validate_time_zone], default="UTC")

    class Meta:
        ordering = ["code"]

    def __str__(self) -> str:
        return f"{self.code} {self.name}"

    @property
    def tzinfo(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.time_zone)

    def local(self, moment: dt.datetime) -> dt.datetime:
        """``moment`` on the site's clock: times are entered and shown in the site's time zone."""
        return moment.astimezone(self.tzinfo)

    def zone_label(self, moment: dt.datetime | None = None) -> str:
        """The zone as shown beside a time, e.g. "Asia/Shanghai, UTC+08:00" (the offset at ``moment``)."""
        return f"{self.time_zone}, {display.zone_offset(self.local(moment or timezone.now()))}"


@audited
class TrialSite(TimeStampedModel):
    """A site's participation in a trial. Only an active site may screen subjects."""

    class Status(models.TextChoices):
        PENDING = "pending", "Pending activation"
        ACTIVE = "active", "Active"
        ON_HOLD = "on_hold", "On hold"
        CLOSED = "closed", "Closed"

    trial = models.ForeignKey(Trial, on_delete=models.PROTECT, related_name="trial_sites")
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="trial_sites")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    activated_on = models.DateField(null=True, blank=True)
    last_subject_number = models.PositiveIntegerField(
        default=0, editable=False, help_text="Subject codes are numbered per trial and site."
    )

    class Meta:
        ordering = ["trial__code", "site__code"]
        constraints = [
            models.UniqueConstraint(fields=["trial", "site"], name="trialsite_unique"),
            models.CheckConstraint(
                condition=~Q(status="active") | Q(activated_on__isnull=False),
                name="trialsite_active_has_date",
                violation_error_message="An active site needs its activation date.",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.trial.code} @ {self.site.code}"


@audited
class Cohort(TimeStampedModel):
    trial = models.ForeignKey(Trial, on_delete=models.PROTECT, related_name="cohorts")
    code = models.CharField(max_length=20, validators=[code_validator])
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)

    class Meta:
        ordering = ["trial__code", "code"]
        constraints = [models.UniqueConstraint(fields=["trial", "code"], name="cohort_unique_code")]

    def __str__(self) -> str:
        return f"{self.code} {self.name}"


@audited
class Product(TimeStampedModel):
    """The CAR construct given in the trial."""

    class Costimulatory(models.TextChoices):
        CD28 = "CD28", "CD28"
        FOUR_1BB = "4-1BB", "4-1BB (CD137)"
        CD28_4_1BB = "CD28+4-1BB", "CD28 and 4-1BB"
        ICOS = "ICOS", "ICOS"
        OX40 = "OX40", "OX40"
        OTHER = "other", "Other"

    class Vector(models.TextChoices):
        LENTIVIRAL = "lentiviral", "Lentiviral"
        GAMMA_RETROVIRAL = "gamma_retroviral", "Gamma-retroviral"
        TRANSPOSON = "transposon", "Transposon (e.g. piggyBac, Sleeping Beauty)"
        MRNA = "mrna", "mRNA electroporation"
        OTHER = "other", "Other"

    class Source(models.TextChoices):
        AUTOLOGOUS = "autologous", "Autologous"
        ALLOGENEIC = "allogeneic", "Allogeneic donor"

    trial = models.ForeignKey(Trial, on_delete=models.PROTECT, related_name="products")
    code = models.CharField(max_length=20, validators=[code_validator],
                            help_text="Unique in the trial; API clients name the product by it, e.g. HCART19.")
    name = models.CharField(max_length=100)
    target_antigens = ArrayField(
        models.CharField(max_length=10, choices=Antigen.choices), help_text="One or several, e.g. CD19,CD22."
    )
    scfv_origin = models.CharField(max_length=12, choices=ScfvOrigin.choices)
    costimulatory_domain = models.CharField(max_length=12, choices=Costimulatory.choices)
    vector = models.CharField(max_length=20, choices=Vector.choices)
    allowed_sources = ArrayField(
        models.CharField(max_length=12, choices=Source.choices), help_text="autologous and/or allogeneic."
    )

    class Meta:
        ordering = ["trial__code", "name"]
        constraints = [
            models.UniqueConstraint(fields=["trial", "name"], name="product_unique_name"),
            models.UniqueConstraint(fields=["trial", "code"], name="product_unique_code"),
            models.CheckConstraint(
                condition=Q(target_antigens__len__gte=1), name="product_has_target",
                violation_error_message="Name at least one target antigen.",
            ),
            models.CheckConstraint(
                condition=Q(allowed_sources__len__gte=1), name="product_has_source",
                violation_error_message="Allow at least one product source.",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({'/'.join(self.target_antigens)})"


@audited
class DoseLevel(TimeStampedModel):
    """A CAR-T dose in CAR+ viable cells per kg, with the tolerance accepted around it."""

    trial = models.ForeignKey(Trial, on_delete=models.PROTECT, related_name="dose_levels")
    code = models.CharField(max_length=20, validators=[code_validator])
    cells_per_kg = models.DecimalField(
        max_digits=14, decimal_places=0, validators=[MinValueValidator(Decimal(1))],
        help_text="CAR+ viable cells per kg, e.g. 1000000 (1×10⁶/kg).",
    )
    tolerance_pct = models.DecimalField(
        max_digits=5, decimal_places=2, default=Decimal("20"),
        validators=[MinValueValidator(Decimal(0)), MaxValueValidator(Decimal(100))],
        help_text="Accepted deviation of the infused dose, in % of the level.",
    )

    class Meta:
        ordering = ["trial__code", "cells_per_kg"]
        constraints = [
            models.UniqueConstraint(fields=["trial", "code"], name="doselevel_unique_code"),
            models.CheckConstraint(condition=Q(cells_per_kg__gt=0), name="doselevel_positive"),
        ]

    def __str__(self) -> str:
        return f"{self.code} ({display.cells_per_kg(self.cells_per_kg)})"

    @property
    def min_cells_per_kg(self) -> Decimal:
        return self.cells_per_kg * (1 - self.tolerance_pct / 100)

    @property
    def max_cells_per_kg(self) -> Decimal:
        return self.cells_per_kg * (1 + self.tolerance_pct / 100)

    def accepts(self, cells_per_kg: Decimal) -> bool:
        return self.min_cells_per_kg <= cells_per_kg <= self.max_cells_per_kg


@audited
class LymphodepletionRegimen(TimeStampedModel):
    trial = models.ForeignKey(Trial, on_delete=models.PROTECT, related_name="regimens")
    code = models.CharField(max_length=20, validators=[code_validator],
                            help_text="Unique in the trial; API clients name the regimen by it, e.g. FC.")
    name = models.CharField(max_length=100, help_text="e.g. Flu/Cy 30/250 ×3")
    dose_tolerance_pct = models.DecimalField(
        max_digits=5, decimal_places=2, default=Decimal("10"),
        validators=[MinValueValidator(Decimal(0)), MaxValueValidator(Decimal(100))],
        help_text="An administered dose further than this from the planned dose needs a deviation reason.",
    )

    class Meta:
        ordering = ["trial__code", "name"]
        constraints = [models.UniqueConstraint(fields=["trial", "name"], name="regimen_unique_name"),
                       models.UniqueConstraint(fields=["trial", "code"], name="regimen_unique_code")]

    def __str__(self) -> str:
        return self.name


@audited
class RegimenAgent(models.Model):
    class Agent(models.TextChoices):
        FLUDARABINE = "fludarabine", "Fludarabine"
        CYCLOPHOSPHAMIDE = "cyclophosphamide", "Cyclophosphamide"
        BENDAMUSTINE = "bendamustine", "Bendamustine"
        OTHER = "other", "Other"

    regimen = models.ForeignKey(LymphodepletionRegimen, on_delete=models.CASCADE, related_name="agents")
    agent = models.CharField(max_length=20, choices=Agent.choices)
    dose_mg_per_m2 = models.DecimalField(
        max_digits=7, decimal_places=2, validators=[MinValueValidator(Decimal("0.01"))],
        help_text="mg/m² per day",
    )
    days = ArrayField(
        models.SmallIntegerField(validators=[MinValueValidator(-30), MaxValueValidator(-1)]),
        help_text="Days relative to day 0 (the infusion), e.g. -5,-4,-3.",
    )

    class Meta:
        ordering = ["regimen", "agent"]
        constraints = [
            models.UniqueConstraint(fields=["regimen", "agent"], name="regimenagent_unique"),
            models.CheckConstraint(condition=Q(dose_mg_per_m2__gt=0), name="regimenagent_positive_dose"),
            models.CheckConstraint(condition=Q(days__len__gte=1), name="regimenagent_has_days",
                                   violation_error_message="Give at least one day."),
        ]

    def __str__(self) -> str:
        return f"{self.get_agent_display()} {self.dose_mg_per_m2} mg/m² on days {self.days}"


@audited
class Visit(TimeStampedModel):
    """A protocol visit, matched by its window around the target study day (day 0 = infusion)."""

    trial = models.ForeignKey(Trial, on_delete=models.PROTECT, related_name="visits")
    code = models.CharField(max_length=20, validators=[code_validator])
    name = models.CharField(max_length=100)
    target_day = models.SmallIntegerField(help_text="Study day; day 0 is the first infusion.")
    window_before_days = models.PositiveSmallIntegerField(default=0)
    window_after_days = models.PositiveSmallIntegerField(default=0)
    expected_assays = ArrayField(
        models.CharField(max_length=30), blank=True, default=list,
        help_text="Analyte codes expected at this visit, e.g. CAR_QPCR,IL6,CRP.",
    )
    primary_response = models.BooleanField(
        "primary response visit", default=False,
        help_text="The visit of the primary response assessment (e.g. D28); trial summaries report the response "
                  "recorded at it. At most one per trial.",
    )

    class Meta:
        ordering = ["trial__code", "target_day", "code"]
        constraints = [
            models.UniqueConstraint(fields=["trial", "code"], name="visit_unique_code"),
            models.UniqueConstraint(fields=["trial"], condition=Q(primary_response=True),
                                    name="visit_one_primary_response",
                                    violation_error_message="Only one visit of a trial is its primary response "
                                                            "visit."),
        ]

    def __str__(self) -> str:
        return f"{self.code} (day {self.target_day})"


@audited
class EligibilityCriterion(TimeStampedModel):
    class Kind(models.TextChoices):
        INCLUSION = "inclusion", "Inclusion"
        EXCLUSION = "exclusion", "Exclusion"

    trial = models.ForeignKey(Trial, on_delete=models.PROTECT, related_name="criteria")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    number = models.PositiveSmallIntegerField()
    text = models.TextField()
    active = models.BooleanField(default=True, help_text="Retired criteria stay for earlier assessments.")

    class Meta:
        ordering = ["trial__code", "kind", "number"]
        verbose_name_plural = "eligibility criteria"
        constraints = [
            models.UniqueConstraint(fields=["trial", "kind", "number"], name="criterion_unique_number")
        ]

    def __str__(self) -> str:
        return f"{self.code}: {self.text[:80]}"

    @property
    def code(self) -> str:
        """The stable code clients use, from kind and number: I1, I2, E1..."""
        return f"{'I' if self.kind == self.Kind.INCLUSION else 'E'}{self.number}"


@audited
class Membership(TimeStampedModel):
    """A user's role in a trial at a site. Data managers may hold a trial-wide role (no site)."""

    class Role(models.TextChoices):
        COORDINATOR = "coordinator", "Site coordinator"
        INVESTIGATOR = "investigator", "Investigator"
        MONITOR = "monitor", "Monitor"
        DATA_MANAGER = "data_manager", "Data manager"
        SYSTEM = "system", "Site system (API service account)"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="memberships")
    trial = models.ForeignKey(Trial, on_delete=models.PROTECT, related_name="memberships")
    site = models.ForeignKey(
        Site, on_delete=models.PROTECT, null=True, blank=True, related_name="memberships",
        help_text="Empty for a trial-wide data manager.",
    )
    role = models.CharField(max_length=15, choices=Role.choices)
    active = models.BooleanField(default=True)

    class Meta:
        ordering = ["trial__code", "site__code", "user__username"]
        constraints = [
            models.UniqueConstraint(
                fields=["user", "trial", "site", "role"], name="membership_unique",
                nulls_distinct=False,
            ),
            models.CheckConstraint(
                condition=Q(site__isnull=False) | Q(role="data_manager"),
                name="membership_site_unless_data_manager",
                violation_error_message="Only a data manager may hold a trial-wide role; choose a site.",
            ),
        ]

    def __str__(self) -> str:
        where = self.site.code if self.site is not None else "all sites"
        return f"{self.user} — {self.get_role_display()} — {self.trial.code} / {where}"


@audited
class ServiceAccount(TimeStampedModel):
    """A laboratory or site system calling the API, bound to one trial and one or more of its sites.

    Its token is shown once when issued and stored only as a SHA-256 hash (tokens are 256-bit random
    values, so a slow hash adds nothing). The account acts through its own user, whose memberships
    (role "system") scope it exactly as the admin scopes people.
    """

    name = models.CharField(max_length=100, help_text="e.g. BJ01 laboratory information system")
    trial = models.ForeignKey(Trial, on_delete=models.PROTECT, related_name="service_accounts")
    sites = models.ManyToManyField(Site, related_name="service_accounts")
    user = models.OneToOneField(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="service_account",
                                editable=False)
    token_prefix = models.CharField(max_length=12, unique=True, editable=False)
    token_hash = models.CharField(max_length=64, editable=False)
    issued_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+",
                                  editable=False)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["trial__code", "name"]
        constraints = [models.UniqueConstraint(fields=["trial", "name"], name="serviceaccount_unique_name")]

    def __str__(self) -> str:
        state = " (revoked)" if self.revoked_at else ""
        return f"{self.name}{state}"


@audited
class PersonalToken(TimeStampedModel):
    """A person's own API token for one trial: it acts as its owner, with the owner's roles and sites in that
    trial and nothing of other trials (``trials.access.access_of`` honours the restriction).

    Shown once when issued and stored as a SHA-256 hash, like a service account's token; its prefix
    starts with ``p`` so that one look-up by prefix finds the right table. Issued by its owner from an
    interactive login only; revoked by the owner or a data manager of the trial.
    """

    PREFIX_MARK = "p"  # service account prefixes are hexadecimal, so never start with it

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="personal_tokens",
                             editable=False)
    trial = models.ForeignKey(Trial, on_delete=models.PROTECT, related_name="personal_tokens")
    name = models.CharField(max_length=100, help_text="What it is for, e.g. screening import script")
    token_prefix = models.CharField(max_length=12, unique=True, editable=False)
    token_hash = models.CharField(max_length=64, editable=False)
    expires_on = models.DateField(null=True, blank=True,
                                  help_text="Last day (UTC) the token works; empty: until revoked.")
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    revoked_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True,
                                   related_name="+", editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["-created_at", "-pk"]
        verbose_name = "personal API token"
        verbose_name_plural = "My API tokens"

    def __str__(self) -> str:
        state = " (revoked)" if self.revoked_at else ""
        return f"{self.name} ({self.token_prefix}){state}"


class UserAccount(get_user_model()):  # type: ignore[misc]
    """The user model, as tracked by the audit trail (a proxy, so the triggers' migrations live here)."""

    class Meta:
        proxy = True
        app_label = "trials"


# User accounts: creation, role flags, deactivation and each login (last_login) are audited, as
# ICH E6(R3) 4.2.2 asks for user-account and access logs. The password hash is never copied.
pghistory.track(
    pghistory.InsertEvent(), pghistory.UpdateEvent(), pghistory.DeleteEvent(),
    exclude=["password"], model_name="UserEvent",
)(UserAccount)
