"""A procrastinate worker with the test-only probe formats registered, run in a subprocess by the
kill-and-retry test (``EXPORTS_PROBE_DELAY`` slows the "slowprobe" format down)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django  # noqa: E402

django.setup()

from procrastinate.contrib.django import app  # noqa: E402

from tests.exports.probe import register_probes  # noqa: E402

register_probes()
with app.replace_connector(app.connector.get_worker_connector()):  # type: ignore[attr-defined]  # as `manage.py procrastinate worker` does
    app.run_worker(queues=["exports"], install_signal_handlers=True, listen_notify=False,
                   fetch_job_polling_interval=0.2)
