"""A test-only export format: the scope's subjects and sites as CSV (and a slow variant that writes its
rows with a pause, so that a worker can be killed while it writes)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

from exports.formats import REGISTRY, ExportFile, register
from exports.scope import ExportScope


class ProbeFormat:
    def __init__(self, code: str = "probe", label: str = "Probe (tests)", delay: float = 0.0) -> None:
        self.code, self.label, self.delay = code, label, delay  # delay: seconds between rows

    def files(self, scope: ExportScope) -> list[ExportFile]:
        return [ExportFile("probe/subjects.csv", lambda: self._subjects(scope), "text/csv"),
                ExportFile("probe/sites.csv", lambda: self._sites(scope), "text/csv")]

    def _subjects(self, scope: ExportScope) -> Iterator[bytes]:
        yield b"subject,site,status\r\n"
        for code, site, status in scope.subjects().values_list("code", "site__code", "status"):
            if self.delay:
                time.sleep(self.delay)
            yield f"{code},{site},{status}\r\n".encode()

    def _sites(self, scope: ExportScope) -> Iterator[bytes]:
        yield b"site\r\n"
        for code in scope.sites().values_list("code", flat=True):
            yield f"{code}\r\n".encode()


def register_probes() -> None:
    register(ProbeFormat())
    register(ProbeFormat(code="slowprobe", label="Slow probe (tests)",
                         delay=float(os.environ.get("EXPORTS_PROBE_DELAY", "0"))))


def unregister_probes() -> None:
    REGISTRY.pop("probe", None)
    REGISTRY.pop("slowprobe", None)
