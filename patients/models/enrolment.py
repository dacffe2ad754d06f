"""Subjects and their screening and enrolment records.

Rows are written only by the services in ``patients.services``; every table here is tracked by
PostgreSQL triggers (django-pghistory), so each insert, update and delete leaves an audit row.
"""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q

from config import display
from config.audit import audited
from trials.models import Antigen, Cohort, EligibilityCriterion, ScfvOrigin, Site, TimeStampedModel, Trial


class SubjectStatus(models.TextChoices):
    SCREENING = "screening", "Screening"
    ELIGIBLE = "eligible", "Eligible"
    SCREEN_FAILED = "screen_failed", "Screen failed"
    ENROLLED = "enrolled", "Enrolled"
    APHERESED = "apheresed", "Apheresed"
    LYMPHODEPLETED = "lymphodepleted", "Lymphodepleted"
    INFUSED = "infused", "Infused"
    FOLLOW_UP = "follow_up", "Follow-up"
    OFF_STUDY = "off_study", "Off study"


class OffStudyReason(models.TextChoices):
    CONSENT_WITHDRAWN = "consent_withdrawn", "Consent withdrawn"
    DEATH = "death", "Death"
    LOST_TO_FOLLOW_UP = "lost_to_follow_up", "Lost to follow-up"
    INVESTIGATOR_DECISION = "investigator_decision", "Investigator decision"
    COMPLETED = "completed", "Study completed"
    MANUFACTURING_FAILURE = "manufacturing_failure", "Product could not be manufactured"
    OTHER = "other", "Other"


class Diagnosis(models.TextChoices):
    B_ALL = "b_all", "B-cell acute lymphoblastic leukaemia (B-ALL)"
    T_ALL = "t_all", "T-cell acute lymphoblastic leukaemia (T-ALL)"
    AML = "aml", "Acute myeloid leukaemia (AML)"
    MPAL = "mpal", "Mixed-phenotype acute leukaemia (MPAL)"
    CML_BP = "cml_bp", "Chronic myeloid leukaemia in blast phase"
    B_NHL = "b_nhl", "B-cell non-Hodgkin lymphoma"
    MM = "mm", "Multiple myeloma"
    OTHER = "other", "Other"


class CnsStatus(models.TextChoices):
    CNS1 = "CNS1", "CNS1 (no blasts in CSF)"
    CNS2 = "CNS2", "CNS2 (<5 WBC/µL with blasts)"
    CNS3 = "CNS3", "CNS3 (≥5 WBC/µL with blasts, or signs)"
    UNKNOWN = "unknown", "Not assessed"


# A site's screening log number: letters, digits and . _ - (no spaces, no "/", which separates the site
# code from the number in a subject reference such as "BJ01/SCR-017").
SCREENING_NUMBER_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$"
SCREENING_NUMBER_MESSAGE = "Use letters, digits, '.', '_' and '-' only (e.g. SCR-017)."


@audited
class Subject(TimeStampedModel):
    """A trial participant, known only by a pseudonymous code (never a name or a birth date)."""

    class Sex(models.TextChoices):
        FEMALE = "F", "Female"
        MALE = "M", "Male"
        UNKNOWN = "U", "Unknown"

    trial = models.ForeignKey(Trial, on_delete=models.PROTECT, related_name="subjects")
    site = models.ForeignKey(Site, on_delete=models.PROTECT, related_name="subjects")
    code = models.CharField(max_length=40, editable=False, help_text="Generated per trial and site.")
    status = models.CharField(
        max_length=15, choices=SubjectStatus.choices, default=SubjectStatus.SCREENING, editable=False
    )
    screening_number = models.CharField(
        max_length=40, blank=True, validators=[RegexValidator(SCREENING_NUMBER_PATTERN, SCREENING_NUMBER_MESSAGE)],
        help_text="The site's own screening log number, if it keeps one (unique at the site in the trial; "
                  "never a medical record number).",
    )
    screened_on = models.DateField()
    sex = models.CharField(max_length=1, choices=Sex.choices)
    age_at_consent = models.PositiveSmallIntegerField(
        null=True, blank=True, validators=[MaxValueValidator(120)], help_text="Years, recorded with consent."
    )
    cohort = models.ForeignKey(Cohort, on_delete=models.PROTECT, null=True, blank=True, related_name="subjects")
    # Disease characteristics, as CAR-T publications report them.
    diagnosis = models.CharField(max_length=10, choices=Diagnosis.choices)
    fusion_genes = ArrayField(
        models.CharField(max_length=40), blank=True, default=list,
        help_text="e.g. BCR::ABL1, TCF3::HLF (E2A-HLF), KMT2A::AFF1 (MLL-AF4)",
    )
    mutations = ArrayField(
        models.CharField(max_length=40), blank=True, default=list, help_text="e.g. TP53, IKZF1 deletion"
    )
    marrow_blasts_pct = models.DecimalField(
        max_digits=5, decimal_places=2, null=True, blank=True,
        validators=[MinValueValidator(Decimal(0)), MaxValueValidator(Decimal(100))],
        help_text="Bone marrow blasts at screening, %",
    )
    extramedullary_disease = models.BooleanField(default=False)
    cns_status = models.CharField("CNS status", max_length=8, choices=CnsStatus.choices, default=CnsStatus.UNKNOWN)
    prior_allo_hsct = models.BooleanField("prior allogeneic HSCT", default=False)
    prior_cart = models.BooleanField("prior CAR-T therapy", default=False)
    prior_cart_target = models.CharField(max_length=10, choices=Antigen.choices, blank=True)
    prior_cart_scfv_origin = models.CharField(max_length=12, choices=ScfvOrigin.choices, blank=True)
    prior_lines = models.PositiveSmallIntegerField(
        "prior lines of therapy", default=0, validators=[MaxValueValidator(30)]
    )
    enrolled_on = models.DateField(null=True, blank=True, editable=False)
    off_study_on = models.DateField(null=True, blank=True, editable=False)
    off_study_reason = models.CharField(max_length=25, choices=OffStudyReason.choices, blank=True, editable=False)
    off_study_detail = models.TextField(blank=True, editable=False)

    class Meta:
        ordering = ["trial__code", "code"]
        constraints = [
            models.UniqueConstraint(fields=["trial", "code"], name="subject_unique_code"),
            models.UniqueConstraint(fields=["trial", "site", "screening_number"], condition=~Q(screening_number=""),
                                    name="subject_unique_screening_number",
                                    violation_error_message="This screening number is already used at the site."),
            models.CheckConstraint(
                condition=Q(prior_cart=True) | (Q(prior_cart_target="") & Q(prior_cart_scfv_origin="")),
                name="subject_prior_cart_details_need_prior_cart",
                violation_error_message="Prior CAR-T target and scFv origin need 'prior CAR-T therapy'.",
            ),
            models.CheckConstraint(
                condition=~Q(status="off_study") | (Q(off_study_on__isnull=False) & ~Q(off_study_reason="")),
                name="subject_off_study_has_date_and_reason",
            ),
        ]

    def __str__(self) -> str:
        return self.code


