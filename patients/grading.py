"""ASTCT 2019 consensus grading of CRS and ICANS (DOMAIN.md §1 and §2).

Pure functions over plain values, with no Django imports. The models store the raw observations,
call these functions and keep the grade together with `algorithm` and `flags` (DOMAIN §0 rule 1).
A flag means "the grade rests on an assumption or a data gap a person should review" (DOMAIN §9).
"""

from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum

ALGORITHM_CRS = "ASTCT 2019"
ALGORITHM_ICANS = "ASTCT 2019"

FEVER_THRESHOLD_C = Decimal("38.0")
LOW_FLOW_NC_MAX_LPM = Decimal("6")  # a nasal cannula above this counts as high flow
TEMPERATURE_RANGE_C = (Decimal("25"), Decimal("45"))  # outside it the value is an entry error
CAPD_MAX = 32
CAPD_POSITIVE_SCREEN = 9
DEFAULT_CAPD_AGE_CUTOFF_YEARS = 12  # "< 12 → CAPD"; DOMAIN §9.4: sources differ, so it is a parameter
MAX_GRADE = 5
# The ICE item fields of IcansInputs, which are also the keyword arguments of ice_score().
ICE_ITEMS = ("orientation_year", "orientation_month", "orientation_city", "orientation_hospital",
             "objects_named", "follows_commands", "writes_sentence", "counts_backwards")

# CRS review flags
FLAG_VASOPRESSIN_ALONE = "vasopressin_alone_treated_as_one_pressor"  # DOMAIN §9.2
FLAG_FEVER_MASKED = "fever_requirement_met_by_prior_therapy"
FLAG_NC_FLOW_MISSING = "nasal_cannula_flow_missing_treated_as_low_flow"
FLAG_PRESSORS_WITHOUT_HYPOTENSION = "vasopressors_recorded_without_hypotension"
# ICANS review flags
FLAG_ICE_NOT_PERFORMED = "ice_not_performed"
FLAG_CAPD_NOT_PERFORMED = "capd_not_performed"
FLAG_ICE_IGNORED = "ice_recorded_but_capd_path_used"
FLAG_CAPD_IGNORED = "capd_recorded_but_ice_path_used"
FLAG_UNAROUSABLE_OTHER_CAUSE = "unarousable_other_cause_still_grades_ice_domain"


class O2Device(StrEnum):
    """Oxygen delivery device needed in the assessment window (DOMAIN §1.2)."""

    NONE = "none"
    LOW_FLOW_NC = "low_flow_nc"
    BLOW_BY = "blow_by"
    HIGH_FLOW_NC = "high_flow_nc"
    FACEMASK = "facemask"
    NON_REBREATHER = "non_rebreather"
    VENTURI = "venturi"
    CPAP = "cpap"
    BIPAP = "bipap"
    INVASIVE_VENT = "invasive_vent"


class Vasopressor(StrEnum):
    """Active IV vasopressor. Each OTHER entry is one distinct unlisted agent."""

    NOREPINEPHRINE = "norepinephrine"
    EPINEPHRINE = "epinephrine"
    DOPAMINE = "dopamine"
    PHENYLEPHRINE = "phenylephrine"
    VASOPRESSIN = "vasopressin"
    OTHER = "other"


class Consciousness(StrEnum):
    """Level of consciousness, DOMAIN §2.4 `LOC` (ALERT is its NORMAL)."""

    ALERT = "alert"
    AWAKENS_SPONTANEOUSLY = "awakens_spontaneously"
    AWAKENS_TO_VOICE = "awakens_to_voice"
    TACTILE_ONLY = "tactile_only"
    UNAROUSABLE = "unarousable"  # or needs vigorous/repeated touch; stupor, coma


