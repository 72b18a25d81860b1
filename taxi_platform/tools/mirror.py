"""A local release mirror: a folder served over HTTP in the sources' URL layouts.

The platform downloads from the DataTalksClub GitHub releases
(``{base}/{taxi}/{taxi}_tripdata_{YYYY-MM}.csv.gz``, ``{base}/misc/taxi_zone_lookup.csv``)
and from the TLC (``{tlc}/{taxi}_tripdata_{YYYY}-{MM}.parquet``). The mirror serves both
from one folder: the course layout at its root and the TLC's below ``trip-data/``
(``taxi-platform generate`` writes both), so ``TAXI_SOURCE_URL={base}`` and
``TAXI_TLC_URL={base}/trip-data``.
Tests and offline setups point the trip file source's URLs at this mirror instead,
so that every download path (streaming, HEAD probes of the release sensor, 404 for an
unpublished month, resumed ranges) runs against a real HTTP server with real files.

The answers carry what the release CDN sends and a careful client relies on:
``Content-Length``, ``ETag`` and ``Last-Modified`` (conditional requests get 304),
``Accept-Ranges`` with single byte ranges, 404 for anything that is not a published file.
Files whose name starts with a dot are never served: the generator writes through such
temporary names, so a month appears only once it is complete.
"""

from __future__ import annotations

import email.utils
import logging
import os
import re
import signal
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import BinaryIO
from urllib.parse import unquote, urlsplit

logger = logging.getLogger(__name__)

_CHUNK_BYTES = 256 * 1024
_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


