"""Export a trial's case report forms in-process, with a progress bar on stderr:

    manage.py export_trial CART19-ALL --format csv --user dm [--site BJ01 ...] [--subject BJ01-0001 ...]
                           [--output path.zip]

The export is the same job the admin and the API create (its audit record names the user), run here
instead of by a worker. The package is stored in export storage; --output also copies it to a path.
"""

from __future__ import annotations

import shutil
import sys
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import CommandError, CommandParser

from config.audit import AuditedCommand
from config.errors import DomainError
from exports.formats import REGISTRY
from exports.models import State
from exports.services import create_export_job, run_export_job
from exports.storage import export_storage
from trials.models import Trial

BAR_WIDTH = 30


def progress_bar(done: int, total: int) -> str:
    filled = BAR_WIDTH * done // total if total else 0
    return f"\r[{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {done}/{total} files"


class Command(AuditedCommand):
    help = "Export a trial's case report forms (same job as the admin and the API), with a progress bar."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("trial", help="Trial code, e.g. CART19-ALL")
        parser.add_argument("--format", required=True, help=f"Format code ({', '.join(sorted(REGISTRY)) or 'none'})")
        parser.add_argument("--user", required=True, help="Username of the person exporting (their sites and role)")
        parser.add_argument("--site", action="append", dest="sites", help="Site code (repeat; default: all yours)")
        parser.add_argument("--subject", action="append", dest="subjects", help="Subject code (repeat)")
        parser.add_argument("--output", help="Also copy the package to this path")

    def handle(self, *args: Any, **options: Any) -> None:
        user = get_user_model().objects.filter(username=options["user"], is_active=True).first()
        trial = Trial.objects.filter(code=options["trial"]).first()
        if user is None:
            raise CommandError(f"No active user {options['user']}.")
        if trial is None:
            raise CommandError(f"No trial {options['trial']}.")
        try:
            job = create_export_job(by=user, trial=trial, format_code=options["format"], site_codes=options["sites"],
                                    subject_codes=options["subjects"], enqueue=False)
        except DomainError as err:
            raise CommandError(err.message) from err
        job = run_export_job(job.pk, on_progress=lambda done, total: self._bar(done, total))
        sys.stderr.write("\n")
        if job.state != State.DONE:
            raise CommandError(f"Export #{job.pk} failed: {job.error}")
        self.stdout.write(f"Export #{job.pk}: {job.file_name} in export storage ({job.size} bytes, "
                          f"SHA-256 {job.sha256}, cut-off {job.cutoff:%Y-%m-%d %H:%M:%S} UTC)")
        if options["output"]:
            with export_storage().open(job.file_name, "rb") as src, open(options["output"], "wb") as dst:
                shutil.copyfileobj(src, dst, 1024 * 1024)
            self.stdout.write(f"Copied to {options['output']}")

    def _bar(self, done: int, total: int) -> None:
        sys.stderr.write(progress_bar(done, total))
        sys.stderr.flush()
