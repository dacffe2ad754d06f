"""Safety: adverse events (CTCAE v5), CRS and ICANS with dated ASTCT assessments, concomitant medications.

Raw observations are stored; each assessment keeps the grade derived from them and the algorithm
version. An investigator override needs a reason and never replaces the derived value (DOMAIN §0).
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from enum import StrEnum

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import F, Q

from config.audit import audited
from patients import grading
from patients.models.ctcae import CtcaeTerm
from patients.models.enrolment import Subject
from trials.models import TimeStampedModel

GRADE = [MinValueValidator(0), MaxValueValidator(5)]


# The ASTCT components in the words of DOMAIN §1-2 (the stored codes stay grading's enum values).
LABELS: dict[str, str] = {
    grading.O2Device.NONE: "None (room air)",
    grading.O2Device.LOW_FLOW_NC: "Low-flow nasal cannula (≤ 6 L/min)",
    grading.O2Device.BLOW_BY: "Blow-by",
    grading.O2Device.HIGH_FLOW_NC: "High-flow nasal cannula (> 6 L/min)",
    grading.O2Device.FACEMASK: "Facemask",
    grading.O2Device.NON_REBREATHER: "Non-rebreather mask",
    grading.O2Device.VENTURI: "Venturi mask",
    grading.O2Device.CPAP: "CPAP",
    grading.O2Device.BIPAP: "BiPAP",
    grading.O2Device.INVASIVE_VENT: "Intubation with mechanical ventilation",
    grading.Vasopressor.OTHER: "Other vasopressor",
    grading.Consciousness.ALERT: "Alert",
    grading.Consciousness.AWAKENS_SPONTANEOUSLY: "Depressed, awakens spontaneously",
    grading.Consciousness.AWAKENS_TO_VOICE: "Awakens only to voice",
    grading.Consciousness.TACTILE_ONLY: "Awakens only to tactile stimulus",
    grading.Consciousness.UNAROUSABLE: "Unarousable, or needs vigorous or repeated stimuli (stupor, coma)",
    grading.Seizure.RAPIDLY_RESOLVING: "Seizure resolving rapidly, or EEG seizures resolving with treatment",
    grading.Seizure.PROLONGED_OR_REPETITIVE: "Life-threatening seizure > 5 min, or repeated without return to "
                                             "baseline",
    grading.MotorFinding.DEEP_FOCAL_WEAKNESS: "Deep focal motor weakness (e.g. hemiparesis, paraparesis)",
    grading.CerebralOedema.FOCAL: "Focal or local oedema on neuroimaging",
    grading.CerebralOedema.DIFFUSE_OR_RAISED_ICP_SIGNS: "Diffuse cerebral oedema, or signs of raised intracranial "
                                                        "pressure",
}


def _choices(enum: type[StrEnum]) -> list[tuple[str, str]]:
    return [(member.value, LABELS.get(member, member.value.replace("_", " ").capitalize())) for member in enum]


class Attribution(models.TextChoices):
    NOT_RELATED = "not_related", "Not related"
    UNLIKELY = "unlikely", "Unlikely related"
    POSSIBLE = "possible", "Possibly related"
    PROBABLE = "probable", "Probably related"
    DEFINITE = "definite", "Definitely related"


@audited
class AdverseEvent(TimeStampedModel):
    class Category(models.TextChoices):
        CTCAE = "ctcae", "Adverse event (CTCAE v5.0)"
        CRS = "crs", "Cytokine release syndrome (ASTCT 2019)"
        ICANS = "icans", "ICANS (ASTCT 2019)"

    class Outcome(models.TextChoices):
        RECOVERED = "recovered", "Recovered/resolved"
        RECOVERING = "recovering", "Recovering/resolving"
        NOT_RECOVERED = "not_recovered", "Not recovered/not resolved"
        SEQUELAE = "sequelae", "Recovered with sequelae"
        FATAL = "fatal", "Fatal"
        UNKNOWN = "unknown", "Unknown"

    class Action(models.TextChoices):
        NONE = "none", "None"
        DOSE_NOT_CHANGED = "dose_not_changed", "Dose not changed"
        FRACTION_HELD = "fraction_held", "Next infusion fraction held"
        FRACTION_CANCELLED = "fraction_cancelled", "Remaining fractions cancelled"
        NOT_APPLICABLE = "not_applicable", "Not applicable"

    subject = models.ForeignKey(Subject, on_delete=models.PROTECT, related_name="adverse_events")
    category = models.CharField(max_length=6, choices=Category.choices, default=Category.CTCAE)
    ctcae_term = models.ForeignKey(CtcaeTerm, on_delete=models.PROTECT, null=True, blank=True,
                                   related_name="adverse_events", verbose_name="CTCAE term",
                                   help_text="The dictionary term; for \"Other, specify\" give the verbatim term "
                                   "and the system organ class.")
    term = models.CharField("reported term", max_length=200,
                            help_text="As reported (verbatim); the dictionary term when left blank.")
    system_organ_class = models.CharField(max_length=200, blank=True,
                                          help_text="MedDRA system organ class; taken from the dictionary term, "
                                          "given for \"Other, specify\".")
    meddra_code = models.CharField("MedDRA code", max_length=10, blank=True)
    onset_on = models.DateField()
    resolved_on = models.DateField(null=True, blank=True)
    grade = models.PositiveSmallIntegerField(
        validators=GRADE, null=True, blank=True,
        help_text="CTCAE grade; for CRS and ICANS the maximum of the episode's assessments.",
    )
    grade_scale = models.CharField(max_length=20, editable=False)
    serious = models.BooleanField(default=False)
    sae_death = models.BooleanField("results in death", default=False)
    sae_life_threatening = models.BooleanField("life-threatening", default=False)
    sae_hospitalisation = models.BooleanField("requires or prolongs hospitalisation", default=False)
    sae_disability = models.BooleanField("persistent disability/incapacity", default=False)
    sae_congenital = models.BooleanField("congenital anomaly", default=False)
    sae_important = models.BooleanField("important medical event", default=False)
    site_aware_at = models.DateTimeField(null=True, blank=True, help_text="When the site learned of the SAE.")
    report_due_at = models.DateTimeField(null=True, blank=True, editable=False)
    related_to_product = models.CharField(max_length=12, choices=Attribution.choices)
    related_to_lymphodepletion = models.CharField(max_length=12, choices=Attribution.choices)
    outcome = models.CharField(max_length=15, choices=Outcome.choices, default=Outcome.NOT_RECOVERED)
    action_taken = models.CharField(max_length=20, choices=Action.choices, default=Action.NONE)
    death_on = models.DateField(null=True, blank=True)
    recorded_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")

    class Meta:
        ordering = ["subject", "onset_on", "pk"]
        constraints = [
            models.CheckConstraint(condition=Q(resolved_on__isnull=True) | Q(resolved_on__gte=F("onset_on")),
                                   name="adverseevent_resolved_after_onset",
                                   violation_error_message="Resolution cannot precede onset."),
            models.CheckConstraint(condition=~Q(grade=5) | (Q(death_on__isnull=False) & Q(outcome="fatal")),
                                   name="adverseevent_grade5_records_death"),
            models.CheckConstraint(condition=Q(serious=False) | Q(site_aware_at__isnull=False),
                                   name="adverseevent_sae_has_awareness_time"),
        ]

    def __str__(self) -> str:
        grade = "" if self.grade is None else f" grade {self.grade}"
        return f"{self.term}{grade} from {self.onset_on}"


class AssessmentBase(TimeStampedModel):
    event = models.ForeignKey(AdverseEvent, on_delete=models.PROTECT, related_name="%(class)ss")
    assessed_at = models.DateTimeField()
    derived_grade = models.PositiveSmallIntegerField(validators=GRADE, editable=False)
    algorithm = models.CharField(max_length=20, editable=False)
    flags = ArrayField(models.CharField(max_length=60), default=list, blank=True, editable=False)
    override_grade = models.PositiveSmallIntegerField(validators=GRADE, null=True, blank=True,
                                                      help_text="Investigator's grade, when it differs.")
    override_reason = models.TextField(blank=True)
    recorded_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")

    class Meta:
        abstract = True

    @property
    def grade(self) -> int:
        return self.derived_grade if self.override_grade is None else self.override_grade


@audited
class CrsAssessment(AssessmentBase):
    max_temp_c = models.DecimalField("max temperature (°C)", max_digits=4, decimal_places=1, null=True,
                                     blank=True, validators=[MinValueValidator(Decimal(25)),
                                                             MaxValueValidator(Decimal(45))])
    fever_other_cause = models.BooleanField("fever explained by another cause", default=False)
    prior_antipyretic_or_anticytokine = models.BooleanField(
        default=False, help_text="Antipyretic, tocilizumab or corticosteroid given before (masks fever). "
        "Set automatically when such a medication is recorded before this time.",
    )
    hypotension = models.BooleanField(default=False)
    hypotension_other_cause = models.BooleanField(default=False)
    vasopressors = ArrayField(models.CharField(max_length=20, choices=_choices(grading.Vasopressor)),
                              default=list, blank=True)
    o2_device = models.CharField(max_length=20, choices=_choices(grading.O2Device), default="none")
    o2_flow_lpm = models.DecimalField("O₂ flow (L/min)", max_digits=4, decimal_places=1, null=True, blank=True,
                                      validators=[MinValueValidator(Decimal(0))])
    hypoxia_other_cause = models.BooleanField(default=False)
    death_due_to_crs = models.BooleanField("death due to CRS", default=False)

    class Meta:
        verbose_name = "CRS assessment"
        ordering = ["event", "assessed_at", "pk"]
        constraints = [
            models.CheckConstraint(condition=Q(override_grade__isnull=True) | ~Q(override_reason=""),
                                   name="crsassessment_override_has_reason"),
        ]

    def __str__(self) -> str:
        return f"CRS assessment {self.assessed_at.astimezone(dt.UTC):%Y-%m-%d %H:%M} UTC: grade {self.grade}"


@audited
class IcansAssessment(AssessmentBase):
    orientation_year = models.BooleanField(null=True, blank=True)
    orientation_month = models.BooleanField(null=True, blank=True)
    orientation_city = models.BooleanField(null=True, blank=True)
    orientation_hospital = models.BooleanField(null=True, blank=True)
    objects_named = models.PositiveSmallIntegerField(null=True, blank=True, validators=[MaxValueValidator(3)])
    follows_commands = models.BooleanField(null=True, blank=True)
    writes_sentence = models.BooleanField(null=True, blank=True)
    counts_backwards = models.BooleanField(null=True, blank=True)
    ice_unable_awake_aphasic = models.BooleanField("ICE 0: awake with global aphasia", default=False)
    ice_score = models.PositiveSmallIntegerField("ICE score", null=True, blank=True, editable=False)
    capd_total = models.PositiveSmallIntegerField("CAPD total (children)", null=True, blank=True,
                                                  validators=[MaxValueValidator(32)])
    capd_unable = models.BooleanField("CAPD not possible (unarousable)", default=False)
    developmental_delay = models.BooleanField(default=False)
    consciousness = models.CharField(max_length=25, choices=_choices(grading.Consciousness), default="alert")
    consciousness_other_cause = models.BooleanField(default=False)
    seizure = models.CharField(max_length=25, choices=_choices(grading.Seizure), default="none")
    motor = models.CharField(max_length=25, choices=_choices(grading.MotorFinding), default="none")
    cerebral_oedema = models.CharField(max_length=30, choices=_choices(grading.CerebralOedema), default="none")
    death_due_to_icans = models.BooleanField("death due to ICANS", default=False)

    class Meta:
        verbose_name = "ICANS assessment"
        ordering = ["event", "assessed_at", "pk"]
        constraints = [
            models.CheckConstraint(condition=Q(override_grade__isnull=True) | ~Q(override_reason=""),
                                   name="icansassessment_override_has_reason"),
        ]

    def __str__(self) -> str:
        return f"ICANS assessment {self.assessed_at.astimezone(dt.UTC):%Y-%m-%d %H:%M} UTC: grade {self.grade}"


@audited
class ConcomitantMedication(TimeStampedModel):
    class Drug(models.TextChoices):
        TOCILIZUMAB = "tocilizumab", "Tocilizumab"
        SILTUXIMAB = "siltuximab", "Siltuximab"
        DEXAMETHASONE = "dexamethasone", "Dexamethasone"
        METHYLPREDNISOLONE = "methylprednisolone", "Methylprednisolone"
        ANAKINRA = "anakinra", "Anakinra"
        RUXOLITINIB = "ruxolitinib", "Ruxolitinib"
        PARACETAMOL = "paracetamol", "Paracetamol (antipyretic)"
        LEVETIRACETAM = "levetiracetam", "Levetiracetam"
        IVIG = "ivig", "Intravenous immunoglobulin"
        OTHER = "other", "Other"

    # Given before a CRS assessment, these make the fever requirement met (ASTCT fever masking).
    FEVER_MASKING = frozenset({"tocilizumab", "siltuximab", "dexamethasone", "methylprednisolone", "paracetamol"})

    class Route(models.TextChoices):
        IV = "iv", "Intravenous"
        ORAL = "oral", "Oral"
        SC = "sc", "Subcutaneous"
        INTRATHECAL = "it", "Intrathecal"
        OTHER = "other", "Other"

    subject = models.ForeignKey(Subject, on_delete=models.PROTECT, related_name="medications")
    adverse_event = models.ForeignKey(AdverseEvent, on_delete=models.PROTECT, null=True, blank=True,
                                      related_name="medications", help_text="The event it treats, if any.")
    drug = models.CharField(max_length=20, choices=Drug.choices)
    drug_name = models.CharField(max_length=100, blank=True, help_text="Required for 'Other'.")
    dose = models.DecimalField(max_digits=9, decimal_places=3, validators=[MinValueValidator(Decimal("0.001"))])
    dose_unit = models.CharField(max_length=10, choices=[("mg", "mg"), ("mg/kg", "mg/kg"), ("g", "g"),
                                                         ("mg/m2", "mg/m²"), ("g/kg", "g/kg")])
    route = models.CharField(max_length=6, choices=Route.choices)
    given_at = models.DateTimeField()
    indication = models.CharField(max_length=200, blank=True)
    recorded_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")

    class Meta:
        ordering = ["subject", "given_at", "pk"]
        constraints = [
            models.CheckConstraint(condition=~Q(drug="other") | ~Q(drug_name=""),
                                   name="concomitantmedication_other_is_named"),
        ]

    def __str__(self) -> str:
        name = self.drug_name or self.get_drug_display()
        given = self.given_at.astimezone(dt.UTC)
        return f"{name} {self.dose} {self.dose_unit} {self.get_route_display()} at {given:%Y-%m-%d %H:%M} UTC"


@audited
class SaeReport(TimeStampedModel):
    """An expedited report of a serious adverse event: initial or follow-up, sent to one recipient."""

    class Kind(models.TextChoices):
        INITIAL = "initial", "Initial report"
        FOLLOW_UP = "follow_up", "Follow-up report"

    class Recipient(models.TextChoices):
        SPONSOR = "sponsor", "Sponsor"
        ETHICS = "ethics", "Ethics committee"
        REGULATOR = "regulator", "Regulatory authority"

    event = models.ForeignKey(AdverseEvent, on_delete=models.PROTECT, related_name="sae_reports")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    recipient = models.CharField(max_length=10, choices=Recipient.choices)
    sent_at = models.DateTimeField(help_text="When the report was sent.")
    reference = models.CharField(max_length=100, blank=True, help_text="e.g. the sponsor's case number.")
    recorded_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")

    class Meta:
        ordering = ["event", "sent_at", "pk"]
        verbose_name = "SAE report"
        constraints = [
            models.UniqueConstraint(fields=["event", "recipient"], condition=Q(kind="initial"),
                                    name="saereport_one_initial_per_recipient"),
        ]

    def __str__(self) -> str:
        return (f"{self.get_kind_display()} to {self.get_recipient_display().lower()} at "
                f"{self.sent_at.astimezone(dt.UTC):%Y-%m-%d %H:%M} UTC")


__all__ = ["AdverseEvent", "Attribution", "ConcomitantMedication", "CrsAssessment", "IcansAssessment", "SaeReport"]
