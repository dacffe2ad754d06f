"""The package's entries are deflated by zlib-ng and read back by any zip reader (zipfile inflates with zlib)."""

from __future__ import annotations

import hashlib
import zipfile
from collections.abc import Iterator
from pathlib import Path

from zlib_ng import zlib_ng

from exports.formats import ExportFile
from exports.package import COMPRESS_LEVEL, MANIFEST, write_package


def _file(name: str, content: bytes) -> ExportFile:
    def chunks() -> Iterator[bytes]:
        for start in range(0, len(content), 7_001):  # chunks of an odd size
            yield content[start:start + 7_001]

    return ExportFile(name=name, media_type="text/csv", chunks=chunks)


def test_entries_are_zlib_ng_deflate_streams_that_zip_readers_inflate(tmp_path: Path) -> None:
    content = b"".join(b"STUDY,LB,SUBJ-%05d,%d,ALT,%0.3f\n" % (i % 500, i, i * 0.137) for i in range(60_000))
    path = tmp_path / "package.zip"
    manifest = write_package(path, [_file("lb.csv", content), _file("empty.csv", b"")],
                             manifest=lambda written: {"files": [w.as_manifest() for w in written]},
                             on_file=lambda n: None)
    with zipfile.ZipFile(path) as archive:
        assert archive.read("lb.csv") == content and archive.read("empty.csv") == b""
        assert archive.testzip() is None  # every CRC checks
        info = archive.getinfo("lb.csv")
        assert info.compress_type == zipfile.ZIP_DEFLATED and info.compress_size < len(content) // 2
        assert [f["name"] for f in manifest["files"]] == ["lb.csv", "empty.csv"] and MANIFEST in archive.namelist()
    assert manifest["files"][0]["sha256"] == hashlib.sha256(content).hexdigest()
    # The stored bytes are zlib-ng's stream of the content at the package's level.
    deflate = zlib_ng.compressobj(COMPRESS_LEVEL, zlib_ng.DEFLATED, -15)
    expected = b"".join(deflate.compress(content[i:i + 7_001]) for i in range(0, len(content), 7_001))
    expected += deflate.flush()
    with path.open("rb") as raw:
        raw.seek(info.header_offset)
        local = raw.read(30)  # the local header: its name's and extra field's lengths at bytes 26 and 28
        raw.seek(int.from_bytes(local[26:28], "little") + int.from_bytes(local[28:30], "little"), 1)
        assert raw.read(info.compress_size) == expected
