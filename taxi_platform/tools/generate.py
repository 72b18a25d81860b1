"""Realistic trip files for offline use: the releases' months, made up but shaped like them.

Tests, demos and benchmarks need months that look like the DataTalksClub files down to the
quirks the loaders must survive, without the network and at any size up to the real ones
(yellow 2019-01 has 7.7M rows). So the generator copies the files' *form* exactly: the
catalogue's header, LF lines, ``YYYY-MM-DD HH:MM:SS`` timestamps, distances as ``.86`` /
``2.10``, amounts as ``8`` / ``0.5`` / ``11.8``, an empty ``congestion_surcharge`` in
January 2019, an always empty ``ehail_fee``, rows with empty ids from 2020 on, pickups
outside the month (including the 2008/2009 clock errors) and exact duplicate rows.

Speed comes from doing almost nothing per row: every field but the clock is drawn from
pools of pre-formatted fragments (a "trip" fragment holds the consistent money of a ride),
rows are built by one f-string in a list comprehension per hour of the month, and each hour
goes to the gzip stream as one joined block, compressed in a second thread. Memory is a
few hours of rows, whatever the month's size. Output depends only on the arguments:
same seed, byte-identical file.
"""

from __future__ import annotations

import bisect
import calendar
import functools
import gzip
import itertools
import math
import os
import queue
import random
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import BinaryIO

from taxi_platform.lib.catalog import TaxiType
from taxi_platform.lib.months import next_month

# Real files start with pickups in the month before, a few just after, and a few from
# device clocks reset to around New Year 2003 or 2009.
_FAR_OFF_HOURS = (
    datetime(2002, 12, 31, 23),
    datetime(2003, 1, 1, 0),
    datetime(2008, 12, 31, 23),
    datetime(2009, 1, 1, 0),
)
# Kinds of planned odd rows.
_PREVIOUS, _FAR_OFF, _NEXT = "previous", "far_off", "next"
_DUPLICATE, _BACKWARDS = "duplicate", "backwards"
# Order in which out-of-month kinds are handed out, so even a small file has each of the
# first two (the cases the loaders' "outside the month" check must see).
_OUT_OF_MONTH_CYCLE = (_PREVIOUS, _FAR_OFF, _PREVIOUS, _NEXT, _PREVIOUS, _PREVIOUS)

# Trips per hour of the day and per weekday (Monday first), relative: the night is quiet
# and the evening busy, so a day's partition is not flat.
_HOUR_WEIGHTS = (
    0.55, 0.40, 0.30, 0.20, 0.15, 0.18, 0.40, 0.70, 0.85, 0.85, 0.85, 0.90,
    0.95, 0.95, 1.00, 1.00, 0.95, 1.05, 1.15, 1.10, 1.00, 1.00, 0.95, 0.80,
)  # fmt: skip
_WEEKDAY_WEIGHTS = (0.93, 1.00, 1.03, 1.05, 1.07, 1.00, 0.85)

# Busy pickup zones, as in the real files: Manhattan for yellow, the outer boroughs for
# green. They also make up the generated zone lookup's Yellow Zone.
_YELLOW_HOT_ZONES = (
    237, 161, 236, 162, 230, 186, 170, 142, 48, 234, 239, 163, 132, 138, 141, 68, 79, 100,
    107, 140, 263, 249, 113, 164, 90, 246, 229, 43, 238, 114, 158, 233, 137, 231, 13, 87,
)  # fmt: skip
_GREEN_HOT_ZONES = (
    74, 75, 41, 42, 166, 7, 82, 95, 97, 181, 244, 65, 129, 255, 260, 61, 49, 25, 66, 33,
    116, 152, 256, 223, 226, 92, 130, 80, 17, 179,
)  # fmt: skip
_ZONE_COUNT = 265
_UNKNOWN_ZONES = (264, 265)
_AIRPORT_ZONES = {132: "JFK Airport", 138: "LaGuardia Airport"}

