"""Seed the analyte catalogue: codes, LOINC, canonical UCUM units, accepted units and factors, reference
ranges, LLOQ/ULOQ, plausibility limits, CTCAE terms and specimens (DOMAIN.md §3, §5.5-5.6, §7).

Conventions
- factor: canonical value = sent value × factor (DOMAIN §7 conversions). Every analyte also accepts its
  canonical unit with factor 1. Percentages use the UCUM unit "%".
- LOINC only where DOMAIN §7 gives one. TNF-alpha stays blank: DOMAIN §7/§9.11 marks 3167-4 unverified.
  CREAT carries 2160-0, the mass-concentration code a lab sends with mg/dL; DOMAIN §7 notes that molar
  results (umol/L) have a different, unlisted code, so a lab's mapping may override it.
- Reference ranges are illustrative catalogue defaults (typical textbook values, not from DOMAIN) used
  when no lab range is known; CTCAE grading needs the lab's own LLN/ULN (DOMAIN §3.2). Child bands are
  1-11 and 12-17 years (sex-blank), adults 18-120. Below 1 year there is no default: grade 1 stays undecided.
- LLOQ/ULOQ are example assay limits (validate per laboratory and assay); physiological_low/high are
  plausibility limits (a value outside them is an entry error), deliberately wide.

Imports no app code; the reverse deletes the analytes it created (units and ranges cascade).
"""

from django.db import migrations

PB, BM, CSF, SERUM, PLASMA = "pb", "bm", "csf", "serum", "plasma"
SERUM_PLASMA = [SERUM, PLASMA]
ANY, F, M = "", "F", "M"
CHILD, TEEN, ADULT = (1, 11), (12, 17), (18, 120)
COUNT_UNITS = {"10*9/L": 1.0, "10*3/uL": 1.0, "/uL": 0.001}
PER_UL_UNITS = {"/uL": 1.0, "cells/uL": 1.0, "{cells}/uL": 1.0, "10*9/L": 1000.0}
CYTOKINE_UNITS = {"pg/mL": 1.0, "ng/L": 1.0, "ng/mL": 1000.0}
PERCENT = {"%": 1.0}


def analyte(code, name, unit, units, *, loinc="", lloq=None, uloq=None, low=None, high=None, cutoff=None,
            term="", specimens=(), qualitative=(), ranges=()):
    """One catalogue row; `ranges` are (sex, (age_min, age_max), low, high) in the canonical unit."""
    return {"code": code, "name": name, "canonical_unit": unit, "units": {unit: 1.0, **units}, "loinc": loinc,
            "lloq": lloq, "uloq": uloq, "physiological_low": low, "physiological_high": high,
            "positivity_cutoff": cutoff, "ctcae_term": term, "specimens": list(specimens),
            "qualitative_values": list(qualitative), "ranges": list(ranges)}


def cytokine(code, name, loinc, lloq, uloq, high):
    return analyte(code, name, "pg/mL", CYTOKINE_UNITS, loinc=loinc, lloq=lloq, uloq=uloq, low=0, high=high,
                   specimens=SERUM_PLASMA)