class Seizure(StrEnum):
    NONE = "none"
    # Any clinical seizure that resolves rapidly, or non-convulsive EEG seizures resolving with treatment.
    RAPIDLY_RESOLVING = "rapidly_resolving"
    # Life-threatening seizure > 5 min, or repeated seizures without return to baseline in between.
    PROLONGED_OR_REPETITIVE = "prolonged_or_repetitive"


class MotorFinding(StrEnum):
    NONE = "none"
    DEEP_FOCAL_WEAKNESS = "deep_focal_weakness"  # e.g. hemiparesis, paraparesis


class CerebralOedema(StrEnum):
    """Raised intracranial pressure / cerebral oedema domain."""

    NONE = "none"
    FOCAL = "focal"  # focal/local oedema on neuroimaging
    # Diffuse oedema on imaging, decerebrate/decorticate posturing, CN VI palsy, papilloedema, Cushing's triad.
    DIFFUSE_OR_RAISED_ICP_SIGNS = "diffuse_or_raised_icp_signs"


_O2_DEVICE_GRADE = {
    O2Device.NONE: 0,
    O2Device.LOW_FLOW_NC: 2,
    O2Device.BLOW_BY: 2,
    O2Device.HIGH_FLOW_NC: 3,
    O2Device.FACEMASK: 3,
    O2Device.NON_REBREATHER: 3,
    O2Device.VENTURI: 3,
    O2Device.CPAP: 4,
    O2Device.BIPAP: 4,
    O2Device.INVASIVE_VENT: 4,
}
_CONSCIOUSNESS_GRADE = {
    Consciousness.ALERT: 0,
    Consciousness.AWAKENS_SPONTANEOUSLY: 1,
    Consciousness.AWAKENS_TO_VOICE: 2,
    Consciousness.TACTILE_ONLY: 3,
    Consciousness.UNAROUSABLE: 4,
}
_SEIZURE_GRADE = {Seizure.NONE: 0, Seizure.RAPIDLY_RESOLVING: 3, Seizure.PROLONGED_OR_REPETITIVE: 4}
_MOTOR_GRADE = {MotorFinding.NONE: 0, MotorFinding.DEEP_FOCAL_WEAKNESS: 4}
_OEDEMA_GRADE = {
    CerebralOedema.NONE: 0,
    CerebralOedema.FOCAL: 3,
    CerebralOedema.DIFFUSE_OR_RAISED_ICP_SIGNS: 4,
}


@dataclass(frozen=True)
class CrsGrade:
    grade: int  # 0..5
    algorithm: str = ALGORITHM_CRS
    flags: tuple[str, ...] = ()


@dataclass(frozen=True)
class IcansGrade:
    grade: int  # 0..5
    algorithm: str = ALGORITHM_ICANS
    flags: tuple[str, ...] = ()


# ---------------------------------------------------------------------------------------------- CRS


@dataclass(frozen=True, kw_only=True)
class CrsInputs:
    """One CRS assessment window, field names as DOMAIN §1.4. Construction rejects impossible values."""

    max_temp_c: Decimal | None = None
    fever_attributable_to_other_cause: bool = False
    prior_antipyretic_or_anticytokine: bool = False  # tocilizumab, steroid or antipyretic given before
    hypotension_present: bool = False
    hypotension_other_cause: bool = False
    vasopressors: tuple[Vasopressor, ...] = ()
    o2_device: O2Device = O2Device.NONE
    o2_flow_lpm: Decimal | None = None
    hypoxia_other_cause: bool = False
    death_due_to_crs: bool = False

    def __post_init__(self) -> None:
        _check_temperature(self.max_temp_c)
        _check_vasopressors(self.vasopressors)
        _check_oxygen(device=self.o2_device, flow_lpm=self.o2_flow_lpm)


def _check_temperature(temp_c: Decimal | None) -> None:
    if temp_c is None:
        return
    low, high = TEMPERATURE_RANGE_C
    if not Decimal(temp_c).is_finite() or not low <= temp_c <= high:
        raise ValueError(f"max_temp_c must be between {low} and {high} °C, got {temp_c}.")