@audited
class BodyMeasurement(TimeStampedModel):
    """A dated height and weight; dosing uses the latest one on or before the dosing date."""

    subject = models.ForeignKey(Subject, on_delete=models.PROTECT, related_name="measurements")
    measured_on = models.DateField()
    height_cm = models.DecimalField(
        max_digits=5, decimal_places=1, validators=[MinValueValidator(Decimal(30)), MaxValueValidator(Decimal(250))]
    )
    weight_kg = models.DecimalField(
        max_digits=5, decimal_places=1, validators=[MinValueValidator(Decimal(1)), MaxValueValidator(Decimal(350))]
    )
    recorded_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")

    class Meta:
        ordering = ["subject", "-measured_on", "-pk"]

    def __str__(self) -> str:
        return f"{self.measured_on}: {self.height_cm} cm, {self.weight_kg} kg"


@audited
class Consent(TimeStampedModel):
    subject = models.ForeignKey(Subject, on_delete=models.PROTECT, related_name="consents")
    version = models.CharField(max_length=40, help_text="Informed consent form version, e.g. v3.0 2024-05-01")
    consented_on = models.DateField()
    withdrawn_on = models.DateField(null=True, blank=True, editable=False)
    withdrawal_reason = models.TextField(blank=True, editable=False)
    recorded_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")

    class Meta:
        ordering = ["subject", "consented_on", "pk"]
        constraints = [
            models.CheckConstraint(
                condition=Q(withdrawn_on__isnull=True) | Q(withdrawn_on__gte=models.F("consented_on")),
                name="consent_withdrawn_after_consent",
            ),
        ]

    def __str__(self) -> str:
        state = f", withdrawn {self.withdrawn_on}" if self.withdrawn_on else ""
        return f"Consent {self.version} on {self.consented_on}{state}"


@audited
class EligibilityAssessment(TimeStampedModel):
    """An eligibility checklist against the trial's criteria, confirmed by an investigator."""

    subject = models.ForeignKey(Subject, on_delete=models.PROTECT, related_name="eligibility_assessments")
    assessed_on = models.DateField()
    assessed_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    eligible = models.BooleanField(editable=False, help_text="All inclusion criteria met and no exclusion.")
    confirmed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+", editable=False
    )
    confirmed_at = models.DateTimeField(null=True, blank=True, editable=False)

    class Meta:
        ordering = ["subject", "-assessed_on", "-pk"]

    def __str__(self) -> str:
        verdict = "eligible" if self.eligible else "not eligible"
        confirmed = "confirmed" if self.confirmed_at else "unconfirmed"
        return f"{self.assessed_on}: {verdict} ({confirmed})"


@audited
class EligibilityAnswer(models.Model):
    assessment = models.ForeignKey(EligibilityAssessment, on_delete=models.CASCADE, related_name="answers")
    criterion = models.ForeignKey(EligibilityCriterion, on_delete=models.PROTECT, related_name="+")
    met = models.BooleanField(help_text="The criterion applies to the subject (inclusion met / exclusion present).")

    class Meta:
        ordering = ["assessment", "criterion__kind", "criterion__number"]
        constraints = [
            models.UniqueConstraint(fields=["assessment", "criterion"], name="eligibilityanswer_unique")
        ]


@audited
class SubjectTransition(models.Model):
    """The subject state machine's log: who moved the subject, when, from what, to what and why."""

    subject = models.ForeignKey(Subject, on_delete=models.PROTECT, related_name="transitions")
    from_status = models.CharField(max_length=15, choices=SubjectStatus.choices, blank=True)
    to_status = models.CharField(max_length=15, choices=SubjectStatus.choices)
    effective_on = models.DateField(help_text="The clinical date of the event.")
    reason = models.TextField(blank=True)
    recorded_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    recorded_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["subject", "recorded_at", "pk"]

    def __str__(self) -> str:
        change = display.transition(self.get_from_status_display(), self.get_to_status_display())
        return f"{change} on {display.date(self.effective_on)}"


__all__ = [
    "BodyMeasurement", "CnsStatus", "Consent", "Diagnosis", "EligibilityAnswer", "EligibilityAssessment",
    "OffStudyReason", "Subject", "SubjectStatus", "SubjectTransition",
]
