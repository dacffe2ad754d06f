"""The export formats. Each format module defines one ``ExportFormat`` and registers it; the packaging
(zip, manifest with SHA-256 of every file, storage, job, audit record) is the same for all of them and
lives outside the formats.

A format returns its files as a list (so that progress can be counted) of ``ExportFile``; each file's
content is produced lazily, chunk by chunk, when the package is written, inside one read-only
REPEATABLE READ transaction (one snapshot: the data cut-off). A file's bytes must depend only on the
data, never on the time of export or the exporting user (those go in the manifest), so that exporting
a locked trial twice gives identical data files.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from exports.scope import ExportScope


@dataclass(frozen=True)
class ExportFile:
    name: str  # path inside the package, e.g. "csv/subjects.csv"
    chunks: Callable[[], Iterable[bytes]]  # called once, when the package is written
    media_type: str = "application/octet-stream"


class ExportFormat(Protocol):
    code: str  # "csv", "odm", "sdtm", "casebook"
    label: str

    def files(self, scope: ExportScope) -> list[ExportFile]: ...


REGISTRY: dict[str, ExportFormat] = {}

# Modules that define formats; each calls register() at import time.
FORMAT_MODULES: tuple[str, ...] = ("exports.formats.csv_format", "exports.formats.odm", "exports.formats.sdtm",
                                   "exports.formats.casebook")


def register(fmt: ExportFormat) -> ExportFormat:
    REGISTRY[fmt.code] = fmt
    return fmt


def load_all() -> None:
    for module in FORMAT_MODULES:
        importlib.import_module(module)