# Pools of pre-formatted fragments. Big enough that a month's rows are all different
# (a repeat needs the same trip, second and zones), small enough to build in a blink.
_MAX_TRIP_POOL = 4096
_MAX_PLACE_POOL = 8192
_MAX_STREAM = 65521
_MAX_DURATION = 5 * 3600  # seconds; longer rides are meter errors the files rarely show
# Shares of the quirks (of rows), with a floor so that a small test file has them too.
_OUT_OF_MONTH_SHARE, _MIN_OUT_OF_MONTH = 0.0002, 3
_DUPLICATE_SHARE, _MIN_DUPLICATES = 0.0002, 2
_BACKWARDS_SHARE = 0.00002
_QUIRK_FLOOR_ROWS = 10  # below this a file is too small to carry quirks
_EMPTY_IDS_SHARE = {"yellow": 0.04, "green": 0.12}  # real green 2020+ has many more
_GZIP_LEVEL = 1


def write_month(taxi: TaxiType, month_start: date, rows: int, out_dir: Path, seed: int = 0) -> Path:
    """Write a month's file at ``out_dir / taxi.release_path(month_start)`` and return it.

    Any row count works, 0 included (header only). The file is renamed into place when
    complete, so a reader (or a mirror serving the folder) never sees half a month.
    """
    if rows < 0:
        raise ValueError(f"rows must be >= 0, got {rows}")
    target = Path(out_dir) / taxi.release_path(month_start)
    with _replacing(target) as raw:
        # Fixed name and mtime in the gzip header: same arguments, same bytes.
        with gzip.GzipFile(
            filename=taxi.csv_name(month_start),
            mode="wb",
            fileobj=raw,
            compresslevel=_GZIP_LEVEL,
            mtime=0,
        ) as compressed:
            _write_behind(iter_blocks(taxi, month_start, rows, seed), compressed)
    return target


