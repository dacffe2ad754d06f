"""Treatment: the chain of identity (subject -> collection -> lot -> infusion), bridging, lymphodepletion
and CAR-T infusion. Written only by ``patients.services.treatment``."""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import F, Q

from config.audit import audited
from patients.models.enrolment import BodyMeasurement, Subject
from trials.models import DoseLevel, LymphodepletionRegimen, Product, RegimenAgent, TimeStampedModel

PCT = [MinValueValidator(Decimal(0)), MaxValueValidator(Decimal(100))]


@audited
class ApheresisCollection(TimeStampedModel):
    subject = models.ForeignKey(Subject, on_delete=models.PROTECT, related_name="collections")
    collection_id = models.CharField(max_length=40, unique=True, help_text="Apheresis bag / collection ID.")
    collected_on = models.DateField()
    cd3_cells_1e9 = models.DecimalField(
        "CD3+ cells collected (×10⁹)", max_digits=7, decimal_places=2, null=True, blank=True,
        validators=[MinValueValidator(Decimal(0))],
    )
    recorded_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")

    class Meta:
        ordering = ["subject", "collected_on", "pk"]

    def __str__(self) -> str:
        return f"{self.collection_id} ({self.collected_on})"


class DonorType(models.TextChoices):
    """Who gave the cells of a donor-derived (allogeneic) product."""

    HSCT_DONOR = "hsct_donor", "The subject's HSCT donor"
    NEW_DONOR = "new_donor", "New donor (collected for this subject)"
    THIRD_PARTY = "third_party", "Third-party / off-the-shelf donor"


# A donor is known only by a pseudonymous code (DOMAIN §8.6): capitals, digits and hyphens, with at least
# one digit, so that a name ("SMITH", "Jane Doe") can never be stored as one.
DONOR_CODE_PATTERN = r"^[A-Z0-9][A-Z0-9-]{2,39}$"
DONOR_CODE_MESSAGE = ("A donor code is a pseudonymous code of 3 to 40 capitals, digits and hyphens with at least "
                      "one digit (e.g. D-2024-017), never a name.")


@audited
class DonorCollection(TimeStampedModel):
    """The donor's cells a donor-derived product is made from: the chain of identity's first link when the
    product is not the subject's own (subject <- donor collection -> lot -> infusion)."""

    subject = models.ForeignKey(Subject, on_delete=models.PROTECT, related_name="donor_collections",
                                help_text="The recipient.")
    donor_code = models.CharField(max_length=40, validators=[
        RegexValidator(DONOR_CODE_PATTERN, DONOR_CODE_MESSAGE), RegexValidator(r"[0-9]", DONOR_CODE_MESSAGE)],
        help_text="Pseudonymous donor code from the donor registry or manufacturer (never a name); one code "
                  "per donor.")
    donor_type = models.CharField(max_length=20, choices=DonorType.choices)
    hla_matched = models.PositiveSmallIntegerField(
        "HLA alleles matched", null=True, blank=True, validators=[MaxValueValidator(12)],
        help_text="e.g. 10 of 10; 5 of 10 for a haploidentical donor. Empty when not known.")
    hla_total = models.PositiveSmallIntegerField(
        "HLA alleles typed", null=True, blank=True, validators=[MinValueValidator(1), MaxValueValidator(12)])
    collection_id = models.CharField(max_length=40, unique=True, help_text="Donor collection bag ID.")
    collected_on = models.DateField()
    recorded_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")

    class Meta:
        ordering = ["subject", "collected_on", "pk"]
        constraints = [
            models.CheckConstraint(
                condition=Q(donor_code__regex=DONOR_CODE_PATTERN) & Q(donor_code__regex=r"[0-9]"),
                name="donorcollection_pseudonymous_code", violation_error_message=DONOR_CODE_MESSAGE),
            models.CheckConstraint(
                condition=(Q(hla_matched__isnull=True) & Q(hla_total__isnull=True))
                | (Q(hla_total__gte=1) & Q(hla_matched__lte=F("hla_total"))),
                name="donorcollection_hla_match_within_total",
                violation_error_message="Give both HLA numbers, matched no more than typed, or neither."),
        ]

    def __str__(self) -> str:
        return f"{self.collection_id} (donor {self.donor_code}, {self.collected_on})"

    @property
    def hla_match(self) -> str:
        return "" if self.hla_total is None else f"{self.hla_matched}/{self.hla_total}"


