"""Back up the database and the roles it needs into ``var/backups`` (``make backup``).

    manage.py backup_database [--output-dir DIR]

Writes ``<UTC timestamp>.dump`` (pg_dump, custom format) and ``<UTC timestamp>.roles.sql`` beside it;
``manage.py restore_database <file>.dump`` restores both. See audit/management/backups.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import connections
from django.utils import timezone

from audit.management import backups


class Command(BaseCommand):
    help = "Back up the database (pg_dump custom format) and the roles it needs into var/backups."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--output-dir", default=str(Path(settings.BASE_DIR) / "var" / "backups"))
        parser.add_argument("--database", default="default", help="Django database alias.")

    def handle(self, *args: Any, output_dir: str, database: str, **options: Any) -> None:
        name = connections[database].settings_dict["NAME"]
        folder = Path(output_dir)
        folder.mkdir(parents=True, exist_ok=True)
        stamp = timezone.now().strftime("%Y%m%dT%H%M%S.%fZ")
        dump, roles = folder / f"{stamp}.dump", folder / f"{stamp}{backups.ROLES_SUFFIX}"
        text, count = backups.roles_sql(name, database)
        result = backups.run([backups.tool("pg_dump"), "--format=custom", f"--file={dump}", name],
                             backups.libpq_env(name, database))
        if result.returncode != 0:
            dump.unlink(missing_ok=True)
            raise CommandError(f"pg_dump failed ({result.returncode}): {result.stderr.strip()}")
        roles.write_text(text)
        self.stdout.write(f"Backed up database {name} to {dump} ({dump.stat().st_size} bytes) "
                          f"and its {count} roles to {roles}.")