def _check_vasopressors(vasopressors: Iterable[Vasopressor]) -> None:
    seen: set[Vasopressor] = set()
    for value in vasopressors:
        agent = Vasopressor(value)  # ValueError for an unknown name
        if agent in seen and agent != Vasopressor.OTHER:
            raise ValueError(f"Vasopressor {agent} is listed twice; list each active agent once.")
        seen.add(agent)


def _check_oxygen(*, device: O2Device, flow_lpm: Decimal | None) -> None:
    device = O2Device(device)  # ValueError for an unknown device
    if flow_lpm is None:
        return
    if not Decimal(flow_lpm).is_finite() or flow_lpm < 0:
        raise ValueError(f"o2_flow_lpm must be a non-negative number, got {flow_lpm}.")
    if device == O2Device.NONE and flow_lpm > 0:
        raise ValueError(f"o2_flow_lpm is {flow_lpm} L/min but o2_device is 'none'.")


def crs_grade(inputs: CrsInputs) -> CrsGrade:
    """ASTCT 2019 CRS grade (0-5) of one assessment: exactly the DOMAIN §1.5 pseudo-code."""
    if inputs.death_due_to_crs:
        return CrsGrade(grade=5)
    fever = _has_fever(inputs)
    if not (fever or inputs.prior_antipyretic_or_anticytokine):  # masking rule
        return CrsGrade(grade=0, flags=_pressor_data_flags(inputs))
    grade = max(_hypotension_grade(inputs), _hypoxia_grade(inputs))
    if grade == 0:
        # DOMAIN §9.3 design choice: a masked fever with no hypotension or hypoxia is no gradable CRS.
        grade = 1 if fever else 0
    return CrsGrade(grade=grade, flags=_crs_flags(inputs, fever=fever, grade=grade))


def _has_fever(inputs: CrsInputs) -> bool:
    return (inputs.max_temp_c is not None and inputs.max_temp_c >= FEVER_THRESHOLD_C
            and not inputs.fever_attributable_to_other_cause)


def _counted_hypotension(inputs: CrsInputs) -> bool:
    return inputs.hypotension_present and not inputs.hypotension_other_cause


def _hypotension_grade(inputs: CrsInputs) -> int:
    if not _counted_hypotension(inputs):
        return 0
    pressors = sum(1 for agent in inputs.vasopressors if agent != Vasopressor.VASOPRESSIN)
    if pressors >= 2:
        return 4
    if pressors == 1 or Vasopressor.VASOPRESSIN in inputs.vasopressors:
        return 3  # "one vasopressor, with or without vasopressin"; vasopressin alone is flagged
    return 2  # fluids only, no pressor


def _hypoxia_grade(inputs: CrsInputs) -> int:
    if inputs.hypoxia_other_cause:
        return 0
    flow = inputs.o2_flow_lpm
    if inputs.o2_device == O2Device.LOW_FLOW_NC and flow is not None and flow > LOW_FLOW_NC_MAX_LPM:
        return 3  # the device was charted as low flow, but ASTCT defines high flow by the rate
    return _O2_DEVICE_GRADE[O2Device(inputs.o2_device)]


def _crs_flags(inputs: CrsInputs, *, fever: bool, grade: int) -> tuple[str, ...]:
    flags = list(_pressor_data_flags(inputs))
    if _counted_hypotension(inputs) and set(inputs.vasopressors) == {Vasopressor.VASOPRESSIN}:
        flags.append(FLAG_VASOPRESSIN_ALONE)
    if (inputs.o2_device == O2Device.LOW_FLOW_NC and inputs.o2_flow_lpm is None
            and not inputs.hypoxia_other_cause):
        flags.append(FLAG_NC_FLOW_MISSING)
    if grade > 0 and not fever:
        flags.append(FLAG_FEVER_MASKED)
    return tuple(flags)


