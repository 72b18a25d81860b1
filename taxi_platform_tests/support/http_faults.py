"""A release mirror that misbehaves on request, for testing the download path.

Real downloads fail in a few typical ways: the CDN answers 5xx for a while, a
connection drops before any answer, or a transfer stops mid-file although the headers
promised the whole length. ``FaultyMirror`` reproduces each on a real socket, so the
ETL's retries, its cut-off detection and its "final table unchanged" promise are tested
against the failures themselves, not against mocks::

    with FaultyMirror(release_dir) as mirror:
        mirror.fail_next("green/green_tripdata_2019-01.csv.gz", status=503, times=2)
        ...  # the third GET gets the file
        assert mirror.requests_for("green/green_tripdata_2019-01.csv.gz") == ["GET"] * 3

Paths are release paths, with or without the leading slash. Faults apply to GET and HEAD
alike unless said otherwise, and each request consumes one use of the first fault that
matches, in this order: failures, drops, substituted bodies, truncation.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from pathlib import Path

from taxi_platform.tools.mirror import ReleaseMirror, request_path


@dataclass
class _Fault:
    times: int | None  # None: every request from now on
    status: int = HTTPStatus.INTERNAL_SERVER_ERROR
    body: bytes = b""
    keep_bytes: int = 0
    stall_seconds: float = 0.0

    def use(self) -> bool:
        """Spend one use; False when none is left."""
        if self.times is None:
            return True
        if self.times <= 0:
            return False
        self.times -= 1
        return True


class FaultyMirror(ReleaseMirror):
    """A :class:`ReleaseMirror` with per-path faults and a log of every request."""

    def __init__(self, folder: Path, host: str = "127.0.0.1", port: int = 0) -> None:
        super().__init__(folder, host=host, port=port)
        self._lock = threading.Lock()
        self._failures: dict[str, _Fault] = {}
        self._drops: dict[str, _Fault] = {}
        self._bodies: dict[str, _Fault] = {}
        self._truncations: dict[str, _Fault] = {}
        # (method, path) of every request, in arrival order, path with a leading slash.
        self.requests: list[tuple[str, str]] = []
        # (path, Range header or None) of every GET, in arrival order.
        self.ranges: list[tuple[str, str | None]] = []

    def fail_next(self, path: str, status: int = 500, times: int = 1) -> None:
        """Answer ``status`` (with a short body) to the next ``times`` requests of ``path``."""
        with self._lock:
            self._failures[_normalized(path)] = _Fault(times=times, status=status)

    def drop_next(self, path: str, times: int = 1) -> None:
        """Close the connection without any answer on the next ``times`` requests."""
        with self._lock:
            self._drops[_normalized(path)] = _Fault(times=times)

    def serve_bytes(
        self, path: str, body: bytes, status: int = 200, times: int | None = None
    ) -> None:
        """Answer ``body`` for ``path`` (whether or not a file exists there)."""
        with self._lock:
            self._bodies[_normalized(path)] = _Fault(times=times, status=status, body=body)

    def truncate(
        self, path: str, keep_bytes: int, times: int | None = None, stall_seconds: float = 0.0
    ) -> None:
        """Send only the first ``keep_bytes`` of the file's body (of the range asked for),
        then close; with ``stall_seconds``, go silent that long before closing (what makes
        a client's read timeout fire).

        The headers still announce the full Content-Length, as when a transfer dies
        mid-file. HEAD requests are answered normally and use nothing up.
        """
        with self._lock:
            self._truncations[_normalized(path)] = _Fault(
                times=times, keep_bytes=keep_bytes, stall_seconds=stall_seconds
            )

    def clear(self) -> None:
        """Forget every fault (the request log stays)."""
        with self._lock:
            for faults in (self._failures, self._drops, self._bodies, self._truncations):
                faults.clear()

    def requests_for(self, path: str) -> list[str]:
        """Methods of the requests made for ``path``, in order."""
        wanted = _normalized(path)
        return [method for method, requested in list(self.requests) if requested == wanted]

    def ranges_for(self, path: str) -> list[str | None]:
        """The Range header of each GET of ``path`` (None: the whole file), in order."""
        wanted = _normalized(path)
        return [header for requested, header in list(self.ranges) if requested == wanted]

    def handle_request(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        path = request_path(handler)
        self.requests.append((method, path))
        if method == "GET":
            self.ranges.append((path, handler.headers.get("Range")))
        with self._lock:
            failure = _take(self._failures, path)
            drop = None if failure else _take(self._drops, path)
            body = None if failure or drop else _take(self._bodies, path)
            truncation = (
                _take(self._truncations, path)
                if method == "GET" and not (failure or drop or body)
                else None
            )
        if failure is not None:
            message = f"{failure.status} {HTTPStatus(failure.status).phrase}\n".encode()
            self.send_body(handler, method, failure.status, message)
        elif drop is not None:
            handler.close_connection = True
        elif body is not None:
            self.send_body(handler, method, body.status, body.body, "application/octet-stream")
        elif truncation is not None:
            file = self.file_for(path)
            if file is None:
                self.send_body(handler, method, HTTPStatus.NOT_FOUND, b"Not Found\n")
            else:
                self.send_file(handler, method, file, keep_bytes=truncation.keep_bytes)
                if truncation.stall_seconds:
                    handler.wfile.flush()
                    time.sleep(truncation.stall_seconds)
        else:
            super().handle_request(handler, method)


def _normalized(path: str) -> str:
    return "/" + path.lstrip("/")


def _take(faults: dict[str, _Fault], path: str) -> _Fault | None:
    fault = faults.get(path)
    if fault is None:
        return None
    if not fault.use():
        del faults[path]
        return None
    if fault.times == 0:
        del faults[path]
    return fault
