"""The trip file sources: where the monthly files are published, and which serves a month.

Two sources, one catalogue:

- ``course``: the DataTalksClub ``nyc-tlc-data`` GitHub releases (``.csv.gz``, 2019-01 to
  2021-07), the files the zoomcamp tables were loaded from (``base_url``);
- ``tlc``: the NYC TLC's own monthly Parquet files, every month to the present
  (``tlc_url``, files directly under it), converted to the catalogue's CSV on landing.

``sources`` says which are used: ``course,tlc`` (course months from the course releases,
every other month from the TLC), ``tlc`` or ``course``. Tests and offline use point both
URLs at a mirror (``taxi-platform mirror`` serves both layouts).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date

import dagster as dg
import requests

from taxi_platform.lib.catalog import FIRST_PUBLISHED_MONTH, LAST_PUBLISHED_MONTH, TaxiType
from taxi_platform.lib.source_errors import MonthNotPublished, SourceUnavailable

DEFAULT_SOURCE_URL = "https://github.com/DataTalksClub/nyc-tlc-data/releases/download"
DEFAULT_TLC_URL = "https://d37ci6vzurychx.cloudfront.net/trip-data"
DEFAULT_SOURCES = "course,tlc"
COURSE, TLC = "course", "tlc"
KNOWN_SOURCES = (COURSE, TLC)


def parse_sources(text: str) -> tuple[str, ...]:
    """``course,tlc``, ``tlc`` or ``course`` as a tuple; anything else is refused."""
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = [name for name in names if name not in KNOWN_SOURCES]
    if unknown or not names:
        raise ValueError(f"TAXI_SOURCES={text!r}: expected course,tlc, tlc or course")
    return names


def last_served_month(names: tuple[str, ...]) -> date | None:
    """The last month the sources ``names`` can serve: None (no end) when the TLC is used."""
    return None if TLC in names else LAST_PUBLISHED_MONTH


class TripFileSource(dg.ConfigurableResource):
    """HTTP access to the release files, with timeouts and retries with backoff.

    Retries cover what a later attempt can fix: connection errors, timeouts and 5xx
    answers. A 404 is final: the month is not published, and retrying would only delay
    the message that says so. A transfer cut mid-file (a dropped connection, a read
    timeout) is resumed where it stopped, up to ``max_attempts`` times per download
    (``taxi_platform.lib.landing``).
    """

    base_url: str = DEFAULT_SOURCE_URL
    tlc_url: str = DEFAULT_TLC_URL
    sources: str = DEFAULT_SOURCES
    connect_timeout_seconds: float = 10.0
    read_timeout_seconds: float = 60.0
    max_attempts: int = 4
    backoff_seconds: float = 1.0

    @property
    def source_names(self) -> tuple[str, ...]:
        return parse_sources(self.sources)

    def source_for(self, month_start: date) -> str:
        """``course`` or ``tlc``: the source that serves the month.

        The course releases serve their own months when they are used (so loads stay
        identical to the zoomcamp tables); the TLC serves every other month. With
        ``course`` alone a later month is still asked of the course releases (a 404 that
        says which months they hold).
        """
        names = self.source_names
        in_course = FIRST_PUBLISHED_MONTH <= month_start <= LAST_PUBLISHED_MONTH
        if COURSE in names and (in_course or TLC not in names):
            return COURSE
        return TLC

    def served_months(self, source: str) -> str:
        """Which months a source serves, as the UI's messages say it."""
        if source == COURSE:
            return (
                f"the course releases ({self.base_url}) hold "
                f"{FIRST_PUBLISHED_MONTH:%Y-%m} to {LAST_PUBLISHED_MONTH:%Y-%m}"
            )
        return (
            f"the TLC ({self.tlc_url}) publishes every month from {FIRST_PUBLISHED_MONTH:%Y-%m}, "
            "about two months after it ends"
        )

    def last_served_month(self) -> date | None:
        """The last month any source in use can serve: None when the TLC is in use."""
        return last_served_month(self.source_names)

    def is_after_last_month(self, month_start: date) -> bool:
        """Whether no source in use can ever serve the month (past the course releases'
        last month when they are used alone): no partition, nothing to ask for."""
        last_month = self.last_served_month()
        return last_month is not None and month_start > last_month

    def url_for(self, taxi: TaxiType, month_start: date) -> str:
        if self.source_for(month_start) == TLC:
            return f"{self.tlc_url.rstrip('/')}/{taxi.parquet_name(month_start)}"
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
