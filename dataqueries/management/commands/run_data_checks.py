"""Run the automatic data checks on one trial (``--trial CODE``) or on every trial, and print what changed.

Safe to run again at any time (e.g. nightly): it raises a query only for a new finding, re-opens one
the check had closed when the problem comes back, and closes its own open queries whose problem is gone.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import CommandError, CommandParser

from config.audit import AuditedCommand
from dataqueries.checks import run_checks
from trials.models import Trial


class Command(AuditedCommand):
    help = "Run the automatic data checks and keep their data queries in step."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--trial", metavar="CODE", help="Only this trial (default: every trial).")

    def handle(self, *args: Any, trial: str | None = None, **options: Any) -> None:
        trials = Trial.objects.order_by("code")
        if trial is not None:
            trials = trials.filter(code=trial)
            if not trials.exists():
                raise CommandError(f"No trial {trial}.")
        for each in trials:
            self.stdout.write(str(run_checks(each)))
