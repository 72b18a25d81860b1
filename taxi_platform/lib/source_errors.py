"""What a trip file source can answer besides the file: kept in ``lib`` so that the
landing code (``lib/landing.py``) and the source resource share them."""


class MonthNotPublished(Exception):
    """The source answered 404: the month is not (yet) published."""


class SourceUnavailable(Exception):
    """The source kept failing (5xx, connection errors, downloads cut mid-file) after every
    retry; worth another try later."""