@audited
class ProductLot(TimeStampedModel):
    """A manufactured CAR-T product lot, intended for one subject only."""

    class Status(models.TextChoices):
        MANUFACTURING = "manufacturing", "In manufacture"
        RELEASED = "released", "Released"
        FAILED = "failed", "Manufacturing failed"

    class DonorType(models.TextChoices):
        # Copied from the lot's donor collection. The first three come from lots registered before donor
        # collections were recorded (kept as entered; such lots have no donor collection).
        MATCHED_SIBLING = "matched_sibling", "Matched sibling (legacy)"
        HAPLOIDENTICAL = "haploidentical", "Haploidentical (legacy)"
        UNRELATED = "unrelated", "Unrelated (legacy)"
        HSCT_DONOR = "hsct_donor", "The subject's HSCT donor"
        NEW_DONOR = "new_donor", "New donor (collected for this subject)"
        THIRD_PARTY = "third_party", "Third-party / off-the-shelf donor"

    subject = models.ForeignKey(Subject, on_delete=models.PROTECT, related_name="lots")
    product = models.ForeignKey(Product, on_delete=models.PROTECT, related_name="lots")
    collection = models.ForeignKey(
        ApheresisCollection, on_delete=models.PROTECT, null=True, blank=True, related_name="lots",
        help_text="The subject's own collection (autologous products).",
    )
    donor_collection = models.ForeignKey(
        DonorCollection, on_delete=models.PROTECT, null=True, blank=True, related_name="lots",
        help_text="The donor collection of this subject (donor-derived products).",
    )
    lot_number = models.CharField(max_length=40, unique=True)
    source = models.CharField(max_length=12, choices=Product.Source.choices)
    donor_type = models.CharField(max_length=20, choices=DonorType.choices, blank=True, editable=False,
                                  help_text="The donor collection's donor type.")
    status = models.CharField(max_length=15, choices=Status.choices, default=Status.MANUFACTURING)
    release_date = models.DateField(null=True, blank=True)
    viability_pct = models.DecimalField(max_digits=5, decimal_places=2, null=True, blank=True, validators=PCT)
    car_positive_pct = models.DecimalField("CAR+ %", max_digits=5, decimal_places=2, null=True, blank=True,
                                           validators=PCT)
    total_viable_car_cells = models.DecimalField(
        "total viable CAR+ cells", max_digits=16, decimal_places=0, null=True, blank=True,
        validators=[MinValueValidator(Decimal(1))],
    )
    qc_pass = models.BooleanField("QC passed", null=True, blank=True)
    failure_reason = models.TextField(blank=True)
    failed_on = models.DateField(null=True, blank=True)
    recorded_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")

    class Meta:
        ordering = ["subject", "pk"]
        constraints = [
            models.CheckConstraint(
                condition=~Q(status="released") | (Q(release_date__isnull=False) & Q(qc_pass=True)
                                                    & Q(total_viable_car_cells__isnull=False)),
                name="productlot_released_has_results",
            ),
            models.CheckConstraint(
                condition=~Q(status="failed") | (~Q(failure_reason="") & Q(failed_on__isnull=False)),
                name="productlot_failed_has_reason",
            ),
            models.CheckConstraint(
                condition=Q(source="allogeneic") | (Q(donor_type="") & Q(collection__isnull=False)
                                                    & Q(donor_collection__isnull=True)),
                name="productlot_autologous_from_collection",
            ),
            # A donor-derived lot has a donor (its donor collection's type, or a legacy lot's donor type) and
            # none of the subject's own collections.
            models.CheckConstraint(
                condition=Q(source="autologous") | (~Q(donor_type="") & Q(collection__isnull=True)),
                name="productlot_allogeneic_has_donor",
            ),
        ]

    def __str__(self) -> str:
        return f"Lot {self.lot_number} ({self.get_status_display().lower()})"

    @property
    def released(self) -> bool:
        return self.status == self.Status.RELEASED


@audited
class BridgingTherapy(TimeStampedModel):
    subject = models.ForeignKey(Subject, on_delete=models.PROTECT, related_name="bridging")
    regimen = models.CharField(max_length=200, help_text="e.g. vincristine + dexamethasone; inotuzumab")
    started_on = models.DateField()
    ended_on = models.DateField(null=True, blank=True)
    recorded_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")

    class Meta:
        ordering = ["subject", "started_on", "pk"]
        verbose_name_plural = "bridging therapies"
        constraints = [
            models.CheckConstraint(condition=Q(ended_on__isnull=True) | Q(ended_on__gte=F("started_on")),
                                   name="bridgingtherapy_ends_after_start",
                                   violation_error_message="Bridging cannot end before it starts."),
        ]

    def __str__(self) -> str:
        return f"{self.regimen} from {self.started_on}"


