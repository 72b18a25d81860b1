"""Resources: every connection and setting the assets use, swapped whole in tests."""

from taxi_platform.resources.landing import LandingArea
from taxi_platform.resources.postgres import PostgresResource
from taxi_platform.resources.trip_source import TripFileSource

__all__ = ["LandingArea", "PostgresResource", "TripFileSource"]
