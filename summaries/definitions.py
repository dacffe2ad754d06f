"""The definitions a summary applies (issue 12; DOMAIN.md 4.3-4.4, 5.5, 5.6), named once and stated in its output."""

from __future__ import annotations

QPCR = "CAR_QPCR"  # CAR transgene, copies/ug genomic DNA
ANC = "ANC"  # 10^9/L
PLATELETS = "PLT"  # 10^9/L
B_CELLS = "CD19_B"  # CD19+ B cells, % of lymphocytes
KINETIC_ANALYTES = (QPCR, ANC, PLATELETS, B_CELLS)
# Read as a daily lowest only (haematologic toxicity): loaded as one sample per subject and site-local day.
DAILY_LOWEST_ANALYTES = (ANC, PLATELETS)

ANC_SEVERE_BELOW = 0.5  # severe neutropenia: ANC < 0.5 x10^9/L
ANC_RECOVERED_AT = 0.5  # neutrophil recovery: first of three consecutive values >= 0.5
PLATELETS_RECOVERED_AT = 20.0  # platelet recovery: first of three consecutive values >= 20
RECOVERY_RUN = 3
B_CELL_APLASIA_BELOW_PCT = 1.0  # DOMAIN 5.6: CD19+ B cells < 1 % of lymphocytes
AUC_END_DAY = 28
DAYS_PER_MONTH = 30.4375  # DOMAIN 4.4
CORTICOSTEROIDS = frozenset({"dexamethasone", "methylprednisolone"})
TOCILIZUMAB = "tocilizumab"

CR_CRI = frozenset({"cr", "cri", "cr_mrd_neg", "cri_mrd_neg"})
MRD_NEGATIVE = frozenset({"cr_mrd_neg", "cri_mrd_neg"})
DISEASE_EVENTS = frozenset({"relapse", "pd"})  # relapse or progression after infusion
RESPONSE_KEYS = {"cr": "CR", "cr_mrd_neg": "CR", "cri": "CRi", "cri_mrd_neg": "CRi", "pr": "PR", "nr": "NR",
                 "pd": "PD", "relapse": "PD"}

LLOQ_RULE = ("CAR transgene values below the LLOQ count as 0 before Tmax and as missing after it (DOMAIN 5.5); "
             "the pre-infusion value at day 0 is the course's baseline when quantifiable, else 0.")
AUC_RULE = ("AUC day 0-28: linear trapezoid over the samples of course days 0 to 28 (course days from the "
            "subject's timeline), without extrapolation; copies/ug x day.")


def antigen_analyte(antigen: str) -> str:
    """The catalogue analyte measuring a target antigen on blasts, e.g. CD38 -> CD38_BLASTS (% of blasts)."""
    return f"{antigen}_BLASTS"