def _pressor_data_flags(inputs: CrsInputs) -> tuple[str, ...]:
    # The pseudo-code ignores pressors without hypotension; a site may have forgotten the tick.
    if inputs.vasopressors and not inputs.hypotension_present:
        return (FLAG_PRESSORS_WITHOUT_HYPOTENSION,)
    return ()


# -------------------------------------------------------------------------------------------- ICANS


def _is_int_between(value: object, low: int, high: int) -> bool:
    # bool is an int subclass, but True as a count or grade is an entry error.
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def ice_score(*, orientation_year: bool, orientation_month: bool, orientation_city: bool,
              orientation_hospital: bool, objects_named: int, follows_commands: bool,
              writes_sentence: bool, counts_backwards: bool) -> int:
    """ICE score 0-10 from the item answers (DOMAIN §2.1); 10 is normal."""
    answers = (orientation_year, orientation_month, orientation_city, orientation_hospital,
               follows_commands, writes_sentence, counts_backwards)
    if not all(isinstance(answer, bool) for answer in answers):
        raise ValueError("ICE orientation, command, writing and attention items must be True or False.")
    if not _is_int_between(objects_named, 0, 3):
        raise ValueError(f"objects_named must be an integer from 0 to 3, got {objects_named!r}.")
    return sum(answers) + objects_named


@dataclass(frozen=True, kw_only=True)
class IcansInputs:
    """One ICANS assessment (DOMAIN §2). Tremor, myoclonus and haemorrhage never enter ICANS.

    ICE items are all None when ICE was not performed. `ice_unable_awake_aphasic` records an ICE of 0
    because the patient is awake with global aphasia (grade 3), as opposed to unarousable (grade 4).
    """

    age_years: int
    developmental_delay: bool = False  # uses CAPD at any age
    orientation_year: bool | None = None
    orientation_month: bool | None = None
    orientation_city: bool | None = None
    orientation_hospital: bool | None = None
    objects_named: int | None = None  # 0..3
    follows_commands: bool | None = None
    writes_sentence: bool | None = None
    counts_backwards: bool | None = None
    ice_unable_awake_aphasic: bool = False
    capd_total: int | None = None  # 0..32, None = not performed
    capd_unable: bool = False
    consciousness: Consciousness = Consciousness.ALERT
    consciousness_other_cause: bool = False  # e.g. sedating drugs
    seizure: Seizure = Seizure.NONE
    motor: MotorFinding = MotorFinding.NONE
    cerebral_oedema: CerebralOedema = CerebralOedema.NONE
    death_due_to_icans: bool = False

    def __post_init__(self) -> None:
        if not _is_int_between(self.age_years, 0, 130):
            raise ValueError(f"age_years must be an integer from 0 to 130, got {self.age_years!r}.")
        for value, enum in ((self.consciousness, Consciousness), (self.seizure, Seizure),
                            (self.motor, MotorFinding), (self.cerebral_oedema, CerebralOedema)):
            enum(value)  # ValueError for an unknown level
        _check_ice(self)
        _check_capd(self)

    @property
    def ice_recorded(self) -> bool:
        return self.ice_unable_awake_aphasic or any(getattr(self, name) is not None for name in ICE_ITEMS)

    @property
    def ice_total(self) -> int | None:
        """ICE score, 0 for an awake aphasic patient, None when ICE was not performed."""
        answers = {name: getattr(self, name) for name in ICE_ITEMS}
        if all(answer is None for answer in answers.values()):
            return 0 if self.ice_unable_awake_aphasic else None
        if any(answer is None for answer in answers.values()):
            raise ValueError("Record every ICE item, or none when ICE was not performed.")
        return ice_score(**answers)


def _check_ice(inputs: IcansInputs) -> None:
    total = inputs.ice_total  # validates the item answers
    if inputs.ice_unable_awake_aphasic and total != 0:
        raise ValueError(f"ICE is {total} but ice_unable_awake_aphasic says the patient scored 0.")
    if inputs.ice_unable_awake_aphasic and inputs.consciousness == Consciousness.UNAROUSABLE:
        raise ValueError("A patient cannot be both awake with global aphasia and unarousable.")