CATALOGUE = [
    # Cellular kinetics (DOMAIN §5.5). qPCR: copies of the CAR transgene per ug genomic DNA.
    analyte("CAR_QPCR", "CAR transgene by qPCR (copies per ug genomic DNA)", "{copies}/ug", {"copies/ug": 1.0},
            lloq=50, uloq=5e6, low=0, high=1e7, specimens=[PB, BM, CSF], qualitative=["not detected"]),
    analyte("CAR_FLOW_PCT", "CAR-T cells by flow cytometry (% of CD3+ T cells)", "%", PERCENT,
            low=0, high=100, specimens=[PB, BM, CSF]),
    analyte("CAR_FLOW_ABS", "CAR-T cells by flow cytometry (cells per uL)", "/uL", PER_UL_UNITS,
            low=0, high=200_000, specimens=[PB, CSF]),
    # Cytokines and inflammation markers (CRS work-up).
    cytokine("IL6", "Interleukin 6", "26881-3", 1.5, 5_000, 1e6),
    cytokine("IL10", "Interleukin 10", "26848-2", 1.0, 5_000, 1e5),
    cytokine("IFNG", "Interferon gamma", "27415-9", 2.0, 5_000, 1e5),
    cytokine("TNFA", "Tumor necrosis factor alpha", "", 1.0, 2_000, 1e5),  # LOINC unverified (DOMAIN §9.11)
    cytokine("SCD25", "Soluble IL-2 receptor alpha (sCD25)", "", 50, 100_000, 1e6),
    analyte("CRP", "C reactive protein", "mg/L", {"mg/dL": 10.0}, loinc="1988-5", lloq=0.3, uloq=350, low=0,
            high=1_000, specimens=SERUM_PLASMA, ranges=[(ANY, (0, 120), None, 5.0)]),
    analyte("FERRITIN", "Ferritin", "ng/mL", {"ug/L": 1.0}, loinc="2276-4", low=0, high=500_000,
            specimens=SERUM_PLASMA, ranges=[(ANY, CHILD, 7, 140), (ANY, TEEN, 10, 160), (F, ADULT, 15, 150),
                                            (M, ADULT, 30, 400)]),
    analyte("FIBRINOGEN", "Fibrinogen (Clauss)", "g/L", {"mg/dL": 0.01}, loinc="3255-7", low=0, high=15,
            term="fibrinogen_decreased", specimens=[PLASMA], ranges=[(ANY, (1, 120), 2.0, 4.0)]),
    # D-dimer in fibrinogen-equivalent units; a lab sending DDU (about half of FEU) needs its own mapping.
    analyte("DDIMER", "D-dimer (fibrinogen equivalent units)", "mg/L{FEU}", {"ug/mL{FEU}": 1.0, "ug/mL": 1.0},
            low=0, high=200, specimens=[PLASMA], ranges=[(ANY, (0, 120), None, 0.5)]),
    analyte("LDH", "Lactate dehydrogenase", "U/L", {}, loinc="2532-0", low=0, high=50_000, specimens=SERUM_PLASMA,
            ranges=[(ANY, CHILD, 150, 360), (ANY, TEEN, 120, 300), (ANY, ADULT, 125, 250)]),
    # Blood counts (CTCAE "decreased" terms, graded in 10^9/L and g/L).
    analyte("WBC", "Leukocytes", "10*9/L", COUNT_UNITS, loinc="6690-2", low=0, high=1_000, term="wbc_decreased",
            specimens=[PB], ranges=[(ANY, CHILD, 5.0, 14.5), (ANY, TEEN, 4.5, 13.0), (ANY, ADULT, 4.0, 11.0)]),
    analyte("ANC", "Neutrophils (absolute count)", "10*9/L", COUNT_UNITS, loinc="751-8", low=0, high=500,
            term="neutrophil_decreased", specimens=[PB],
            ranges=[(ANY, CHILD, 1.5, 8.0), (ANY, TEEN, 1.8, 8.0), (ANY, ADULT, 2.0, 7.5)]),
    analyte("LYMPH", "Lymphocytes (absolute count)", "10*9/L", COUNT_UNITS, loinc="731-0", low=0, high=1_000,
            term="lymphocyte_decreased", specimens=[PB],
            ranges=[(ANY, CHILD, 1.5, 7.0), (ANY, TEEN, 1.2, 5.2), (ANY, ADULT, 1.0, 4.0)]),
    analyte("PLT", "Platelets", "10*9/L", COUNT_UNITS, loinc="777-3", low=0, high=3_000, term="platelet_decreased",
            specimens=[PB], ranges=[(ANY, CHILD, 150, 450), (ANY, TEEN, 150, 450), (ANY, ADULT, 150, 400)]),
    # 1 mmol/L haemoglobin (as Fe, monomer) = 16.11 g/L; CTCAE 100 g/L ~ 6.2 mmol/L (DOMAIN §3.3).
    analyte("HGB", "Hemoglobin", "g/L", {"g/dL": 10.0, "mmol/L": 16.11}, loinc="718-7", low=10, high=250,
            term="anaemia", specimens=[PB],
            ranges=[(ANY, CHILD, 110, 145), (ANY, TEEN, 115, 160), (F, ADULT, 120, 155), (M, ADULT, 130, 170)]),
    # Chemistry (CTCAE "increased" terms).
    analyte("ALT", "Alanine aminotransferase", "U/L", {}, loinc="1742-6", low=0, high=20_000, term="alt_increased",
            specimens=SERUM_PLASMA,
            ranges=[(ANY, CHILD, 5, 40), (ANY, TEEN, 5, 40), (F, ADULT, 7, 35), (M, ADULT, 10, 50)]),
    analyte("AST", "Aspartate aminotransferase", "U/L", {}, loinc="1920-8", low=0, high=20_000, term="ast_increased",
            specimens=SERUM_PLASMA,
            ranges=[(ANY, CHILD, 10, 50), (ANY, TEEN, 10, 40), (F, ADULT, 10, 35), (M, ADULT, 10, 40)]),
    analyte("TBILI", "Bilirubin, total", "umol/L", {"mg/dL": 17.1}, loinc="1975-2", low=0, high=1_000,
            term="bilirubin_increased", specimens=SERUM_PLASMA, ranges=[(ANY, (1, 120), 3, 21)]),
    analyte("CREAT", "Creatinine", "umol/L", {"mg/dL": 88.4}, loinc="2160-0", low=5, high=3_000,
            term="creatinine_increased", specimens=SERUM_PLASMA,
            ranges=[(ANY, CHILD, 15, 60), (ANY, TEEN, 40, 90), (F, ADULT, 45, 90), (M, ADULT, 60, 110)]),
    # Disease and response (DOMAIN §4) and B-cell aplasia (§5.6).
    analyte("MARROW_BLASTS", "Bone marrow blasts (% of nucleated cells)", "%", PERCENT, low=0, high=100,
            specimens=[BM]),
    analyte("MRD", "Minimal residual disease (% of nucleated cells)", "%", PERCENT, low=0, high=100,
            specimens=[BM, PB], qualitative=["negative", "positive"]),
    analyte("CD19_B", "CD19+ B cells by flow cytometry (% of lymphocytes)", "%", PERCENT, low=0, high=100,
            specimens=[PB, BM]),
    analyte("CD19_B_ABS", "CD19+ B cells by flow cytometry (cells per uL)", "/uL", PER_UL_UNITS, low=0,
            high=1_000_000, specimens=[PB]),
    analyte("CD38_BLASTS", "CD38+ blasts by flow cytometry (% of blasts)", "%", PERCENT, low=0, high=100,
            specimens=[BM, PB]),
    analyte("CHIMERISM", "Donor chimerism (% donor)", "%", PERCENT, low=0, high=100, specimens=[PB, BM]),
    # BCR::ABL1/ABL1 on the International Scale can exceed 100%.
    analyte("BCR_ABL1_IS", "BCR::ABL1 transcripts, International Scale (%)", "%", PERCENT, low=0, high=1_000,
            specimens=[PB, BM], qualitative=["not detected"]),
    # positivity_cutoff 0.2 is an example assay cut-off; each validated assay sets its own.
    analyte("ANTI_CAR_AB", "Anti-CAR antibody by ELISA (OD450)", "{OD}", {"OD": 1.0}, low=0, high=5, cutoff=0.2,
            specimens=[SERUM], qualitative=["negative", "positive"]),
]


def seed(apps, schema_editor):
    Analyte = apps.get_model("assays", "Analyte")
    AnalyteUnit = apps.get_model("assays", "AnalyteUnit")
    ReferenceRange = apps.get_model("assays", "ReferenceRange")
    for row in CATALOGUE:
        fields = {k: v for k, v in row.items() if k not in ("units", "ranges")}
        created = Analyte.objects.create(**fields)
        AnalyteUnit.objects.bulk_create(AnalyteUnit(analyte=created, unit=unit, factor=factor)
                                        for unit, factor in row["units"].items())
        ReferenceRange.objects.bulk_create(
            ReferenceRange(analyte=created, sex=sex, age_min_years=ages[0], age_max_years=ages[1], low=low, high=high)
            for sex, ages, low, high in row["ranges"])


def unseed(apps, schema_editor):
    Analyte = apps.get_model("assays", "Analyte")
    Analyte.objects.filter(code__in=[row["code"] for row in CATALOGUE]).delete()


class Migration(migrations.Migration):

    dependencies = [("assays", "0001_catalogue_draws_results")]

    operations = [migrations.RunPython(seed, unseed)]
