"""Landing a month's file: HTTP stream -> gunzip -> temporary file -> checked -> renamed.

One pass over the bytes does everything the later steps rely on: decompression, the
sha256, the row count and the header check. The file appears under its final name only
when all of that succeeded, so a cut-off download never looks like a month.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Protocol

import requests
import urllib3

# zlib-ng behind CPython's zlib API (same bytes out, same errors), for the gunzip: about
# 3.5 times faster than zlib, which was most of the raw step (a 1M-row yellow month, 27 MB
# gzipped: 0.31-0.39 s with zlib, 0.08-0.09 s with zlib-ng; its sha256 took 0.06 s).
from zlib_ng import zlib_ng

from taxi_platform.lib.source_errors import SourceUnavailable


class StreamSource(Protocol):
    """Where a month's file streams from: the ``trip_source`` resource (timeouts,
    retries), seen from here only through what landing uses of it."""

    max_attempts: int
    backoff_seconds: float

    def open_stream(self, url: str) -> AbstractContextManager[requests.Response]: ...

    def resume_stream(self, url: str, offset: int, etag: str | None) -> requests.Response: ...


# Small enough that a transfer cut mid-file keeps almost all it received (the resume asks
# from the last whole chunk written), large enough to cost nothing per chunk.
CHUNK_BYTES = 1 << 16


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
    source: StreamSource,
    url: str,
    csv_path: Path,
    expected_header: tuple[str, ...],
    describe: str,
    log: Callable[[str], None] | None = None,
    writer: Callable[[Path, tuple[str, ...], str], MonthWriter] | None = None,
) -> LandedFile:
    """Download ``url`` into ``csv_path`` unless the same file is already there.

    ``describe`` names the file and partition in every error message. A landed file is
    reused when the source still announces the same ETag and size (a cheap HEAD), so the
    re-run of a month does not download it again. ``log`` hears what was cleaned up.
    ``writer`` makes what turns the downloaded bytes into the CSV (``target,
    expected_header, describe``): a gunzip by default; a TLC Parquet month passes
    ``taxi_platform.lib.tlc_parquet.ParquetMonthWriter``.
    """
    started = time.monotonic()
    with source.open_stream(url) as response:
        etag = response.headers.get("ETag")
        reused = _still_landed(csv_path, etag, response.headers.get("Content-Length"))
        if reused is not None:
            return replace(reused, downloaded=False, duration_seconds=time.monotonic() - started)
        stats = _write_month(
            source, url, response, csv_path, expected_header, describe, log, writer
        )
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


def _still_landed(csv_path: Path, etag: str | None, announced: str | None) -> LandedFile | None:
    """The landed file, when the source announces the very file it was made from (same
    ETag and size) and it is still whole on disk; None when it must be downloaded."""
    previous = LandedFile.read_sidecar(csv_path)
    if previous is None or etag is None or announced is None:
        return None
    if previous.etag != etag or int(announced) != previous.gz_bytes:
        return None
    return previous if csv_path.stat().st_size == previous.bytes else None


def _write_month(
    source: StreamSource,
    url: str,
    response: requests.Response,
    csv_path: Path,
    expected_header: tuple[str, ...],
    describe: str,
    log: Callable[[str], None] | None,
    writer: Callable[[Path, tuple[str, ...], str], MonthWriter] | None,
) -> _StreamStats:
    """Write the month into a partial file of this process, checked, then rename it to
    ``csv_path``: a reader never sees a half-written month under its name."""
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    for leftover in remove_dead_partials(csv_path):
        if log is not None:
            log(f"{describe}: removed {leftover.name}, left by a run that died downloading")
    partial = csv_path.with_name(f".{csv_path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.partial")
    try:
        month_writer = (writer or _GunzipWriter)(partial, expected_header, describe)
        with month_writer:
            _download(source, url, response, month_writer, describe)
        stats = month_writer.finish()
        _check_last_line(stats.last_line, len(expected_header), describe)
        partial.replace(csv_path)
    finally:
        partial.unlink(missing_ok=True)
    return stats


def remove_dead_partials(csv_path: Path) -> list[Path]:
    """Delete the ``.partial`` files of this month whose downloading process is gone.

    A run killed mid-download (``kill -9``, out of memory) cannot clean up after itself;
    the next download of the month does. A partial whose process still runs (a concurrent
    run of the same month) is left alone: its name carries the process id.
    """
    removed = []
    for partial in csv_path.parent.glob(f".{csv_path.name}.*.partial"):
        pid_text = partial.name[len(csv_path.name) + 2 :].split(".", 1)[0]
        if pid_text.isdigit() and _process_exists(int(pid_text)):
            continue
        partial.unlink(missing_ok=True)
        removed.append(partial)
    return removed


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# What a transfer cut mid-file raises while its body is read: urllib3's errors (the
# connection reset or closed before the announced length, no byte for
# read_timeout_seconds) and requests' wrappers of them.
_INTERRUPTIONS = (
    urllib3.exceptions.HTTPError,
    requests.exceptions.ChunkedEncodingError,
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
)


class DownloadInterrupted(SourceUnavailable):
    """Every attempt at the file was cut mid-transfer; a later try may get through."""


def _body_chunks(response: requests.Response) -> Iterator[bytes]:
    """The body as it arrives, undecoded: every byte received reaches the writer before a
    cut is raised, so a resume asks for exactly what is missing."""
    while chunk := response.raw.read1(CHUNK_BYTES, decode_content=False):
        yield chunk


def _download(
    source: StreamSource,
    url: str,
    response: requests.Response,
    writer: MonthWriter,
    describe: str,
) -> None:
    """Feed the whole file to ``writer``, resuming a transfer cut mid-file.

    A cut transfer is asked again from the first byte not yet written (``Range``); a
    source that answers with the whole file instead makes the writer start over. After
    ``source.max_attempts`` cut transfers the download fails as retryable.
    """
    total = _announced_length(response)
    etag = response.headers.get("ETag")
    offset = 0
    writer.expected_gz_bytes = total
    for attempt in range(1, source.max_attempts + 1):
        try:
            for compressed in _body_chunks(response):
                writer.feed(compressed)
            received = writer.gz_bytes
            if total is not None and received != total:
                raise BadTripFile(
                    f"{describe}: download cut off: received {received} of {total} bytes"
                )
            return
        except _INTERRUPTIONS as error:
            received = offset + response.raw.tell()
            problem = (
                f"{describe}: download interrupted after {received:,} of "
                f"{'?' if total is None else f'{total:,}'} bytes "
                f"({type(error).__name__}: {_first_line(error)})"
            )
        finally:
            response.close()
        if attempt == source.max_attempts:
            raise DownloadInterrupted(
                f"{problem}; gave up after {source.max_attempts} attempts (a later try "
                "downloads the file again)"
            )
        time.sleep(source.backoff_seconds * 2 ** (attempt - 1))
        response = source.resume_stream(url, writer.gz_bytes, etag)
        if response.status_code == 206:
            offset = writer.gz_bytes
            if not response.headers.get("Content-Range", "").startswith(f"bytes {offset}-"):
                response.close()
                raise SourceUnavailable(
                    f"{problem}; the source answered a resume with the wrong range"
                )
        else:
            offset, total = 0, _announced_length(response)
            writer.restart()
        writer.expected_gz_bytes = total


def _announced_length(response: requests.Response) -> int | None:
    announced = response.headers.get("Content-Length")
    return int(announced) if announced is not None and announced.isdigit() else None


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [""])[0][:200]


class LandingAreaFull(Exception):
    """No space left for the month in the landing area; retrying cannot help."""


@dataclass
class _StreamStats:
    bytes: int = 0
    gz_bytes: int = 0
    rows: int = 0
    sha256: str = ""
    last_line: bytes = b""


class MonthWriter(Protocol):
    """What ``_download`` feeds: the downloaded bytes in order, possibly restarted."""

    expected_gz_bytes: int | None

    @property
    def gz_bytes(self) -> int: ...

    def __enter__(self) -> MonthWriter: ...

    def __exit__(self, *exc_info) -> None: ...

    def feed(self, downloaded: bytes) -> None: ...

    def restart(self) -> None: ...

    def finish(self) -> _StreamStats: ...


class _GunzipWriter:
    """One pass over the compressed bytes: gunzip, write, hash, count rows, check the header.

    Kept as an object so that a download resumed after a cut carries on with the same
    decompressor and digest, and ``restart`` begins again when the source cannot resume.
    """

    def __init__(self, target: Path, expected_header: tuple[str, ...], describe: str) -> None:
        self.target = target
        self.expected_header = expected_header
        self.describe = describe
        self._out = None
        self.expected_gz_bytes: int | None = None
        self.restart()

    def __enter__(self) -> _GunzipWriter:
        return self

    def __exit__(self, *exc_info) -> None:
        self._close()

    def _close(self) -> None:
        out, self._out = self._out, None
        if out is not None:
            try:
                out.close()  # flushes the buffer: where a full disk may show first
            except OSError as error:
                if error.errno == errno.ENOSPC:
                    raise self._disk_full() from None
                raise

    @property
    def gz_bytes(self) -> int:
        return self.stats.gz_bytes

    def restart(self) -> None:
        self._close()
        self._out = open(self.target, "wb")
        self.stats = _StreamStats()
        self._digest = hashlib.sha256()
        self._decompressor = zlib_ng.decompressobj(wbits=16 + zlib_ng.MAX_WBITS)
        self._newlines = 0
        self._head = b""
        self._header_checked = False
        self._tail = b""

    def feed(self, compressed: bytes) -> None:
        self.stats.gz_bytes += len(compressed)
        try:
            data = self._decompressor.decompress(compressed)
            if self._decompressor.unused_data:
                # Concatenated gzip members are valid gzip; continue with the next one.
                rest = self._decompressor.unused_data
                self._decompressor = zlib_ng.decompressobj(wbits=16 + zlib_ng.MAX_WBITS)
                data += self._decompressor.decompress(rest)
        except zlib_ng.error as error:
            raise BadTripFile(f"{self.describe}: not a valid gzip file ({error})") from None
        self._write(data)

    def finish(self) -> _StreamStats:
        """Flush, close and check what the whole stream held."""
        try:
            self._write(self._decompressor.flush())
        except zlib_ng.error as error:
            raise BadTripFile(f"{self.describe}: not a valid gzip file ({error})") from None
        self._close()
        stats = self.stats
        if not self._decompressor.eof:
            raise BadTripFile(
                f"{self.describe}: the gzip stream ends early after {stats.gz_bytes} bytes "
                "(truncated download)"
            )
        if stats.bytes == 0:
            raise BadTripFile(f"{self.describe}: the file is empty")
        if not self._header_checked:
            _check_header(self._head, self.expected_header, self.describe)
        stats.sha256 = self._digest.hexdigest()
        ends_with_newline = self._tail.endswith(b"\n")
        stats.last_line = self._tail.rstrip(b"\r\n").rsplit(b"\n", 1)[-1]
        lines = self._newlines + (0 if ends_with_newline else 1)
        stats.rows = max(lines - 1, 0)
        return stats

    def _write(self, data: bytes) -> None:
        if not data:
            return
        try:
            self._out.write(data)
        except OSError as error:
            if error.errno == errno.ENOSPC:
                raise self._disk_full() from None
            raise
        self._digest.update(data)
        self.stats.bytes += len(data)
        self._newlines += data.count(b"\n")
        if not self._header_checked:
            self._head += data
            if b"\n" in self._head or len(self._head) > 65536:
                # Fail on a wrong header before downloading the rest of the month.
                _check_header(self._head.split(b"\n", 1)[0], self.expected_header, self.describe)
                self._header_checked = True
        self._tail = (self._tail + data)[-65536:]

    def _disk_full(self) -> LandingAreaFull:
        folder = self.target.parent
        free = shutil.disk_usage(folder).free
        return LandingAreaFull(
            f"{self.describe}: no space left in the landing area {folder} after writing "
            f"{self.stats.bytes:,} bytes of the month ({free:,} bytes free). The month's CSV "
            f"needs {self._space_needed()} bytes there: free some space "
            "(taxi-platform purge) or point TAXI_HOME at a larger disk. Not retried."
        )

    def _space_needed(self) -> str:
        """The CSV's size, extrapolated from the compression ratio so far."""
        if not self.expected_gz_bytes or not self.stats.gz_bytes:
            return f"more than {self.stats.bytes:,}"
        ratio = self.stats.bytes / self.stats.gz_bytes
        return f"about {round(ratio * self.expected_gz_bytes):,}"


