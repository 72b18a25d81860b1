"""The limits of the checks that tolerate some dirt, as a resource users can set."""

import dagster as dg
from pydantic import Field


class CheckThresholds(dg.ConfigurableResource):
    """Limits of the checks that tolerate some dirt, as real files have it."""

    outside_month_warn_share: float = Field(
        default=0.01,
        description=(
            "Share of a month's rows picked up outside the month above which the check "
            "warns. Real files have some (late reports, clock errors from 2008/2009)."
        ),
    )