def _check_capd(inputs: IcansInputs) -> None:
    total = inputs.capd_total
    if total is not None and not _is_int_between(total, 0, CAPD_MAX):
        raise ValueError(f"capd_total must be an integer from 0 to {CAPD_MAX}, got {total!r}.")
    if inputs.capd_unable and total is not None:
        raise ValueError("capd_unable is set, so capd_total must be empty.")


def icans_grade(inputs: IcansInputs, *,
                capd_age_cutoff_years: int = DEFAULT_CAPD_AGE_CUTOFF_YEARS) -> IcansGrade:
    """ASTCT 2019 ICANS grade (0-5): the worst domain, exactly the DOMAIN §2.4 pseudo-code.

    Children younger than `capd_age_cutoff_years` (and anyone with developmental delay) are graded
    with CAPD instead of ICE. Ages are whole years, so "12 and under" is a cut-off of 13.
    """
    if capd_age_cutoff_years < 0:
        raise ValueError(f"capd_age_cutoff_years must not be negative, got {capd_age_cutoff_years}.")
    if inputs.death_due_to_icans:
        return IcansGrade(grade=5)
    if inputs.age_years < capd_age_cutoff_years or inputs.developmental_delay:
        cognition, flags = _capd_domain(inputs)
    else:
        cognition, flags = _ice_domain(inputs)
    consciousness = 0 if inputs.consciousness_other_cause else _CONSCIOUSNESS_GRADE[inputs.consciousness]
    grade = max(cognition, consciousness, _SEIZURE_GRADE[inputs.seizure], _MOTOR_GRADE[inputs.motor],
                _OEDEMA_GRADE[inputs.cerebral_oedema])
    return IcansGrade(grade=grade, flags=flags)


def _ice_domain(inputs: IcansInputs) -> tuple[int, tuple[str, ...]]:
    flags: tuple[str, ...] = (FLAG_CAPD_IGNORED,) if inputs.capd_total is not None or inputs.capd_unable else ()
    unarousable = inputs.consciousness == Consciousness.UNAROUSABLE
    if unarousable and inputs.consciousness_other_cause:
        # The pseudo-code grades the ICE domain on unarousability whatever its cause.
        flags += (FLAG_UNAROUSABLE_OTHER_CAUSE,)
    score = inputs.ice_total
    if score is None:
        return (4 if unarousable else 0), flags + (FLAG_ICE_NOT_PERFORMED,)
    if score == 10:
        return 0, flags
    if score >= 7:
        return 1, flags
    if score >= 3:
        return 2, flags
    if score >= 1:
        return 3, flags
    return (4 if unarousable else 3), flags  # ICE 0: unarousable 4, awake with global aphasia 3


def _capd_domain(inputs: IcansInputs) -> tuple[int, tuple[str, ...]]:
    flags = (FLAG_ICE_IGNORED,) if inputs.ice_recorded else ()
    total = inputs.capd_total
    if inputs.capd_unable:
        return 4, flags
    if total is None:
        return 0, flags + (FLAG_CAPD_NOT_PERFORMED,)
    if total >= CAPD_POSITIVE_SCREEN:
        return 3, flags
    # Grade 2 needs waking to voice, which the consciousness domain gives. DOMAIN §9.4: CAPD 0 adds 0.
    return (1 if total >= 1 else 0), flags


def episode_max_grade(grades: Iterable[int]) -> int:
    """Episode grade (AETOXGR): the worst grade over the episode's assessments, 0 when there are none."""
    worst = 0
    for grade in grades:
        if not _is_int_between(grade, 0, MAX_GRADE):
            raise ValueError(f"A grade must be an integer from 0 to {MAX_GRADE}, got {grade!r}.")
        worst = max(worst, grade)
    return worst
