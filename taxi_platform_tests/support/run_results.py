"""Reading what a `dg.materialize` run reported: metadata of an asset, failure messages."""

import dagster as dg


def metadata(result: dg.ExecuteInProcessResult, key: str) -> dict:
    """The metadata values of asset ``key`` (``raw/green_tripdata_csv``) in this run."""
    for event in result.get_asset_materialization_events():
        if event.asset_key.to_user_string() == key:
            return {name: value.value for name, value in event.materialization.metadata.items()}
    raise AssertionError(f"{key} was not materialized")


def failure_message(result: dg.ExecuteInProcessResult) -> str:
    """Every failed step's message: a ``dg.Failure``'s description, else the error."""
    failures = [event for event in result.all_events if event.is_step_failure]
    assert failures, "the run was expected to fail"
    return "\n".join(
        str(event.step_failure_data.user_failure_data.description)
        if event.step_failure_data.user_failure_data
        else str(event.step_failure_data.error.message)
        for event in failures
    )
