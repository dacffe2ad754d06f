"""Restore a backup made by ``backup_database`` (``make restore FILE=...``).

    manage.py restore_database var/backups/<timestamp>.dump [--target NAME] [--force]

Creates the target database if it does not exist, creates the roles the backup needs where missing
(the ``.roles.sql`` file beside the dump), then runs pg_restore. A database that already holds tables
is refused unless ``--force`` is given, which drops and replaces the objects the backup contains.
The target defaults to the configured database.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import connections

from audit.management import backups


class Command(BaseCommand):
    help = "Restore a backup_database dump (roles first, then pg_restore) into a fresh or empty database."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("file", help="The .dump file; its .roles.sql must lie beside it.")
        parser.add_argument("--target", default="", help="Database to restore into (default: the configured one).")
        parser.add_argument("--force", action="store_true", help="Replace the objects of a non-empty database.")
        parser.add_argument("--database", default="default", help="Django database alias giving the server.")

    def handle(self, *args: Any, file: str, target: str, force: bool, database: str, **options: Any) -> None:
        dump = Path(file)
        roles = dump.with_name(dump.name.removesuffix(".dump") + backups.ROLES_SUFFIX)
        for path in (dump, roles):
            if not path.is_file():
                raise CommandError(f"{path} does not exist.")
        target = target or connections[database].settings_dict["NAME"]
        state = backups.database_state(target, database)
        if state == "non-empty" and not force:
            raise CommandError(f"Database {target} is not empty; restore into a new database (--target) "
                               "or pass --force (FORCE=1) to replace its contents.")
        if state == "missing":
            backups.create_database(target, database)
            self.stdout.write(f"Created database {target}.")
        env = backups.libpq_env(target, database)
        self._roles(roles, target, env)
        clean = ["--clean", "--if-exists"] if state == "non-empty" else []
        result = backups.run([backups.tool("pg_restore"), "--no-password", *clean, f"--dbname={target}",
                              str(dump)], env)
        if result.returncode != 0:
            raise CommandError(f"pg_restore exited with {result.returncode}:\n{result.stderr.strip()}")
        self.stdout.write(f"Restored {dump} into database {target}: pg_restore finished without errors.")

    def _roles(self, roles: Path, target: str, env: dict[str, str]) -> None:
        result = backups.run([backups.tool("psql"), "--no-psqlrc", "--quiet", "-v", f"target={target}",
                              f"--file={roles}", f"--dbname={target}"], env)
        if result.returncode != 0:
            raise CommandError(f"Creating the roles from {roles} failed:\n{result.stderr.strip()}")
        self.stdout.write(f"Roles from {roles} are in place.")
