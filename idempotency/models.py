"""A stored API response, replayed when a client retries a POST or PATCH with the same Idempotency-Key.

Bookkeeping of the API, not clinical data: not audited, purged after ``KEY_LIFETIME``.
"""

from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.db import models

KEY_LIFETIME = dt.timedelta(hours=24)
MAX_KEY_LENGTH = 255


class IdempotencyKey(models.Model):
    """One caller's key and the first response to the request it was sent with.

    The row is inserted in the transaction that runs the request, so it commits together with the
    request's writes or not at all; ``status_code`` 0 only exists inside that transaction.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    key = models.CharField(max_length=MAX_KEY_LENGTH)
    request_hash = models.CharField(max_length=64, help_text="SHA-256 of the method, path and body.")
    status_code = models.PositiveSmallIntegerField(default=0)
    content_type = models.CharField(max_length=200, blank=True)
    body = models.BinaryField(default=bytes)
    created_at = models.DateTimeField()

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "key"], name="idempotencykey_unique_key")]
        indexes = [models.Index(fields=["created_at"], name="idempotencykey_created")]

    def __str__(self) -> str:
        return f"{self.key} ({self.status_code})"
