"""The trip file source: where the monthly ``.csv.gz`` files are published.

The default is the DataTalksClub ``nyc-tlc-data`` GitHub releases; tests and offline use
point ``TAXI_SOURCE_URL`` at a mirror with the same layout (``taxi-platform mirror``).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date

import dagster as dg
import requests

from taxi_platform.lib.catalog import TaxiType
from taxi_platform.lib.source_errors import MonthNotPublished, SourceUnavailable

DEFAULT_SOURCE_URL = "https://github.com/DataTalksClub/nyc-tlc-data/releases/download"


class TripFileSource(dg.ConfigurableResource):
    """HTTP access to the release files, with timeouts and retries with backoff.

    Retries cover what a later attempt can fix: connection errors, timeouts and 5xx
    answers. A 404 is final: the month is not published, and retrying would only delay
    the message that says so. A transfer cut mid-file (a dropped connection, a read
    timeout) is resumed where it stopped, up to ``max_attempts`` times per download
    (``taxi_platform.lib.landing``).
    """

    base_url: str = DEFAULT_SOURCE_URL
    connect_timeout_seconds: float = 10.0
    read_timeout_seconds: float = 60.0
    max_attempts: int = 4
    backoff_seconds: float = 1.0

    def url_for(self, taxi: TaxiType, month_start: date) -> str:
        return f"{self.base_url.rstrip('/')}/{taxi.release_path(month_start)}"

    def url_for_path(self, path: str) -> str:
        return f"{self.base_url.rstrip('/')}/{path.lstrip('/')}"

    @contextmanager
    def open_stream(self, url: str) -> Iterator[requests.Response]:
        """An open streaming GET of ``url`` that answered 200, closed on exit."""
        response = self._with_retries(url, lambda: self._get(url))
        try:
            yield response
        finally:
            response.close()

    def resume_stream(self, url: str, offset: int, etag: str | None) -> requests.Response:
        """A streaming GET of ``url`` from byte ``offset`` on, for a download cut mid-file.

        Asks for a ``Range`` valid only while the file is unchanged (``If-Range``); a source
        that ignores ranges, or whose file changed, answers 200 with the whole file, and the
        caller starts again from byte 0 (``status_code`` tells which). The caller closes it.
        """
        headers = {"Range": f"bytes={offset}-"}
        if etag:
            headers["If-Range"] = etag
        return self._with_retries(url, lambda: self._get(url, headers))

    def is_published(self, url: str) -> bool:
        """A cheap HEAD request: does the file exist at the source? (release sensor)"""
        try:
            response = self._with_retries(url, lambda: self._head(url))
        except MonthNotPublished:
            return False
        response.close()
        return True

    def _get(self, url: str, headers: dict[str, str] | None = None) -> requests.Response:
        return requests.get(
            url,
            stream=True,
            headers=headers,
            timeout=(self.connect_timeout_seconds, self.read_timeout_seconds),
        )

    def _head(self, url: str) -> requests.Response:
        return requests.head(
            url,
            allow_redirects=True,
            timeout=(self.connect_timeout_seconds, self.read_timeout_seconds),
        )

    def _with_retries(self, url: str, send) -> requests.Response:
        last_problem = ""
        for attempt in range(1, self.max_attempts + 1):
            try:
                response = send()
            except (requests.ConnectionError, requests.Timeout) as error:
                last_problem = f"{type(error).__name__}: {error}"
            else:
                if response.status_code == 404:
                    response.close()
                    raise MonthNotPublished(f"{url} answered 404 Not Found")
                if response.status_code < 500:
                    if response.status_code >= 400:
                        response.close()
                        raise SourceUnavailable(f"{url} answered HTTP {response.status_code}")
                    return response
                last_problem = f"HTTP {response.status_code}"
                response.close()
            if attempt < self.max_attempts:
                time.sleep(self.backoff_seconds * 2 ** (attempt - 1))
        raise SourceUnavailable(
            f"{url} still failing after {self.max_attempts} attempts (last: {last_problem})"
        )
