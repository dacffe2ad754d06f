"""Subject-level clinical records, one module per part of the course; all re-exported here."""

from patients.models.ctcae import *  # noqa: F403
from patients.models.ctcae import __all__ as _ctcae
from patients.models.enrolment import *  # noqa: F403
from patients.models.enrolment import __all__ as _enrolment
from patients.models.outcome import *  # noqa: F403
from patients.models.outcome import __all__ as _outcome
from patients.models.safety import *  # noqa: F403
from patients.models.safety import __all__ as _safety
from patients.models.treatment import *  # noqa: F403
from patients.models.treatment import __all__ as _treatment

__all__ = [*_ctcae, *_enrolment, *_treatment, *_safety, *_outcome]
