"""Landing a month's file: HTTP stream -> gunzip -> temporary file -> checked -> renamed.

One pass over the bytes does everything the later steps rely on: decompression, the
sha256, the row count and the header check. The file appears under its final name only
when all of that succeeded, so a cut-off download never looks like a month.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import requests

from taxi_platform.resources.trip_source import TripFileSource

CHUNK_BYTES = 1 << 20


class BadTripFile(Exception):
    """The downloaded file is not a complete month of the expected shape."""


@dataclass(frozen=True)
class LandedFile:
    """What the raw asset reports and the sidecar remembers about a landed month."""

    url: str
    path: str
    bytes: int
    gz_bytes: int
    rows: int
    sha256: str
    etag: str | None
    downloaded: bool
    duration_seconds: float

    @classmethod
    def read_sidecar(cls, csv_path: Path) -> LandedFile | None:
        sidecar = sidecar_path(csv_path)
        if not (sidecar.exists() and csv_path.exists()):
            return None
        try:
            return cls(**json.loads(sidecar.read_text()))
        except (ValueError, TypeError):
            return None


def sidecar_path(csv_path: Path) -> Path:
    return csv_path.with_name(csv_path.name + ".json")


def land_month(
    source: TripFileSource,
    url: str,
    csv_path: Path,
    expected_header: tuple[str, ...],
    describe: str,
    convert: Callable[..., _StreamStats] | None = None,
) -> LandedFile:
    """Download ``url`` into ``csv_path`` unless the same file is already there.

    ``describe`` names the file and partition in every error message. A landed file is
    reused when the source still announces the same ETag and size (a cheap HEAD), so the
    re-run of a month does not download it again. ``convert`` writes the CSV from the
    downloaded bytes (``chunks, target, expected_header, describe``); gunzip by default,
    a TLC Parquet month passes ``taxi_platform.lib.tlc_parquet.parquet_to_csv``.
    """
    started = time.monotonic()
    previous = LandedFile.read_sidecar(csv_path)
    with source.open_stream(url) as response:
        etag = response.headers.get("ETag")
        announced = response.headers.get("Content-Length")
        if (
            previous is not None
            and etag is not None
            and previous.etag == etag
            and announced is not None
            and int(announced) == previous.gz_bytes
            and csv_path.stat().st_size == previous.bytes
        ):
            return LandedFile(
                **{
                    **asdict(previous),
                    "downloaded": False,
                    "duration_seconds": time.monotonic() - started,
                }
            )
        csv_path.parent.mkdir(parents=True, exist_ok=True)
        partial = csv_path.with_name(f".{csv_path.name}.{os.getpid()}.partial")
        try:
            stats = (convert or _gunzip_to)(
                response.iter_content(CHUNK_BYTES), partial, expected_header, describe
            )
            if announced is not None and stats.gz_bytes != int(announced):
                raise BadTripFile(
                    f"{describe}: download cut off: received {stats.gz_bytes} of {announced} bytes"
                )
            _check_last_line(stats.last_line, len(expected_header), describe)
            partial.replace(csv_path)
        finally:
            partial.unlink(missing_ok=True)
    landed = LandedFile(
        url=url,
        path=str(csv_path),
        bytes=stats.bytes,
        gz_bytes=stats.gz_bytes,
        rows=stats.rows,
        sha256=stats.sha256,
        etag=etag,
        downloaded=True,
        duration_seconds=time.monotonic() - started,
    )
    sidecar_path(csv_path).write_text(json.dumps(asdict(landed)))
    return landed


@dataclass
class _StreamStats:
    bytes: int = 0
    gz_bytes: int = 0
    rows: int = 0
    sha256: str = ""
    last_line: bytes = b""


def _gunzip_to(
    chunks, target: Path, expected_header: tuple[str, ...], describe: str
) -> _StreamStats:
    stats = _StreamStats()
    digest = hashlib.sha256()
    decompressor = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    newlines = 0
    head = b""
    header_checked = False
    tail = b""
    try:
        with open(target, "wb") as out:
            for compressed in chunks:
                stats.gz_bytes += len(compressed)
                data = decompressor.decompress(compressed)
                if decompressor.unused_data:
                    # Concatenated gzip members are valid gzip; continue with the next one.
                    rest = decompressor.unused_data
                    decompressor = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
                    data += decompressor.decompress(rest)
                if not data:
                    continue
                out.write(data)
                digest.update(data)
                stats.bytes += len(data)
                newlines += data.count(b"\n")
                if not header_checked:
                    head += data
                    if b"\n" in head or len(head) > 65536:
                        # Fail on a wrong header before downloading the rest of the month.
                        _check_header(head.split(b"\n", 1)[0], expected_header, describe)
                        header_checked = True
                tail = (tail + data)[-65536:]
            data = decompressor.flush()
            if data:
                if not header_checked:
                    head += data
                out.write(data)
                digest.update(data)
                stats.bytes += len(data)
                newlines += data.count(b"\n")
                tail = (tail + data)[-65536:]
    except zlib.error as error:
        raise BadTripFile(f"{describe}: not a valid gzip file ({error})") from None
    except requests.RequestException as error:
        raise BadTripFile(
            f"{describe}: download interrupted after {stats.gz_bytes} bytes ({error})"
        ) from None
    if not decompressor.eof:
        raise BadTripFile(
            f"{describe}: the gzip stream ends early after {stats.gz_bytes} bytes "
            "(truncated download)"
        )
    if stats.bytes == 0:
        raise BadTripFile(f"{describe}: the file is empty")
    if not header_checked:
        _check_header(head, expected_header, describe)
    stats.sha256 = digest.hexdigest()
    ends_with_newline = tail.endswith(b"\n")
    stats.last_line = tail.rstrip(b"\r\n").rsplit(b"\n", 1)[-1]
    lines = newlines + (0 if ends_with_newline else 1)
    stats.rows = max(lines - 1, 0)
    return stats


def parse_header(first_line: bytes) -> tuple[str, ...]:
    text = first_line.decode("utf-8", errors="replace").lstrip("\ufeff").rstrip("\r\n")
    return tuple(name.strip().strip('"') for name in text.split(","))


def _check_header(first_line: bytes, expected: tuple[str, ...], describe: str) -> None:
    found = parse_header(first_line)
    if found != expected:
        missing = [name for name in expected if name not in found]
        unexpected = [name for name in found if name not in expected]
        raise BadTripFile(
            f"{describe}: unexpected header.\n  expected: {','.join(expected)}\n"
            f"  found:    {','.join(found)}\n"
            f"  missing: {missing or 'none'}; unexpected: {unexpected or 'none'}"
        )


def _check_last_line(last_line: bytes, column_count: int, describe: str) -> None:
    # A download cut inside a valid gzip member (or a mirror serving a cut file) ends in
    # the middle of a row: fewer fields than the header. Rows in the middle are checked
    # by COPY, which names the line.
    fields = last_line.count(b",") + 1
    if last_line and fields != column_count:
        shown = last_line[:120].decode("utf-8", errors="replace")
        raise BadTripFile(
            f"{describe}: the last line has {fields} fields, expected {column_count}: "
            f"{shown!r} (file cut off mid-line)"
        )
