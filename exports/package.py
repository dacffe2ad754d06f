"""The package of an export: a zip of the format's files, then ``manifest.json``.

Files are streamed into the zip chunk by chunk (never held in memory) and hashed as they are written.
Every entry has the same fixed date and attributes, so a file's bytes in the package depend only on
its content: exporting a locked trial twice gives identical data files (the manifest differs: it
carries the cut-off and the exporting user).
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zlib_ng import zlib_ng

from exports.formats import ExportFile

FIXED_DATE = (1980, 1, 1, 0, 0, 0)  # the earliest date a zip entry can carry
MANIFEST = "manifest.json"
READ_CHUNK = 1024 * 1024
# Deflate's fastest level (the default is 6): much less time per megabyte of CSV or XPT, for a somewhat larger
# package. The files in the package (and their digests) are the same at any level.
COMPRESS_LEVEL = 1
# The CRC-32 zipfile keeps of each entry, by zlib-ng's (the same checksum, computed with the CPU's carry-less
# multiply: 0.02 s for 200 MB against zlib's 0.09), for any zip this process writes or reads. zipfile looks the
# function up by this module-level name at every write; were that to change, zlib's would be used, as before.
if hasattr(zipfile, "crc32"):
    setattr(zipfile, "crc32", zlib_ng.crc32)  # noqa: B010  (typeshed does not declare zipfile's import)


def _deflater() -> Any:
    """A raw deflate stream by zlib-ng (the format zip readers expect, as zlib's): 0.15 s for the 129 MB of SDTM
    LB's CSV at level 1 against zlib's 0.34. Its compressed bytes are zlib-ng's own, the same for the same
    input; the files in the package are the same whichever library compressed them."""
    return zlib_ng.compressobj(COMPRESS_LEVEL, zlib_ng.DEFLATED, -15)


@dataclass(frozen=True)
class WrittenFile:
    name: str
    size: int
    sha256: str
    media_type: str

    def as_manifest(self) -> dict[str, Any]:
        return {"name": self.name, "size": self.size, "sha256": self.sha256, "media_type": self.media_type}


def _entry(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=FIXED_DATE)
    info.compress_type = zipfile.ZIP_DEFLATED
    info._compresslevel = COMPRESS_LEVEL  # type: ignore[attr-defined]  # public as compress_level from Python 3.13
    info.external_attr = 0o644 << 16
    return info


def _write_entry(archive: zipfile.ZipFile, file: ExportFile) -> WrittenFile:
    """Stream the file into the zip. Its chunks are made in this thread (they read the export's transaction,
    which belongs to it), while the previous chunk is hashed, deflated and written in another: SHA-256, CRC-32,
    deflate and the file write release the GIL, so they run beside the query's reading. One chunk at a time is
    in flight, so memory stays bounded."""
    digest, size = hashlib.sha256(), 0
    with archive.open(_entry(file.name), mode="w", force_zip64=True) as out, \
            ThreadPoolExecutor(max_workers=1) as writer:
        # Before any byte, in place of zipfile's zlib compressor (``_ZipWriteFile._compressor``, the attribute
        # Python 3.11 to 3.13 have; were it gone, zipfile would compress with zlib as before). The tests read every
        # package back with zipfile, which inflates with zlib.
        out._compressor = _deflater()  # type: ignore[attr-defined]

        def write(chunk: bytes) -> None:
            digest.update(chunk)
            out.write(chunk)

        pending: Future[None] | None = None
        for chunk in file.chunks():
            size += len(chunk)
            if pending is not None:
                pending.result()
            pending = writer.submit(write, chunk)
        if pending is not None:
            pending.result()
    return WrittenFile(file.name, size, digest.hexdigest(), file.media_type)


def write_package(path: Path, files: list[ExportFile], *, manifest: Callable[[list[WrittenFile]], dict[str, Any]],
                  on_file: Callable[[int], None]) -> dict[str, Any]:
    """Write ``files`` and then the manifest (built from what was written) into the zip at ``path``;
    ``on_file(n)`` is called after the n-th file. Returns the manifest."""
    names = [f.name for f in files]
    if len(set(names)) != len(names) or MANIFEST in names:
        raise ValueError("An export's file names must be unique and must not be manifest.json.")
    written: list[WrittenFile] = []
    with zipfile.ZipFile(path, mode="w", compression=zipfile.ZIP_DEFLATED, allowZip64=True) as archive:
        for n, file in enumerate(files, start=1):
            written.append(_write_entry(archive, file))
            on_file(n)
        content = manifest(written)
        archive.writestr(_entry(MANIFEST), json.dumps(content, indent=2, sort_keys=True).encode())
    return content


def file_sha256(path: Path) -> tuple[str, int]:
    """SHA-256 and size of a file, read in chunks."""
    digest, size = hashlib.sha256(), 0
    with path.open("rb") as fh:
        while chunk := fh.read(READ_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size