def parse_header(first_line: bytes) -> tuple[str, ...]:
    text = first_line.decode("utf-8", errors="replace").lstrip("\ufeff").rstrip("\r\n")
    return tuple(name.strip().strip('"') for name in text.split(","))


def header_difference(
    expected: tuple[str, ...], found: tuple[str, ...]
) -> tuple[list[str], list[str]]:
    """The names ``found`` lacks, and those it has that ``expected`` does not."""
    missing = [name for name in expected if name not in found]
    return missing, [name for name in found if name not in expected]


def _check_header(first_line: bytes, expected: tuple[str, ...], describe: str) -> None:
    found = parse_header(first_line)
    if found != expected:
        missing, unexpected = header_difference(expected, found)
        raise BadTripFile(
            f"{describe}: unexpected header.\n  expected: {','.join(expected)}\n"
            f"  found:    {','.join(found)}\n"
            f"  missing: {missing or 'none'}; unexpected: {unexpected or 'none'}"
            f"{_order_difference(expected, found) if not (missing or unexpected) else ''}"
        )


def _order_difference(expected: tuple[str, ...], found: tuple[str, ...]) -> str:
    """Same names, another order (or a name twice): COPY maps columns by position, so the
    values would land in the wrong columns."""
    if len(found) != len(expected):
        return f"; the file has {len(found)} columns, expected {len(expected)} (a name repeated)"
    first = next(
        index
        for index, names in enumerate(zip(expected, found, strict=True))
        if names[0] != names[1]
    )
    return (
        f"; the same columns in a different order: column {first + 1} is "
        f"{found[first]!r}, expected {expected[first]!r}"
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
