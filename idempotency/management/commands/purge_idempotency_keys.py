"""Delete stored Idempotency-Key responses older than 24 hours (schedule it, e.g. hourly or nightly).

Expired keys are already ignored when a request arrives; this only keeps the table small.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from idempotency.services import purge_expired_keys


class Command(BaseCommand):
    help = "Delete stored Idempotency-Key responses older than 24 hours."

    def handle(self, *args: Any, **options: Any) -> None:
        deleted = purge_expired_keys()
        self.stdout.write(f"Purged {deleted} expired idempotency key(s).")