@contextmanager
def _replacing(target: Path) -> Iterator[BinaryIO]:
    """A temporary file beside ``target``, renamed onto it only if the block succeeds.

    Its name starts with a dot, which the release mirror never serves: a month shows up
    complete or not at all, even while a mirror serves the folder being written.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary_name = tempfile.mkstemp(
        dir=target.parent, prefix=f".{target.name}.", suffix=".part"
    )
    temporary = Path(temporary_name)
    try:
        with os.fdopen(handle, "wb") as raw:
            yield raw
        os.replace(temporary, target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _write_behind(blocks: Iterator[str], compressed: gzip.GzipFile) -> None:
    """Compress and write ``blocks`` in a second thread while the next ones are made.

    zlib lets go of the GIL while it deflates, so on two cores compression overlaps
    generation almost for free. The queue is short: memory stays a few hours of rows.
    """
    pending: queue.Queue[bytes | None] = queue.Queue(maxsize=4)
    failures: list[BaseException] = []

    def drain() -> None:
        try:
            while (data := pending.get()) is not None:
                compressed.write(data)
        except BaseException as error:  # handed to the producer, which re-raises it
            failures.append(error)
            while pending.get() is not None:  # keep the producer from blocking
                pass

    writer = threading.Thread(target=drain, name="generate-gzip", daemon=True)
    writer.start()
    try:
        for block in blocks:
            if failures:
                break
            pending.put(block.encode("ascii"))
    finally:
        pending.put(None)
        writer.join()
    if failures:
        raise failures[0]


def iter_rows(taxi: TaxiType, month_start: date, rows: int, seed: int = 0) -> Iterator[str]:
    """The month's CSV lines (header first), without line endings, one at a time.

    For tests and small files; :func:`write_month` uses :func:`iter_blocks`, which is
    the same text in large pieces.
    """
    for block in iter_blocks(taxi, month_start, rows, seed):
        yield from block.splitlines()


def iter_blocks(taxi: TaxiType, month_start: date, rows: int, seed: int = 0) -> Iterator[str]:
    """The month's CSV text in blocks of whole LF-terminated lines, header first.

    One block per hour of the month (so the file runs roughly in time order, as the real
    ones do), and memory stays at an hour of rows.
    """
    month_start = month_start.replace(day=1)
    rng = random.Random(f"{taxi.name}:{month_start:%Y-%m}:{seed}")
    layout = _Layout.of(taxi)
    yield ",".join(taxi.header) + "\n"
    if rows == 0:
        return
    model = _MonthModel.build(taxi, month_start, rows, layout, rng)
    quirks = _plan_quirks(rows, rng)
    quirk_index = 0
    hour_clocks = _hour_clocks()
    days = [
        f"{month_start + timedelta(days=number):%Y-%m-%d} "
        for number in range(calendar.monthrange(month_start.year, month_start.month)[1] + 1)
    ]
    first_row = 0
    last_row = ""
    for day_number, hour, count in _hour_slices(month_start, rows):
        if count == 0:
            continue
        pickup_day, next_day = days[day_number], days[day_number + 1]
        pickup_clock, dropoff_clock = hour_clocks[hour]
        midnight = 86400 - hour * 3600
        # Windows at random offsets into long pre-drawn streams: C-speed slicing instead
        # of three random draws per row, and rows still all differ (see _MonthModel).
        offsets = _window(model.second_stream, count, rng)
        trips = _window(model.trip_stream, count, rng)
        places = _window(model.place_stream, count, rng)
        block = [
            f"{head}{pickup_day}{pickup_clock[offset]},"
            f"{pickup_day if end < midnight else next_day}{dropoff_clock[end]},"
            f"{middle}{place}{tail}"
            for offset, (head, duration, middle, tail), place in zip(
                offsets, trips, places, strict=True
            )
            for end in (offset + duration,)
        ]
        # Quirks land at planned row numbers; they are few, so a slow path is fine.
        stop = first_row + count
        while quirk_index < len(quirks) and quirks[quirk_index][0] < stop:
            row_number, kind = quirks[quirk_index]
            position = row_number - first_row
            if kind == _DUPLICATE:
                block[position] = _duplicate_source(block, position, last_row, rng)
            else:
                block[position] = model.odd_row(kind, rng)
            quirk_index += 1
        last_row = block[-1]
        first_row = stop
        block.append("")
        yield "\n".join(block)


def _window(stream: list, count: int, rng: random.Random) -> list:
    """``count`` consecutive items of a doubled stream from a random offset."""
    length = len(stream) // 2
    if count <= length:
        start = rng.randrange(length)
        return stream[start : start + count]
    parts = []
    while count > 0:  # an hour bigger than the stream (a month of > 40M rows)
        start, take = rng.randrange(length), min(count, length)
        parts.extend(stream[start : start + take])
        count -= take
    return parts


def _plan_quirks(rows: int, rng: random.Random) -> list[tuple[int, str]]:
    """Row numbers (sorted) of the out-of-month, duplicate and backwards rows."""
    if rows < _QUIRK_FLOOR_ROWS:
        return []
    out_of_month = max(_MIN_OUT_OF_MONTH, round(rows * _OUT_OF_MONTH_SHARE))
    duplicates = max(_MIN_DUPLICATES, round(rows * _DUPLICATE_SHARE))
    backwards = round(rows * _BACKWARDS_SHARE)
    kinds = [_OUT_OF_MONTH_CYCLE[i % len(_OUT_OF_MONTH_CYCLE)] for i in range(out_of_month)]
    kinds += [_DUPLICATE] * duplicates + [_BACKWARDS] * backwards
    # Row 0 has nothing before it to duplicate; the rest are fair game.
    positions = rng.sample(range(1, rows), len(kinds))
    return sorted(zip(positions, kinds, strict=True))


def _duplicate_source(block: list[str], position: int, last_row: str, rng: random.Random) -> str:
    """A copy of an earlier row: the one just before half the time, else one a bit back."""
    if position == 0:
        return last_row
    if rng.random() < 0.5:
        return block[position - 1]
    return block[rng.randrange(max(0, position - 200), position)]


def _hour_slices(month_start: date, rows: int) -> Iterator[tuple[int, int, int]]:
    """(day index, hour, rows) for each hour of the month, the rows summing to ``rows``."""
    days = calendar.monthrange(month_start.year, month_start.month)[1]
    weights = [
        _WEEKDAY_WEIGHTS[(month_start + timedelta(days=day)).weekday()] * hour_weight
        for day in range(days)
        for hour_weight in _HOUR_WEIGHTS
    ]
    total = math.fsum(weights)
    cumulative, handed_out = 0.0, 0
    for index, weight in enumerate(weights):
        cumulative += weight
        upto = rows if index == len(weights) - 1 else round(rows * cumulative / total)
        yield index // 24, index % 24, upto - handed_out
        handed_out = upto


@dataclass(frozen=True)
class _Layout:
    """Where a taxi type's columns sit around the pickup/dropoff and location pairs.

    Rows are ``head`` + pickup + dropoff + ``middle`` + ``PU,DO`` + ``tail``; both
    catalogue entries have this shape, so a trip fragment can be pre-joined once.
    """

    head: tuple[str, ...]
    middle: tuple[str, ...]
    tail: tuple[str, ...]

    @classmethod
    def of(cls, taxi: TaxiType) -> _Layout:
        header = list(taxi.header)
        pickup = header.index(taxi.pickup_column)
        pickup_location = header.index("PULocationID")
        if (
            header[pickup + 1] != taxi.dropoff_column
            or header[pickup_location + 1] != "DOLocationID"
            or pickup_location < pickup
        ):
            raise NotImplementedError(f"{taxi.name}: column order the generator cannot lay out")
        return cls(
            head=tuple(header[:pickup]),
            middle=tuple(header[pickup + 2 : pickup_location]),
            tail=tuple(header[pickup_location + 2 :]),
        )

    def fragments(self, fields: dict[str, str]) -> tuple[str, str, str]:
        """(head, middle, tail) text of a trip, with the commas that join them to a row."""

        def joined(names: tuple[str, ...]) -> str:
            return ",".join(fields.get(name, "") for name in names)

        head = joined(self.head) + "," if self.head else ""
        middle = joined(self.middle) + "," if self.middle else ""
        tail = "," + joined(self.tail) if self.tail else ""
        return head, middle, tail


@dataclass(frozen=True)
class _Trip:
    """One ride's fields (formatted as in the files) and its duration in seconds."""

    fields: dict[str, str]
    duration: int


