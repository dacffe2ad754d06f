"""Import the NCI's CTCAE v5.0 term spreadsheet into the adverse-event dictionary.

    manage.py import_ctcae CTCAE_v5.0.xlsx      (or a CSV export of it)

Columns as the NCI publishes them: MedDRA Code, MedDRA SOC, CTCAE Term, Grade 1 to Grade 5, Definition;
a "-" in a grade column means the term has no such grade. Terms are matched by MedDRA code, else by name:
new ones are added, changed ones updated (audited, source "command"). All or nothing: a bad row changes nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.exceptions import ValidationError
from django.core.management.base import CommandError, CommandParser

from config.audit import AuditedCommand
from config.errors import DomainError
from patients.services.ctcae import import_ctcae_terms, read_ctcae_file


class Command(AuditedCommand):
    help = "Import the NCI CTCAE v5.0 term spreadsheet (.xlsx or .csv) into the CTCAE dictionary."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("path", type=Path, help="The NCI CTCAE v5.0 spreadsheet (.xlsx) or a CSV export of it.")

    def handle(self, *args: Any, path: Path, **options: Any) -> None:
        if not path.is_file():
            raise CommandError(f"No file {path}.")
        try:
            summary = import_ctcae_terms(read_ctcae_file(path))
        except DomainError as err:
            raise CommandError(err.message) from err
        except ValidationError as err:
            raise CommandError("; ".join(err.messages)) from err
        self.stdout.write(f"CTCAE v5.0 terms from {path.name}: {summary}.")
