"""The PDF casebook format: one PDF per subject in scope (``casebooks/<subject code>.pdf``), holding every
form of the subject in course order with study and course days, each record's audit trail, the signatures
with their validity and the open data queries (``exports.casebook``)."""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Iterator
from typing import TYPE_CHECKING

from exports.casebook.content import load_casebook
from exports.casebook.pdf import render_casebook, write_casebook
from exports.formats import ExportFile, register

if TYPE_CHECKING:
    from exports.scope import ExportScope

CHUNK_SIZE = 64 * 1024
MEDIA_TYPE = "application/pdf"


def casebook_name(subject_code: str) -> str:
    return f"casebooks/{subject_code.replace('/', '_')}.pdf"


def casebook_pdf(scope: ExportScope, subject_id: int) -> bytes:
    """One subject's casebook as of the scope's cut-off (a fixed number of queries)."""
    return render_casebook(load_casebook(subject_id=subject_id, cutoff=scope.cutoff))


def _chunks(scope: ExportScope, subject_id: int) -> Iterator[bytes]:
    """The casebook written to a temporary file, then read back a chunk at a time (not held in memory)."""
    with tempfile.TemporaryFile() as file:
        write_casebook(load_casebook(subject_id=subject_id, cutoff=scope.cutoff), file)
        file.seek(0)
        while chunk := file.read(CHUNK_SIZE):
            yield chunk


class CasebookFormat:
    code = "casebook"
    label = "PDF casebook"

    def files(self, scope: ExportScope) -> list[ExportFile]:
        """One file per subject in scope (the selected ones when subjects were selected), by subject code."""
        return [ExportFile(name=casebook_name(code), chunks=functools.partial(_chunks, scope, pk),
                           media_type=MEDIA_TYPE)
                for pk, code in scope.subjects().values_list("pk", "code")]


CASEBOOK = register(CasebookFormat())
