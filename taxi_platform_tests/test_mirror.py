"""The release mirror serves generated months like the releases do, and fails on demand."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
import requests
import urllib3

from taxi_platform.lib.catalog import GREEN, YELLOW
from taxi_platform.tools.generate import write_month, write_zone_lookup
from taxi_platform.tools.mirror import ReleaseMirror
from taxi_platform_tests.support.http_faults import FaultyMirror

JANUARY = date(2019, 1, 1)
GREEN_JANUARY = GREEN.release_path(JANUARY)
TIMEOUT = 10


@pytest.fixture(scope="module")
def release_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("releases")
    write_month(GREEN, JANUARY, 2000, folder)
    write_month(YELLOW, JANUARY, 2000, folder)
    write_zone_lookup(folder)
    return folder


@pytest.fixture
def mirror(release_dir: Path) -> Iterator[ReleaseMirror]:
    with ReleaseMirror(release_dir) as running:
        yield running


@pytest.fixture
def faulty(release_dir: Path) -> Iterator[FaultyMirror]:
    with FaultyMirror(release_dir) as running:
        yield running


def test_base_url_is_the_bound_local_port(mirror: ReleaseMirror) -> None:
    assert mirror.base_url.startswith("http://127.0.0.1:")
    assert not mirror.base_url.endswith("/")
    assert mirror.port != 0
    assert mirror.url_for(GREEN_JANUARY) == f"{mirror.base_url}/{GREEN_JANUARY}"


def test_get_streams_the_file_with_its_length_and_validators(
    mirror: ReleaseMirror, release_dir: Path
) -> None:
    expected = (release_dir / GREEN_JANUARY).read_bytes()

    with requests.get(mirror.url_for(GREEN_JANUARY), stream=True, timeout=TIMEOUT) as response:
        body = b"".join(response.iter_content(64 * 1024))

    assert response.status_code == 200
    assert int(response.headers["Content-Length"]) == len(expected)
    assert body == expected
    assert response.headers["ETag"].startswith('"')
    assert response.headers["Last-Modified"].endswith("GMT")
    assert response.headers["Accept-Ranges"] == "bytes"
    header = gzip.decompress(body).split(b"\n", 1)[0].decode()
    assert header == ",".join(GREEN.header)


def test_zone_lookup_is_served_at_its_release_path(mirror: ReleaseMirror) -> None:
    response = requests.get(mirror.url_for("misc/taxi_zone_lookup.csv"), timeout=TIMEOUT)

    assert response.status_code == 200
    assert response.content.startswith(b'"LocationID","Borough","Zone","service_zone"')


def test_head_gives_the_headers_without_the_body(mirror: ReleaseMirror, release_dir: Path) -> None:
    size = (release_dir / YELLOW.release_path(JANUARY)).stat().st_size

    response = requests.head(mirror.url_for(YELLOW.release_path(JANUARY)), timeout=TIMEOUT)

    assert response.status_code == 200
    assert int(response.headers["Content-Length"]) == size
    assert response.content == b""


@pytest.mark.parametrize(
    "path",
    [
        GREEN.release_path(date(2030, 1, 1)),  # a month not published
        "green/",
        "",
        "green/../../etc/passwd",
        "green/%2e%2e/%2e%2e/etc/passwd",
    ],
)
def test_anything_but_a_published_file_is_404(mirror: ReleaseMirror, path: str) -> None:
    assert requests.get(f"{mirror.base_url}/{path}", timeout=TIMEOUT).status_code == 404
    assert requests.head(f"{mirror.base_url}/{path}", timeout=TIMEOUT).status_code == 404


def test_a_month_being_written_is_invisible_until_complete(tmp_path: Path) -> None:
    with ReleaseMirror(tmp_path) as mirror:
        url = mirror.url_for(GREEN.release_path(date(2019, 2, 1)))
        (tmp_path / "green").mkdir()
        partial = tmp_path / "green" / f".{GREEN.gz_name(date(2019, 2, 1))}.abc.part"
        partial.write_bytes(b"half a month")
        assert (
            requests.get(mirror.url_for(f"green/{partial.name}"), timeout=TIMEOUT).status_code
            == 404
        )
        assert requests.head(url, timeout=TIMEOUT).status_code == 404

        write_month(GREEN, date(2019, 2, 1), 10, tmp_path)

        assert requests.head(url, timeout=TIMEOUT).status_code == 200


def test_conditional_get_answers_not_modified(mirror: ReleaseMirror) -> None:
    url = mirror.url_for(GREEN_JANUARY)
    first = requests.get(url, timeout=TIMEOUT)

    by_etag = requests.get(url, headers={"If-None-Match": first.headers["ETag"]}, timeout=TIMEOUT)
    by_date = requests.get(
        url, headers={"If-Modified-Since": first.headers["Last-Modified"]}, timeout=TIMEOUT
    )
    stale = requests.get(url, headers={"If-None-Match": '"something-else"'}, timeout=TIMEOUT)

    assert (by_etag.status_code, by_etag.content) == (304, b"")
    assert by_date.status_code == 304
    assert stale.status_code == 200 and stale.content == first.content


def test_range_request_resumes_a_download(mirror: ReleaseMirror, release_dir: Path) -> None:
    expected = (release_dir / GREEN_JANUARY).read_bytes()
    url = mirror.url_for(GREEN_JANUARY)

    tail = requests.get(url, headers={"Range": "bytes=1000-"}, timeout=TIMEOUT)
    middle = requests.get(url, headers={"Range": "bytes=10-19"}, timeout=TIMEOUT)
    beyond = requests.get(url, headers={"Range": f"bytes={len(expected)}-"}, timeout=TIMEOUT)

    assert tail.status_code == 206 and tail.content == expected[1000:]
    assert tail.headers["Content-Range"] == f"bytes 1000-{len(expected) - 1}/{len(expected)}"
    assert middle.content == expected[10:20]
    assert beyond.status_code == 416


def test_stopped_mirror_refuses_connections(release_dir: Path) -> None:
    mirror = ReleaseMirror(release_dir).start()
    url = mirror.url_for(GREEN_JANUARY)
    assert requests.head(url, timeout=TIMEOUT).status_code == 200

    mirror.stop()

    with pytest.raises(requests.ConnectionError):
        requests.head(url, timeout=TIMEOUT)
    mirror.stop()  # stopping twice is harmless


def test_faulty_mirror_fails_a_path_the_given_number_of_times(faulty: FaultyMirror) -> None:
    faulty.fail_next(GREEN_JANUARY, status=503, times=2)
    url = faulty.url_for(GREEN_JANUARY)

    statuses = [requests.get(url, timeout=TIMEOUT).status_code for _ in range(3)]
    other = requests.get(faulty.url_for(YELLOW.release_path(JANUARY)), timeout=TIMEOUT)

    assert statuses == [503, 503, 200]
    assert other.status_code == 200
    assert faulty.requests_for(GREEN_JANUARY) == ["GET", "GET", "GET"]
    assert faulty.requests[-1] == ("GET", "/" + YELLOW.release_path(JANUARY))


def test_faulty_mirror_cuts_a_download_short(faulty: FaultyMirror, release_dir: Path) -> None:
    expected = (release_dir / GREEN_JANUARY).read_bytes()
    faulty.truncate(GREEN_JANUARY, keep_bytes=5000, times=2)
    url = faulty.url_for(GREEN_JANUARY)

    # What the server sent: exactly the first 5000 bytes, the full length announced.
    sent = bytearray()
    with pytest.raises(urllib3.exceptions.ProtocolError, match="IncompleteRead"):
        with requests.get(url, stream=True, timeout=TIMEOUT) as response:
            assert int(response.headers["Content-Length"]) == len(expected)
            for chunk in response.raw.stream(1024, decode_content=False):
                sent += chunk
    assert bytes(sent) == expected[:5000]
    with pytest.raises((EOFError, zlib.error)):
        gzip.decompress(bytes(sent))

    # What a requests client sees: an error, after a prefix of the file (urllib3 may
    # hold back the last partial buffer, so the prefix can be shorter than 5000).
    received = bytearray()
    with pytest.raises(requests.exceptions.ChunkedEncodingError):
        with requests.get(url, stream=True, timeout=TIMEOUT) as response:
            for chunk in response.iter_content(1024):
                received += chunk
    assert len(received) <= 5000 and bytes(received) == expected[: len(received)]

    # The fault was for two GETs: the retry gets the whole file.
    assert requests.get(url, timeout=TIMEOUT).content == expected


def test_faulty_mirror_truncation_leaves_head_alone(faulty: FaultyMirror) -> None:
    faulty.truncate(GREEN_JANUARY, keep_bytes=10)

    response = requests.head(faulty.url_for(GREEN_JANUARY), timeout=TIMEOUT)

    assert response.status_code == 200


def test_faulty_mirror_serves_arbitrary_bytes(faulty: FaultyMirror) -> None:
    path = GREEN.release_path(date(2019, 5, 1))  # no such file in the folder
    faulty.serve_bytes(path, b"not a gzip file")

    response = requests.get(faulty.url_for(path), timeout=TIMEOUT)
    head = requests.head(faulty.url_for(path), timeout=TIMEOUT)

    assert response.status_code == 200 and response.content == b"not a gzip file"
    assert int(head.headers["Content-Length"]) == len(b"not a gzip file")
    faulty.clear()
    assert requests.get(faulty.url_for(path), timeout=TIMEOUT).status_code == 404


def test_faulty_mirror_drops_connections(faulty: FaultyMirror) -> None:
    faulty.drop_next(GREEN_JANUARY, times=1)
    url = faulty.url_for(GREEN_JANUARY)

    with pytest.raises(requests.ConnectionError):
        requests.get(url, timeout=TIMEOUT)
    assert requests.get(url, timeout=TIMEOUT).status_code == 200