@dataclass
class _MonthModel:
    """The month's pools of pre-formatted fragments, drawn once.

    Rows are made of windows into three streams of different lengths (trips, location
    pairs, second of the hour); each hour takes its windows at independent random
    offsets, so its rows pair trips, places and seconds afresh. A repeated row would need
    the same trip, places and second in the same hour of the same day, which in practice
    never happens: the planned duplicates are the file's duplicates.
    """

    month_start: date
    layout: _Layout
    trips: list[_Trip]
    trip_stream: list[tuple[str, int, str, str]]
    place_stream: list[str]
    second_stream: list[int]

    @classmethod
    def build(
        cls, taxi: TaxiType, month_start: date, rows: int, layout: _Layout, rng: random.Random
    ) -> _MonthModel:
        # A small file needs small pools; a big one gets enough variety per hour.
        stream_length = min(_MAX_STREAM, max(1024, rows))
        trips = [
            _sample_trip(taxi, month_start, rng)
            for _ in range(min(_MAX_TRIP_POOL, max(256, rows // 8)))
        ]
        fragments = [
            (head, trip.duration, middle, tail)
            for trip in trips
            for head, middle, tail in (layout.fragments(trip.fields),)
        ]
        # Different lengths, so that windows do not line up the same way twice.
        trip_stream = rng.choices(fragments, k=stream_length)
        places = _location_pairs(taxi, min(_MAX_PLACE_POOL, stream_length), rng)
        place_stream = rng.choices(places, k=stream_length + 7)
        second_stream = rng.choices(range(3600), k=stream_length + 13)
        return cls(
            month_start=month_start,
            layout=layout,
            trips=trips,
            trip_stream=trip_stream + trip_stream,
            place_stream=place_stream + place_stream,
            second_stream=second_stream + second_stream,
        )

    def odd_row(self, kind: str, rng: random.Random) -> str:
        """A row whose pickup is outside the month, or whose dropoff precedes its pickup."""
        trip = rng.choice(self.trips)
        duration = trip.duration
        if kind == _PREVIOUS:
            pickup = datetime.combine(self.month_start, datetime.min.time()) - timedelta(
                seconds=rng.randrange(60, 20 * 86400)
            )
        elif kind == _NEXT:
            pickup = datetime.combine(next_month(self.month_start), datetime.min.time())
            pickup += timedelta(seconds=rng.randrange(0, 2 * 86400))
        elif kind == _FAR_OFF:
            pickup = rng.choice(_FAR_OFF_HOURS) + timedelta(seconds=rng.randrange(3600))
        else:  # backwards: a clock fixed mid-ride, dropoff before pickup
            day = rng.randrange(
                calendar.monthrange(self.month_start.year, self.month_start.month)[1]
            )
            pickup = datetime.combine(self.month_start, datetime.min.time()) + timedelta(
                days=day, seconds=rng.randrange(3600, 86400)
            )
            duration = -rng.randrange(1, 3600)
        dropoff = pickup + timedelta(seconds=duration)
        head, middle, tail = self.layout.fragments(trip.fields)
        return (
            f"{head}{pickup:%Y-%m-%d %H:%M:%S},{dropoff:%Y-%m-%d %H:%M:%S},"
            f"{middle}{rng.choice(self.place_stream)}{tail}"
        )


def format_amount(cents: int) -> str:
    """An amount as the files print it: ``8``, ``0.5``, ``11.8``, ``14.16``, ``-2.5``."""
    sign = "-" if cents < 0 else ""
    cents = abs(cents)
    whole, part = divmod(cents, 100)
    if part == 0:
        return f"{sign}{whole}"
    if part % 10 == 0:
        return f"{sign}{whole}.{part // 10}"
    return f"{sign}{whole}.{part:02d}"


def format_distance(hundredths: int) -> str:
    """A distance as the files print it: always two decimals, no leading zero (``.86``)."""
    whole, part = divmod(hundredths, 100)
    return f"{whole}.{part:02d}" if whole else f".{part:02d}"


@functools.cache
def _hour_clocks() -> list[tuple[list[str], list[str]]]:
    """Per hour of the day: ``HH:MM:SS`` by second of the hour, and by second from it on.

    The second list runs past midnight (starting again at 00:00:00) far enough for the
    longest ride, so a dropoff is one index away; made once per process.
    """
    two_digits = [f"{number:02d}" for number in range(60)]
    day = [f"{h}:{m}:{s}" for h in two_digits[:24] for m in two_digits for s in two_digits]
    wrapped = day + day
    return [
        (day[start : start + 3600], wrapped[start : start + 3600 + _MAX_DURATION])
        for start in range(0, 86400, 3600)
    ]


@functools.lru_cache(maxsize=256)
def _cumulative(table: tuple[tuple[object, float], ...]) -> tuple[tuple[object, ...], list[float]]:
    values, weights = zip(*table, strict=True)
    return values, list(itertools.accumulate(weights))


def _weighted(rng: random.Random, table: tuple[tuple[object, float], ...]) -> object:
    """One value of ``(value, weight)`` pairs; the pool builder calls this a lot."""
    values, cumulative = _cumulative(table)
    return values[bisect.bisect(cumulative, rng.random() * cumulative[-1], 0, len(values) - 1)]


def _sample_trip(taxi: TaxiType, month_start: date, rng: random.Random) -> _Trip:
    """One plausible ride, its amounts adding up the way the meters add them."""
    green = taxi.name == "green"
    empty_ids = month_start.year >= 2020 and rng.random() < _EMPTY_IDS_SHARE.get(taxi.name, 0.05)
    vendor, ratecode, trip_type = _sample_codes(green, rng)
    hundredths = _sample_hundredths(green, vendor, ratecode, rng)
    duration = _sample_duration(hundredths, rng)
    money = _sample_money(
        green, vendor, ratecode, trip_type, hundredths / 100, duration, month_start, rng
    )
    passengers = _weighted(
        rng,
        ((1, 0.70), (2, 0.14), (3, 0.05), (5, 0.035), (6, 0.025), (0, 0.025), (4, 0.025)),
    )
    fields = {
        "VendorID": str(vendor),
        "passenger_count": str(passengers),
        "trip_distance": format_distance(hundredths),
        "RatecodeID": str(ratecode),
        "store_and_fwd_flag": "Y" if rng.random() < 0.01 else "N",
        "payment_type": str(money.payment),
        **money.fields(),
        "trip_type": str(trip_type),
    }
    if empty_ids:
        # From 2020 on, rows sent by no known vendor carry no ids and no flags.
        for name in _IDS_EMPTY_FROM_2020:
            fields[name] = ""
    return _Trip(fields, duration)


_IDS_EMPTY_FROM_2020 = (
    "VendorID",
    "passenger_count",
    "RatecodeID",
    "store_and_fwd_flag",
    "payment_type",
    "trip_type",
)


def _sample_codes(green: bool, rng: random.Random) -> tuple[int, int, int]:
    """Vendor, rate code and trip type (green dispatches are negotiated fares)."""
    vendor = _weighted(
        rng, ((1, 0.25), (2, 0.75)) if green else ((1, 0.32), (2, 0.675), (4, 0.005))
    )
    # Green meters never send 99 (unknown rate); yellow ones rarely do.
    ratecode = _weighted(
        rng,
        ((1, 0.955), (2, 0.02), (5, 0.015), (3, 0.004), (4, 0.005), (99, 0 if green else 0.001)),
    )
    trip_type = 1
    if green and (ratecode == 5 or rng.random() < 0.01):
        trip_type, ratecode = 2, 5
    return vendor, ratecode, trip_type


def _sample_hundredths(green: bool, vendor: int, ratecode: int, rng: random.Random) -> int:
    """Distance in hundredths of a mile: mostly short hops, a long tail, some zero-mile
    rides (cancelled or meter errors), JFK flat fares far out."""
    if ratecode == 2:
        hundredths = round(rng.uniform(15.0, 22.0) * 100)
    elif rng.random() < 0.015:
        hundredths = 0
    else:
        median = 2.4 if green else 1.7
        hundredths = round(min(rng.lognormvariate(math.log(median), 0.85), 80.0) * 100)
    if vendor == 1 and not green:
        hundredths = round(hundredths, -1)  # vendor 1's meters print tenths: 2.10, 14.70
    return hundredths


def _sample_duration(hundredths: int, rng: random.Random) -> int:
    """Seconds: city speeds with traffic; zero-mile rides are short."""
    if hundredths == 0:
        duration = rng.randrange(0, 600)
    else:
        mph = rng.uniform(5.0, 22.0)
        miles = hundredths / 100
        duration = int(miles / mph * 3600) + rng.randrange(30, 240)
    return min(duration, _MAX_DURATION)


@dataclass
class _Money:
    """A ride's amounts in cents, as the meter adds them, and how it was paid."""

    fare: int
    extra: int
    mta_tax: int
    tip: int
    tolls: int
    improvement: int
    congestion: int | None
    payment: int

    def fields(self) -> dict[str, str]:
        amounts = [self.fare, self.extra, self.mta_tax, self.tip, self.tolls, self.improvement]
        return {
            "fare_amount": format_amount(self.fare),
            "extra": format_amount(self.extra),
            "mta_tax": format_amount(self.mta_tax),
            "tip_amount": format_amount(self.tip),
            "tolls_amount": format_amount(self.tolls),
            "ehail_fee": "",
            "improvement_surcharge": format_amount(self.improvement),
            "total_amount": format_amount(sum(amounts) + (self.congestion or 0)),
            "congestion_surcharge": (
                "" if self.congestion is None else format_amount(self.congestion)
            ),
        }


def _sample_money(
    green: bool,
    vendor: int,
    ratecode: int,
    trip_type: int,
    miles: float,
    duration: int,
    month_start: date,
    rng: random.Random,
) -> _Money:
    if ratecode == 2:
        fare = 5200
    elif ratecode == 5:
        fare = rng.randrange(5, 90) * 100
    else:
        metered = 2.5 + 2.5 * miles + 0.2 * duration / 60
        if ratecode in (3, 4):
            metered *= 1.8
        fare = max(250, round(metered * 2) * 50)
    extra = _weighted(rng, ((0, 0.50), (50, 0.35), (100, 0.14), (450, 0.01)))
    mta_tax = 0 if trip_type == 2 else 50
    improvement = 30
    toll_price = 576 if month_start < date(2019, 4, 1) else 612
    tolls = _weighted(rng, ((0, 0.95), (toll_price, 0.04), (2 * toll_price, 0.005), (1175, 0.005)))
    congestion = _sample_congestion(green, month_start, rng)
    if not green and vendor == 1 and congestion:
        extra += congestion  # vendor 1 folds the surcharge into extra too (3, 3.5)
    payment = _weighted(rng, ((1, 0.68), (2, 0.30), (3, 0.01), (4, 0.01)))
    tip = 0
    if payment == 1 and rng.random() < 0.85:
        base = fare + extra + mta_tax + improvement + tolls
        tip = (
            rng.randrange(1, 6) * 100
            if rng.random() < 0.2
            else round(base * rng.uniform(0.15, 0.3))
        )
    money = _Money(fare, extra, mta_tax, tip, tolls, improvement, congestion, payment)
    if rng.random() < 0.005:  # refunds and voids: every amount negated
        money = _Money(
            -fare, -extra, -mta_tax, -tip, -tolls, -improvement,
            -congestion if congestion else congestion, rng.choice((3, 4)),
        )  # fmt: skip
    return money


def _sample_congestion(green: bool, month_start: date, rng: random.Random) -> int | None:
    """The congestion surcharge in cents; None (an empty field) before February 2019."""
    if month_start < date(2019, 2, 1):
        return None
    if green:
        return _weighted(rng, ((0, 0.85), (275, 0.10), (250, 0.03), (75, 0.02)))
    return _weighted(rng, ((250, 0.75), (0, 0.25)))


def _location_pairs(taxi: TaxiType, size: int, rng: random.Random) -> list[str]:
    """``PU,DO`` fragments: busy zones often, any zone sometimes, the unknown ones rarely."""
    hot = _GREEN_HOT_ZONES if taxi.name == "green" else _YELLOW_HOT_ZONES
    zones = list(range(1, _ZONE_COUNT + 1))
    weights = [30.0 if zone in hot else 1.0 for zone in zones]
    for unknown in _UNKNOWN_ZONES:
        weights[unknown - 1] = 3.0
    pickups = rng.choices(zones, weights=weights, k=size)
    dropoffs = rng.choices(zones, weights=[w if w < 30 else 12.0 for w in weights], k=size)
    # A fair share of rides start and end in the same zone, as in the files.
    return [
        f"{pickup},{pickup if rng.random() < 0.06 else dropoff}"
        for pickup, dropoff in zip(pickups, dropoffs, strict=True)
    ]


# The generated zone lookup: the real file's boroughs and service zones in the real
# proportions, with made-up zone names (the real names are not ours to ship).
_BOROUGH_ZONES = (
    ("Manhattan", "Yellow Zone", 55),
    ("Queens", "Boro Zone", 67),
    ("Brooklyn", "Boro Zone", 61),
    ("Bronx", "Boro Zone", 43),
    ("Staten Island", "Boro Zone", 20),
    ("Manhattan", "Boro Zone", 14),
)
_ZONE_STEMS = (
    "Arden", "Bayview", "Beacon", "Briar", "Cedar", "Chapel", "Clover", "Crescent", "Elm",
    "Fairview", "Fox", "Garnet", "Glen", "Harbor", "Hazel", "Holly", "Juniper", "Laurel",
    "Linden", "Maple", "Meadow", "Mill", "Oak", "Orchard", "Pine", "Quarry", "Ridge",
    "Spruce", "Stone", "Willow",
)  # fmt: skip
_ZONE_SUFFIXES = (
    "Heights", "Park", "Village", "Hill", "Gardens", "Point", "Square", "East", "West",
    "North", "South", "Beach", "Terrace",
)  # fmt: skip


def write_zone_lookup(out_dir: Path) -> Path:
    """Write ``out_dir/misc/taxi_zone_lookup.csv``: 265 zones shaped like the real lookup.

    Quoted fields and CRLF line ends, as the file the releases publish; ids 1 (Newark
    Airport, EWR), 132 and 138 (Queens airports), 264 and 265 (Unknown) keep the roles
    they have in the real file, and the busy yellow pickup zones are Manhattan's Yellow Zone.
    """
    rng = random.Random("taxi_zone_lookup")
    fixed: dict[int, tuple[str, str, str]] = {
        1: ("EWR", "Newark Airport", "EWR"),
        264: ("Unknown", "NV", "N/A"),
        265: ("Unknown", "NA", "N/A"),
    }
    for zone, name in _AIRPORT_ZONES.items():
        fixed[zone] = ("Queens", name, "Airports")
    open_ids = [zone for zone in range(1, _ZONE_COUNT + 1) if zone not in fixed]
    names = rng.sample([f"{s} {x}" for s in _ZONE_STEMS for x in _ZONE_SUFFIXES], len(open_ids))
    # The busy yellow pickup zones come first so that they land in the Yellow Zone.
    busy = [zone for zone in _YELLOW_HOT_ZONES if zone in open_ids]
    rest = [zone for zone in open_ids if zone not in busy]
    rng.shuffle(rest)
    roles = [(borough, service) for borough, service, count in _BOROUGH_ZONES for _ in range(count)]
    for zone, (borough, service_zone), name in zip(busy + rest, roles, names, strict=True):
        fixed[zone] = (borough, name, service_zone)

    lines = ['"LocationID","Borough","Zone","service_zone"']
    for zone in range(1, _ZONE_COUNT + 1):
        borough, name, service_zone = fixed[zone]
        lines.append(f'{zone},"{borough}","{name}","{service_zone}"')
    target = Path(out_dir) / "misc" / "taxi_zone_lookup.csv"
    with _replacing(target) as raw:
        raw.write(("\r\n".join(lines) + "\r\n").encode("ascii"))
    return target