class ReleaseMirror:
    """Serves ``folder`` at ``base_url`` from a daemon thread until :meth:`stop`.

    Usable as a context manager. ``port=0`` takes a free port, so parallel tests never
    collide; ``base_url`` tells which one. Subclasses change answers by overriding
    :meth:`handle_request` (the test suite's fault injection does).
    """

    def __init__(self, folder: Path, host: str = "127.0.0.1", port: int = 0) -> None:
        self.folder = Path(folder).resolve()
        self.host = host
        self.port = port
        self._server: _MirrorServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------

    def start(self) -> ReleaseMirror:
        """Bind the port and serve in a daemon thread; returns ``self`` for chaining."""
        if self._server is not None:
            raise RuntimeError(f"mirror already serving at {self.base_url}")
        self._server = self._bind()
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            # A short poll keeps stop() quick; tests start and stop many mirrors.
            kwargs={"poll_interval": 0.05},
            name=f"release-mirror-{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and free the port (downloads in flight are cut)."""
        server, thread = self._server, self._thread
        self._server, self._thread = None, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join()

    def _bind(self) -> _MirrorServer:
        if not self.folder.is_dir():
            raise FileNotFoundError(f"mirror folder {self.folder} does not exist")
        server = _MirrorServer((self.host, self.port), _MirrorRequestHandler)
        server.mirror = self
        self.port = server.server_address[1]
        return server

    def __enter__(self) -> ReleaseMirror:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """``http://host:port``, no trailing slash: what the trip file source is given."""
        if self.port == 0:
            raise RuntimeError("the mirror has no port until it is started")
        return f"http://{self.host}:{self.port}"

    @property
    def tlc_url(self) -> str:
        """Where the mirror serves the TLC's layout (``TAXI_TLC_URL``)."""
        return f"{self.base_url}/trip-data"

    def url_for(self, path: str) -> str:
        """The full URL of a release path such as ``green/green_tripdata_2019-01.csv.gz``."""
        return f"{self.base_url}/{path.lstrip('/')}"

    def published_paths(self) -> list[str]:
        """Release paths (``green/green_tripdata_2019-01.csv.gz``) the mirror serves now."""
        return sorted(
            path.relative_to(self.folder).as_posix()
            for path in self.folder.rglob("*")
            if self.file_for(path.relative_to(self.folder).as_posix()) is not None
        )

    # -- answering -------------------------------------------------------------------

    def handle_request(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        """Answer one GET or HEAD: the file at the URL's path, or 404."""
        file = self.file_for(request_path(handler))
        if file is None:
            self.send_body(handler, method, HTTPStatus.NOT_FOUND, b"Not Found\n")
            return
        self.send_file(handler, method, file)

    def file_for(self, url_path: str) -> Path | None:
        """The published file a URL path names, or None (missing, hidden or outside)."""
        parts = [part for part in url_path.split("/") if part]
        if not parts or any(part in (".", "..") or part.startswith(".") for part in parts):
            return None
        candidate = self.folder.joinpath(*parts)
        try:
            resolved = candidate.resolve(strict=True)
        except (FileNotFoundError, NotADirectoryError, RuntimeError):
            return None
        if not resolved.is_file() or not resolved.is_relative_to(self.folder):
            return None
        return resolved

    def send_file(
        self,
        handler: BaseHTTPRequestHandler,
        method: str,
        file: Path,
        *,
        keep_bytes: int | None = None,
    ) -> None:
        """Stream ``file`` with validators and ranges.

        ``keep_bytes`` sends only that many body bytes while announcing the full length,
        then closes the connection: what a download cut off mid-file looks like.
        """
        try:
            source = file.open("rb")
        except OSError:
            self.send_body(handler, method, HTTPStatus.NOT_FOUND, b"Not Found\n")
            return
        with source:
            stat = os.fstat(source.fileno())
            size = stat.st_size
            etag = f'"{size:x}-{stat.st_mtime_ns:x}"'
            last_modified = email.utils.formatdate(stat.st_mtime, usegmt=True)
            if _not_modified(handler, etag, stat.st_mtime):
                handler.send_response(HTTPStatus.NOT_MODIFIED)
                handler.send_header("ETag", etag)
                handler.send_header("Last-Modified", last_modified)
                handler.end_headers()
                return
            status, start, length = HTTPStatus.OK, 0, size
            wanted = _byte_range(handler, etag, size)
            if wanted == "unsatisfiable":
                handler.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
                handler.send_header("Content-Range", f"bytes */{size}")
                handler.send_header("Content-Length", "0")
                handler.end_headers()
                return
            if wanted is not None:
                status, (start, length) = HTTPStatus.PARTIAL_CONTENT, wanted
            handler.send_response(status)
            handler.send_header("Content-Type", _content_type(file))
            handler.send_header("Content-Length", str(length))
            handler.send_header("Accept-Ranges", "bytes")
            handler.send_header("ETag", etag)
            handler.send_header("Last-Modified", last_modified)
            handler.send_header("Content-Disposition", f"attachment; filename={file.name}")
            if status == HTTPStatus.PARTIAL_CONTENT:
                handler.send_header("Content-Range", f"bytes {start}-{start + length - 1}/{size}")
            handler.end_headers()
            if method == "HEAD":
                return
            to_send = length if keep_bytes is None else min(length, max(0, keep_bytes))
            source.seek(start)
            _copy(source, handler, to_send)
            if to_send < length:
                handler.close_connection = True

    def send_body(
        self,
        handler: BaseHTTPRequestHandler,
        method: str,
        status: int,
        body: bytes,
        content_type: str = "text/plain; charset=utf-8",
    ) -> None:
        """A small in-memory answer (errors, and test bodies)."""
        handler.send_response(status)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if method != "HEAD":
            handler.wfile.write(body)


def request_path(handler: BaseHTTPRequestHandler) -> str:
    """The decoded path of a request, always starting with ``/``, query dropped."""
    return "/" + unquote(urlsplit(handler.path).path).lstrip("/")


def serve_forever(folder: Path, host: str = "127.0.0.1", port: int = 8000) -> None:
    """Serve ``folder`` in the foreground (``taxi-platform mirror``) until Ctrl-C.

    A missing folder is created: the mirror can start first and serve months as they are
    generated into it.
    """
    Path(folder).mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    # Stop on SIGTERM even when started with it ignored (a parent that ignores it passes
    # that on through exec): without a handler of our own it would never stop.
    signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    with ReleaseMirror(folder, host=host, port=port) as mirror:
        print(f"Serving {mirror.folder} at {mirror.base_url}")
        published = mirror.published_paths()
        for path in published[:20]:
            print(f"  {mirror.url_for(path)}")
        if len(published) > 20:
            print(f"  ... and {len(published) - 20} more files")
        if not published:
            print("  (no files yet: generate months into the folder; they show up as written)")
        print(
            f"Point the trip file sources at it: TAXI_SOURCE_URL={mirror.base_url} "
            f"TAXI_TLC_URL={mirror.tlc_url}",
            flush=True,
        )
        try:
            stop.wait()
        except KeyboardInterrupt:
            pass


class _MirrorServer(ThreadingHTTPServer):
    daemon_threads = True
    mirror: ReleaseMirror

    def handle_error(self, request: object, client_address: tuple[str, int]) -> None:
        """A client that hangs up (a cancelled download, a reset while its request is read)
        is no fault of the mirror: no traceback on the terminal for it."""
        if isinstance(sys.exc_info()[1], ConnectionError):
            logger.debug("client %s hung up", client_address[0])
            return
        super().handle_error(request, client_address)


class _MirrorRequestHandler(BaseHTTPRequestHandler):
    # HTTP/1.1 keeps connections alive between requests of one client session, like
    # the CDN; every answer therefore carries a Content-Length.
    protocol_version = "HTTP/1.1"
    server: _MirrorServer

    def do_GET(self) -> None:
        self._answer("GET")

    def do_HEAD(self) -> None:
        self._answer("HEAD")

    def _answer(self, method: str) -> None:
        try:
            self.server.mirror.handle_request(self, method)
        except ConnectionError:
            # The client went away mid-answer (a cancelled or timed-out download).
            self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        # Quiet: test output and the CLI's terminal are not an access log.
        logger.debug("%s %s", self.address_string(), format % args)


def _not_modified(handler: BaseHTTPRequestHandler, etag: str, mtime: float) -> bool:
    if_none_match = handler.headers.get("If-None-Match")
    if if_none_match is not None:
        tags = [tag.strip() for tag in if_none_match.split(",")]
        return "*" in tags or etag in tags or f"W/{etag}" in tags
    if_modified_since = handler.headers.get("If-Modified-Since")
    if if_modified_since:
        try:
            since = email.utils.parsedate_to_datetime(if_modified_since).timestamp()
        except (TypeError, ValueError):
            return False
        return int(mtime) <= since
    return False


def _byte_range(
    handler: BaseHTTPRequestHandler, etag: str, size: int
) -> tuple[int, int] | str | None:
    """(start, length) of a satisfiable single range, "unsatisfiable", or None (whole)."""
    header = handler.headers.get("Range")
    if not header:
        return None
    if_range = handler.headers.get("If-Range")
    if if_range is not None and if_range.strip() != etag:
        return None  # the file changed since the client's first part: send it whole
    match = _RANGE.fullmatch(header.strip())
    if match is None or match.group(1) == match.group(2) == "":
        return None  # multiple or malformed ranges: ignoring Range is allowed
    first, last = match.groups()
    if first == "":  # a suffix: the last N bytes
        length = min(int(last), size)
        return (size - length, length) if length > 0 else "unsatisfiable"
    start = int(first)
    if start >= size:
        return "unsatisfiable"
    end = size - 1 if last == "" else min(int(last), size - 1)
    if end < start:
        return None
    return start, end - start + 1


def _copy(source: BinaryIO, handler: BaseHTTPRequestHandler, remaining: int) -> None:
    while remaining > 0:
        chunk = source.read(min(_CHUNK_BYTES, remaining))
        if not chunk:
            break
        handler.wfile.write(chunk)
        remaining -= len(chunk)
    handler.wfile.flush()


def _content_type(file: Path) -> str:
    if file.name.endswith(".gz"):
        return "application/gzip"
    if file.suffix == ".csv":
        return "text/csv"
    return "application/octet-stream"
