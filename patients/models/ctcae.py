"""The CTCAE v5.0 term dictionary: each term with its MedDRA code, system organ class and allowed grades.

Adverse events other than CRS and ICANS are coded against it (DOMAIN §3). Grade 0 is never an adverse
event, and not every term has every grade: laboratory terms stop at 4, Febrile neutropenia starts at 3.
"""

from __future__ import annotations

from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models import Q

from config.audit import audited
from trials.models import TimeStampedModel

CTCAE_VERSION = "CTCAE v5.0"
OTHER_SPECIFY = "Other, specify"


@audited
class CtcaeTerm(TimeStampedModel):
    term = models.CharField(max_length=200, unique=True, help_text="CTCAE v5.0 term (a MedDRA LLT).")
    meddra_code = models.CharField("MedDRA code", max_length=10, blank=True,
                                   help_text="MedDRA LLT/PT code as the CTCAE lists it; blank when not yet known.")
    system_organ_class = models.CharField("MedDRA system organ class", max_length=200, blank=True)
    allowed_grades = ArrayField(models.PositiveSmallIntegerField(), size=5,
                                help_text="The grades the term defines (1-5; a '-' in the CTCAE is not allowed).")
    definition = models.TextField(blank=True)
    version = models.CharField(max_length=20, default=CTCAE_VERSION, editable=False)

    class Meta:
        ordering = ["term"]
        verbose_name = "CTCAE term"
        constraints = [
            models.CheckConstraint(condition=Q(allowed_grades__contained_by=[1, 2, 3, 4, 5])
                                   & Q(allowed_grades__len__gt=0),
                                   name="ctcaeterm_grades_one_to_five",
                                   violation_error_message="Allowed grades are 1 to 5 (grade 0 is never an AE)."),
            models.UniqueConstraint(fields=["meddra_code"], condition=~Q(meddra_code=""),
                                    name="ctcaeterm_unique_meddra_code"),
        ]

    def __str__(self) -> str:
        code = f" ({self.meddra_code})" if self.meddra_code else ""
        return f"{self.term}{code}"

    @property
    def is_other(self) -> bool:
        """An "Other, specify" term: the event carries a verbatim term and a system organ class."""
        return self.term.endswith(OTHER_SPECIFY)

    def grades_label(self) -> str:
        return ", ".join(str(grade) for grade in sorted(self.allowed_grades))


__all__ = ["CTCAE_VERSION", "OTHER_SPECIFY", "CtcaeTerm"]