class BsaFormulaChoice(models.TextChoices):
    MOSTELLER = "mosteller", "Mosteller"
    DUBOIS = "dubois", "DuBois & DuBois"


@audited
class LymphodepletionCourse(TimeStampedModel):
    """One lymphodepletion course; the BSA, its formula and the measurement used are stored with it."""

    subject = models.ForeignKey(Subject, on_delete=models.PROTECT, related_name="ld_courses")
    course_number = models.PositiveSmallIntegerField(default=1, help_text="2 for a re-infusion course.")
    regimen = models.ForeignKey(LymphodepletionRegimen, on_delete=models.PROTECT, related_name="+")
    planned_infusion_on = models.DateField(help_text="Planned day 0; dose days count from it.")
    measurement = models.ForeignKey(BodyMeasurement, on_delete=models.PROTECT, related_name="+")
    bsa_formula = models.CharField("BSA formula", max_length=10, choices=BsaFormulaChoice.choices,
                                   default=BsaFormulaChoice.MOSTELLER)
    bsa_m2 = models.DecimalField("BSA (m²)", max_digits=5, decimal_places=3)
    recorded_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")

    class Meta:
        ordering = ["subject", "course_number"]
        constraints = [
            models.UniqueConstraint(fields=["subject", "course_number"], name="ldcourse_unique_number"),
        ]

    def __str__(self) -> str:
        return f"LD course {self.course_number} ({self.regimen}), BSA {self.bsa_m2} m²"


@audited
class LymphodepletionDose(TimeStampedModel):
    course = models.ForeignKey(LymphodepletionCourse, on_delete=models.PROTECT, related_name="doses")
    agent = models.ForeignKey(RegimenAgent, on_delete=models.PROTECT, related_name="+")
    day = models.SmallIntegerField(help_text="Day relative to the planned infusion (e.g. -5).")
    given_on = models.DateField()
    planned_mg = models.DecimalField(max_digits=8, decimal_places=1)
    administered_mg = models.DecimalField(max_digits=8, decimal_places=1, validators=[MinValueValidator(0)])
    deviation_reason = models.TextField(blank=True)
    recorded_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")

    class Meta:
        ordering = ["course", "given_on", "agent__agent"]
        constraints = [
            models.UniqueConstraint(fields=["course", "agent", "day"], name="lddose_unique_agent_day"),
        ]

    def __str__(self) -> str:
        return f"{self.agent.get_agent_display()} day {self.day}: {self.administered_mg} mg"


@audited
class Infusion(TimeStampedModel):
    """One CAR-T infusion fraction. Day 0 of the subject is the first fraction of the first course."""

    subject = models.ForeignKey(Subject, on_delete=models.PROTECT, related_name="infusions")
    lot = models.ForeignKey(ProductLot, on_delete=models.PROTECT, related_name="infusions")
    dose_level = models.ForeignKey(DoseLevel, on_delete=models.PROTECT, related_name="+")
    course_number = models.PositiveSmallIntegerField(default=1)
    fraction_number = models.PositiveSmallIntegerField(default=1)
    planned_fractions = models.PositiveSmallIntegerField(default=1, validators=[MaxValueValidator(5)])
    infused_at = models.DateTimeField()
    infused_on = models.DateField(help_text="The site's local date of the infusion.")
    cells_per_kg = models.DecimalField("CAR+ cells/kg (this fraction)", max_digits=14, decimal_places=0,
                                       validators=[MinValueValidator(Decimal(1))])
    measurement = models.ForeignKey(BodyMeasurement, on_delete=models.PROTECT, related_name="+")
    weight_kg = models.DecimalField(max_digits=5, decimal_places=1)
    total_cells = models.DecimalField(max_digits=16, decimal_places=0)
    recorded_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")

    class Meta:
        ordering = ["subject", "course_number", "fraction_number"]
        constraints = [
            models.UniqueConstraint(fields=["subject", "course_number", "fraction_number"],
                                    name="infusion_unique_fraction"),
            models.CheckConstraint(condition=Q(fraction_number__lte=F("planned_fractions")),
                                   name="infusion_fraction_within_plan"),
        ]

    def __str__(self) -> str:
        return f"Infusion {self.course_number}.{self.fraction_number} on {self.infused_on}"


__all__ = [
    "ApheresisCollection", "BridgingTherapy", "BsaFormulaChoice", "DonorCollection", "DonorType", "Infusion",
    "LymphodepletionCourse", "LymphodepletionDose", "ProductLot",
]
