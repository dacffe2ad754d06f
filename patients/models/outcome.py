"""Outcome: response assessments at protocol visits and follow-up (HSCT, last contact, death, lost)."""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

from config.audit import audited
from patients.models.enrolment import CnsStatus, Subject
from trials.models import TimeStampedModel, Visit

PCT = [MinValueValidator(Decimal(0)), MaxValueValidator(Decimal(100))]


@audited
class ResponseAssessment(TimeStampedModel):
    class Category(models.TextChoices):
        CR_MRD_NEG = "cr_mrd_neg", "CR, MRD-negative"
        CRI_MRD_NEG = "cri_mrd_neg", "CRi, MRD-negative"
        CR = "cr", "CR (complete remission)"
        CRI = "cri", "CRi (incomplete count recovery)"
        PR = "pr", "Partial response"
        NR = "nr", "No response"
        PD = "pd", "Progressive disease"
        RELAPSE = "relapse", "Relapse"

    class AntigenStatus(models.TextChoices):
        POSITIVE = "positive", "Target antigen positive"
        NEGATIVE = "negative", "Target antigen negative (antigen escape)"
        DIM = "dim", "Target antigen dim"
        LINEAGE_SWITCH = "lineage_switch", "Lineage switch"
        UNKNOWN = "unknown", "Not assessed"

    class EmdStatus(models.TextChoices):
        NONE = "none", "No extramedullary disease"
        PRESENT = "present", "Extramedullary disease present"
        NOT_ASSESSED = "not_assessed", "Not assessed"

    subject = models.ForeignKey(Subject, on_delete=models.PROTECT, related_name="responses")
    visit = models.ForeignKey(Visit, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    assessed_on = models.DateField()
    marrow_blasts_pct = models.DecimalField(max_digits=5, decimal_places=2, null=True, blank=True, validators=PCT)
    mrd_flow_pct = models.DecimalField("flow MRD (%)", max_digits=9, decimal_places=6, null=True, blank=True,
                                       validators=PCT)
    mrd_sensitivity_pct = models.DecimalField("MRD assay sensitivity (%)", max_digits=9, decimal_places=6,
                                              null=True, blank=True, validators=PCT)
    bcr_abl1_is_pct = models.DecimalField("BCR::ABL1 IS (%)", max_digits=9, decimal_places=4, null=True,
                                          blank=True, validators=[MinValueValidator(Decimal(0))])
    extramedullary_status = models.CharField(max_length=15, choices=EmdStatus.choices,
                                             default=EmdStatus.NOT_ASSESSED)
    cns_status = models.CharField("CNS status", max_length=8, choices=CnsStatus.choices, default=CnsStatus.UNKNOWN)
    category = models.CharField(max_length=12, choices=Category.choices)
    antigen_status = models.CharField(max_length=15, choices=AntigenStatus.choices, blank=True,
                                      help_text="For relapse: the target antigen on the relapsed blasts.")
    recorded_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")

    class Meta:
        ordering = ["subject", "assessed_on", "pk"]
        constraints = [
            models.CheckConstraint(condition=~Q(category="relapse") | ~Q(antigen_status=""),
                                   name="responseassessment_relapse_has_antigen_status",
                                   violation_error_message="A relapse records the target antigen's status."),
        ]

    def __str__(self) -> str:
        return f"{self.get_category_display()} on {self.assessed_on}"


@audited
class FollowUp(TimeStampedModel):
    class Kind(models.TextChoices):
        ALLO_HSCT = "allo_hsct", "Allogeneic HSCT after CAR-T"
        LAST_CONTACT = "last_contact", "Last contact (alive)"
        DEATH = "death", "Death"
        LOST = "lost", "Lost to follow-up"
        NEW_THERAPY = "new_therapy", "New anticancer therapy"

    subject = models.ForeignKey(Subject, on_delete=models.PROTECT, related_name="follow_ups")
    kind = models.CharField(max_length=15, choices=Kind.choices)
    event_on = models.DateField()
    cause_of_death = models.CharField(max_length=200, blank=True)
    cause_of_death_unknown = models.BooleanField(
        default=False, help_text="The cause of death is not known (leave the cause empty); a blank cause alone "
                                 "is not accepted.")
    detail = models.TextField(blank=True)
    recorded_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")

    class Meta:
        verbose_name = "follow-up"
        ordering = ["subject", "event_on", "pk"]
        constraints = [
            models.CheckConstraint(condition=~Q(kind="death") | ~Q(cause_of_death="") | Q(cause_of_death_unknown=True),
                                   name="followup_death_has_cause",
                                   violation_error_message="A death records its cause, or that it is unknown."),
            models.CheckConstraint(condition=Q(cause_of_death_unknown=False) | (Q(kind="death") & Q(cause_of_death="")),
                                   name="followup_unknown_cause_is_a_death_without_cause",
                                   violation_error_message="Only a death without a cause text has an unknown cause."),
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} on {self.event_on}"


__all__ = ["FollowUp", "ResponseAssessment"]
