"""Load the demo trial once: a CD19 CAR-T study for relapsed B-ALL, with two sites and a user per role.

Running it again changes nothing. Subjects are built through the same services as the admin, so the
demo data obeys the protocol rules and leaves a full audit trail.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from config.audit import AuditedCommand
from trials.models import (
    Antigen,
    Cohort,
    DoseLevel,
    EligibilityCriterion,
    LymphodepletionRegimen,
    Membership,
    Product,
    RegimenAgent,
    RegistryIdentifier,
    ScfvOrigin,
    Site,
    Trial,
    TrialSite,
    Visit,
)

TRIAL_CODE = "CART19-ALL"
DEMO_PASSWORD = "demo-cart-2026"
R = Membership.Role
USERS = [
    # username, name, role, site code (None = trial-wide)
    ("admin", "System Administrator", None, None),
    ("coord.bj", "Li Na (coordinator, Beijing)", R.COORDINATOR, "BJ01"),
    ("inv.bj", "Dr Wang Qiang (investigator, Beijing)", R.INVESTIGATOR, "BJ01"),
    ("coord.sh", "Chen Jing (coordinator, Shanghai)", R.COORDINATOR, "SH02"),
    ("inv.sh", "Dr Zhou Min (investigator, Shanghai)", R.INVESTIGATOR, "SH02"),
    ("monitor.bj", "Anna Berg (monitor, Beijing)", R.MONITOR, "BJ01"),
    ("dm", "Sofia Ruiz (data manager, all sites)", R.DATA_MANAGER, None),
]
VISITS = [
    ("SCR", "Screening", -28, 0, 0, ["MARROW_BLASTS", "MRD", "CD19_B", "CRP", "FERRITIN"]),
    ("D0", "Day 0 infusion", 0, 0, 0, ["CAR_QPCR", "IL6", "CRP", "FERRITIN"]),
    ("D4", "Day 4", 4, 1, 1, ["CAR_QPCR", "CAR_FLOW", "IL6", "CRP", "FERRITIN", "ANC", "PLT"]),
    ("D7", "Day 7", 7, 1, 1, ["CAR_QPCR", "CAR_FLOW", "IL6", "IFNG", "CRP", "FERRITIN", "ANC", "PLT"]),
    ("D14", "Day 14", 14, 2, 2, ["CAR_QPCR", "CAR_FLOW", "IL6", "CRP", "FERRITIN", "ANC", "PLT"]),
    ("D28", "Day 28 response", 28, 3, 3, ["CAR_QPCR", "MARROW_BLASTS", "MRD", "CD19_B", "ANC", "PLT"]),
    ("M3", "Month 3", 90, 14, 14, ["CAR_QPCR", "MRD", "CD19_B"]),
]
CRITERIA = [
    ("inclusion", 1, "Relapsed or refractory CD19-positive B-ALL"),
    ("inclusion", 2, "Bone marrow blasts ≥ 5% or measurable extramedullary disease"),
    ("inclusion", 3, "Age 1 to 70 years at consent"),
    ("inclusion", 4, "Adequate organ function (ALT ≤ 5× ULN, creatinine ≤ 1.5× ULN, LVEF ≥ 45%)"),
    ("exclusion", 1, "Active uncontrolled infection"),
    ("exclusion", 2, "Active CNS3 disease"),
    ("exclusion", 3, "Active grade II-IV acute GVHD"),
]


class Command(AuditedCommand):
    help = "Load the demo CAR-T trial, its users and subjects (once; later runs change nothing)."

    def handle(self, *args: Any, **options: Any) -> None:
        if Trial.objects.filter(code=TRIAL_CODE).exists():
            self.stdout.write(f"Demo trial {TRIAL_CODE} already loaded; nothing changed.")
        else:
            with transaction.atomic():
                trial, sites = self._design()
                users = self._users(trial, sites)
                self._subjects(trial, sites, users)
                from dataqueries.checks import run_checks

                run_checks(trial)  # the automatic checks raise their first data queries
            self.stdout.write(self.style.SUCCESS(f"Demo trial {TRIAL_CODE} loaded."))
        self.stdout.write(f"Demo logins (password for all: {DEMO_PASSWORD}):")
        for username, name, _role, _site in USERS:
            self.stdout.write(f"  {username:<12} {name}")

    def _design(self) -> tuple[Trial, dict[str, Site]]:
        trial = Trial.objects.create(
            code=TRIAL_CODE, title="Humanized CD19 CAR-T cells in relapsed or refractory B-cell acute "
            "lymphoblastic leukaemia: a phase 1/2 study", phase=Trial.Phase.PHASE_1_2,
            status=Trial.Status.RECRUITING, indication="Relapsed/refractory CD19+ B-ALL",
            infusion_window_min_days=2, infusion_window_max_days=7, reinfusion_allowed=True,
        )
        # Not a registration: a real install that registers a published trial must never collide with the demo.
        RegistryIdentifier.objects.create(trial=trial, registry="other", identifier="DEMO-CART19-ALL")
        sites = {
            "BJ01": Site.objects.create(code="BJ01", name="Beijing Hematology Centre", country="CN",
                                        time_zone="Asia/Shanghai"),
            "SH02": Site.objects.create(code="SH02", name="Shanghai Children's Leukaemia Unit", country="CN",
                                        time_zone="Asia/Shanghai"),
        }
        activated = dt.date(2024, 3, 1)
        for site in sites.values():
            TrialSite.objects.create(trial=trial, site=site, status=TrialSite.Status.ACTIVE, activated_on=activated)
        Cohort.objects.create(trial=trial, code="PED", name="Paediatric (< 18 years)")
        Cohort.objects.create(trial=trial, code="ADULT", name="Adult (≥ 18 years)")
        Product.objects.create(
            trial=trial, code="HCART19", name="hCART19", target_antigens=[Antigen.CD19],
            scfv_origin=ScfvOrigin.HUMANIZED,
            costimulatory_domain=Product.Costimulatory.FOUR_1BB, vector=Product.Vector.LENTIVIRAL,
            allowed_sources=[Product.Source.AUTOLOGOUS, Product.Source.ALLOGENEIC],
        )
        DoseLevel.objects.create(trial=trial, code="DL1", cells_per_kg=Decimal("1000000"), tolerance_pct=20)
        DoseLevel.objects.create(trial=trial, code="DL2", cells_per_kg=Decimal("3000000"), tolerance_pct=20)
        regimen = LymphodepletionRegimen.objects.create(trial=trial, code="FC", name="Flu/Cy 30/250 ×3",
                                                        dose_tolerance_pct=10)
        RegimenAgent.objects.create(regimen=regimen, agent="fludarabine", dose_mg_per_m2=30, days=[-5, -4, -3])
        RegimenAgent.objects.create(regimen=regimen, agent="cyclophosphamide", dose_mg_per_m2=250, days=[-5, -4, -3])
        for code, name, day, before, after, assays in VISITS:
            Visit.objects.create(trial=trial, code=code, name=name, target_day=day, window_before_days=before,
                                 window_after_days=after, expected_assays=assays, primary_response=code == "D28")
        for kind, number, text in CRITERIA:
            EligibilityCriterion.objects.create(trial=trial, kind=kind, number=number, text=text)
        return trial, sites

    def _users(self, trial: Trial, sites: dict[str, Site]) -> dict[str, Any]:
        User = get_user_model()
        users = {}
        for username, name, role, site_code in USERS:
            first, _, last = name.partition(" (")[0].rpartition(" ")
            user = User.objects.create_user(username=username, password=DEMO_PASSWORD, first_name=first,
                                            last_name=last, is_staff=True, is_superuser=role is None,
                                            email=f"{username}@example.org")
            if role is not None:
                Membership.objects.create(user=user, trial=trial, role=role,
                                          site=sites[site_code] if site_code else None)
            users[username] = user
        return users

    def _subjects(self, trial: Trial, sites: dict[str, Site], users: dict[str, Any]) -> None:
        from patients.models import Subject
        from patients.services import enrolment, measurements

        today = timezone.now().date()
        criteria = list(EligibilityCriterion.objects.filter(trial=trial))
        all_met = {c: c.kind == "inclusion" for c in criteria}
        cohorts = {c.code: c for c in trial.cohorts.all()}

        def screen(site: str, days_ago: int, **chars: Any) -> Subject:
            return enrolment.screen_subject(trial=trial, site=sites[site], screened_on=today - dt.timedelta(days_ago),
                                            by=users[f"coord.{site[:2].lower()}"], **chars)

        def consent(subject: Subject, days_ago: int, age: int) -> None:
            coord = users[f"coord.{subject.site.code[:2].lower()}"]
            enrolment.record_consent(subject=subject, version="v2.1 2024-02-01", age_at_consent=age,
                                     consented_on=today - dt.timedelta(days_ago), by=coord)
            measurements.record_body_measurement(subject=subject, measured_on=today - dt.timedelta(days_ago),
                                                 height_cm=Decimal("165.0") if age >= 18 else Decimal("128.0"),
                                                 weight_kg=Decimal("62.0") if age >= 18 else Decimal("27.5"), by=coord)

        def eligible(subject: Subject, days_ago: int) -> None:
            site = subject.site.code[:2].lower()
            assessment = enrolment.assess_eligibility(subject=subject, assessed_on=today - dt.timedelta(days_ago),
                                                      answers=all_met, by=users[f"coord.{site}"])
            enrolment.confirm_eligibility(assessment=assessment, by=users[f"inv.{site}"])

        b_all = {"diagnosis": "b_all", "marrow_blasts_pct": Decimal("42.5"), "prior_lines": 3}
        # BJ01-0001: enrolled adult, Ph+ B-ALL relapsed after allo-HSCT.
        s1 = screen("BJ01", 40, screening_number="SCR-011", sex="M", fusion_genes=["BCR::ABL1"],
                    mutations=["IKZF1 deletion"], prior_allo_hsct=True, **b_all)
        consent(s1, 39, 34)
        eligible(s1, 35)
        enrolment.enrol_subject(subject=s1, cohort=cohorts["ADULT"], enrolled_on=today - dt.timedelta(34),
                                by=users["coord.bj"])
        self._treat(s1, users, today)
        # BJ01-0002: eligible child with KMT2A::AFF1, awaiting enrolment.
        s2 = screen("BJ01", 12, screening_number="SCR-014", sex="F", fusion_genes=["KMT2A::AFF1"], cns_status="CNS2",
                    **b_all)
        consent(s2, 11, 9)
        eligible(s2, 8)
        # BJ01-0003: consented, in screening.
        s3 = screen("BJ01", 5, screening_number="SCR-017", sex="M", fusion_genes=["TCF3::HLF"], mutations=["TP53"],
                    **b_all)
        consent(s3, 4, 15)
        # SH02-0001: screen failure (CNS3).
        s4 = screen("SH02", 30, sex="F", cns_status="CNS3", **b_all)
        consent(s4, 29, 12)
        enrolment.record_screen_failure(subject=s4, failed_on=today - dt.timedelta(25),
                                        reason="Exclusion 2: active CNS3 disease on screening lumbar puncture.",
                                        by=users["coord.sh"])
        # SH02-0002: enrolled child after prior murine CD19 CAR-T.
        s5 = screen("SH02", 50, sex="M", prior_cart=True, prior_cart_target="CD19", prior_cart_scfv_origin="murine",
                    **b_all)
        consent(s5, 49, 7)
        eligible(s5, 45)
        enrolment.enrol_subject(subject=s5, cohort=cohorts["PED"], enrolled_on=today - dt.timedelta(44),
                                by=users["coord.sh"])
        # SH02-0003: withdrew consent during screening.
        s6 = screen("SH02", 20, sex="F", **b_all)
        consent(s6, 19, 16)
        enrolment.withdraw_consent(subject=s6, withdrawn_on=today - dt.timedelta(15),
                                   reason="Family chose commercial therapy elsewhere.", by=users["coord.sh"])
        # SH02-0004: screening, not yet consented.
        screen("SH02", 1, sex="M", **b_all)

    def _treat(self, subject: Any, users: dict[str, Any], today: dt.date) -> None:
        """BJ01-0001's course: apheresis, lot, Flu/Cy, infusion on day 0, grade 2 CRS, tocilizumab, CR at day 14."""
        from patients.services import outcome, safety, treatment

        coord = users["coord.bj"]
        ago = lambda n: today - dt.timedelta(days=n)  # noqa: E731
        noon = lambda day: dt.datetime.combine(day, dt.time(4), tzinfo=dt.UTC)  # noqa: E731 (12:00 in Beijing)
        collection = treatment.record_collection(subject=subject, collection_id="AP-BJ01-0001-1", collected_on=ago(32),
                                                 cd3_cells_1e9=Decimal("2.6"), by=coord)
        lot = treatment.register_lot(subject=subject, product=subject.trial.products.get(), lot_number="HC19-24-0117",
                                     source="autologous", collection=collection, by=coord)
        treatment.release_lot(lot=lot, release_date=ago(26), viability_pct=Decimal("93.5"),
                              car_positive_pct=Decimal("38.2"), total_viable_car_cells=Decimal("180000000"),
                              qc_pass=True, by=coord)
        regimen = subject.trial.regimens.get()
        course = treatment.start_lymphodepletion(subject=subject, regimen=regimen, planned_infusion_on=ago(22),
                                                 by=coord)
        for agent in regimen.agents.all():
            for day in agent.days:
                planned = (agent.dose_mg_per_m2 * course.bsa_m2).quantize(Decimal("0.1"))
                treatment.record_lymphodepletion_dose(course=course, agent=agent, given_on=ago(22 - day),
                                                      administered_mg=planned, by=coord)
        treatment.record_infusion(subject=subject, lot=lot, dose_level=subject.trial.dose_levels.get(code="DL1"),
                                  cells_per_kg=Decimal("1000000"), infused_at=noon(ago(22)), by=coord)
        crs = safety.record_adverse_event(subject=subject, by=coord, data=safety.EventInput(
            category="crs", term="Cytokine release syndrome", meddra_code="10052015", onset_on=ago(20),
            resolved_on=ago(16), related_to_product="definite", related_to_lymphodepletion="unlikely",
            outcome="recovered"))
        safety.record_crs_assessment(event=crs, assessed_at=noon(ago(20)), by=coord, components={
            "max_temp_c": Decimal("39.4"), "hypotension": True, "o2_device": "none"})
        safety.record_medication(subject=subject, adverse_event=crs, drug="tocilizumab", dose=Decimal("8"),
                                 dose_unit="mg/kg", route="iv", given_at=noon(ago(20)) + dt.timedelta(hours=2),
                                 indication="CRS grade 2", by=coord)
        safety.record_crs_assessment(event=crs, assessed_at=noon(ago(19)), by=coord, components={
            "max_temp_c": Decimal("37.2"), "hypotension": False, "o2_device": "low_flow_nc",
            "o2_flow_lpm": Decimal("2")})
        outcome.record_response(subject=subject, assessed_on=ago(8), category="cr_mrd_neg", by=coord,
                                visit=subject.trial.visits.get(code="D14"), marrow_blasts_pct=Decimal("0.8"),
                                mrd_flow_pct=Decimal("0.001"), mrd_sensitivity_pct=Decimal("0.001"),
                                extramedullary_status="none", cns_status="CNS1")
        from signatures.services import sign

        # The investigator reviews and signs the casebook (a later change would invalidate the signature).
        sign(subject=subject, meaning="review", password=DEMO_PASSWORD, by=users["inv.bj"])
