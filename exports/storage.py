"""Where export packages live: Django's storage API (``STORAGES["exports"]``), so that web servers and
workers on several machines share one store (e.g. S3 through django-storages).

A package appears under its final name only when complete. It is first written to a local temporary
file; on local storage that file sits in the storage's own ``.partial/`` directory and is renamed into
place (one atomic ``rename``); on any other backend it is uploaded with ``storage.save``, which object
stores publish only once the upload completes. A worker killed mid-way leaves at most a ``.partial``
file, never one under a package's name.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path

from django.core.files import File
from django.core.files.storage import FileSystemStorage, Storage, storages

PARTIAL_DIR = ".partial"


def export_storage() -> Storage:
    return storages["exports"]


def _local_root(storage: Storage) -> Path | None:
    return Path(storage.location) if isinstance(storage, FileSystemStorage) else None


def partial_path(job_id: int) -> Path:
    """A new local temporary file for one attempt of ``job_id`` (on the storage's volume when local)."""
    root = _local_root(export_storage())
    directory = root / PARTIAL_DIR if root is not None else Path(tempfile.gettempdir()) / "cart-exports"
    directory.mkdir(parents=True, exist_ok=True)
    return directory / f"job{job_id}-{uuid.uuid4().hex}.zip.partial"


def discard_partials(job_id: int) -> None:
    """Remove what earlier attempts of ``job_id`` left half-written."""
    root = _local_root(export_storage())
    directory = root / PARTIAL_DIR if root is not None else Path(tempfile.gettempdir()) / "cart-exports"
    for path in directory.glob(f"job{job_id}-*.zip.partial"):
        path.unlink(missing_ok=True)


def publish(local: Path, name: str) -> str:
    """Move a complete package into storage under ``name`` (replacing an earlier attempt's) and return it."""
    storage = export_storage()
    root = _local_root(storage)
    if root is not None:
        final = Path(storage.path(name))
        final.parent.mkdir(parents=True, exist_ok=True)
        with local.open("rb") as fh:
            os.fsync(fh.fileno())
        os.replace(local, final)  # same volume: atomic
        return name
    if storage.exists(name):
        storage.delete(name)
    with local.open("rb") as fh:
        saved = storage.save(name, File(fh, name=os.path.basename(name)))
    local.unlink(missing_ok=True)
    return saved


def remove(name: str) -> None:
    if name:
        storage = export_storage()
        if storage.exists(name):
            storage.delete(name)
