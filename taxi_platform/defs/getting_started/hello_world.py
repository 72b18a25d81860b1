"""The tutorial's hello-world flow as an op job, with its concurrency limit and schedule.

It makes no data, so it is a job of ops rather than assets: a greeting, an output handed
to a later step, a pause, and a goodbye.
"""

import time

import dagster as dg
from pydantic import Field

JOB_NAME = "hello_world"
MAX_CONCURRENT_RUNS = 2
# A run counts as running from launch until it ends: a run still STARTING when we look
# will be STARTED a moment later, and would otherwise slip past the limit.
RUNNING_STATUSES = [dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED]
GENERATED_OUTPUT = "I was generated during this workflow."


class HelloWorldConfig(dg.Config):
    """The run config a user sees in the launchpad, like the tutorial flow's inputs."""

    name: str = Field(default="Will", description="Who is greeted and sent off.")
    sleep_seconds: float = Field(
        default=15.0, ge=0, description="How long the run pauses between hello and goodbye."
    )


class GreetingConfig(dg.Config):
    name: str


class SleepConfig(dg.Config):
    seconds: float


@dg.config_mapping
def hello_world_config(flow: HelloWorldConfig) -> dg.RunConfig:
    """One ``name`` for the whole run, instead of one per op that uses it."""
    greeting = GreetingConfig(name=flow.name)
    return dg.RunConfig(
        ops={
            "hello_message": greeting,
            "sleep": SleepConfig(seconds=flow.sleep_seconds),
            "goodbye_message": greeting,
        }
    )


def refuse_if_limit_reached(context: dg.OpExecutionContext) -> None:
    """Fail this run if ``MAX_CONCURRENT_RUNS`` other runs of the job are running.

    The tutorial's flow has ``concurrency: {limit: 2, behavior: FAIL}``: a third run fails
    at once rather than waiting. Dagster's own answer is the run queue, which *queues* the
    third run until a slot frees up; on an instance with the ``QueuedRunCoordinator`` that
    is one entry in ``dagster.yaml`` (the job carries the tag it needs)::

        concurrency:
          runs:
            tag_concurrency_limits:
              - key: getting_started/flow
                value: hello_world
                limit: 2

    The check-then-run here is not atomic: two runs starting in the same instant may both
    pass. That is good enough for a tutorial; use the queue when the limit protects
    something.
    """
    running = context.instance.get_runs(
        dg.RunsFilter(job_name=context.job_name, statuses=RUNNING_STATUSES)
    )
    others = sorted(run.run_id for run in running if run.run_id != context.run_id)
    if len(others) >= MAX_CONCURRENT_RUNS:
        raise dg.Failure(
            description=(
                f"{context.job_name} allows at most {MAX_CONCURRENT_RUNS} concurrent runs and "
                f"{len(others)} are already running ({', '.join(others)}), so this run stops "
                "before doing anything. Launch it again once one of them has finished."
            ),
            metadata={"running_run_ids": dg.MetadataValue.json(others)},
            allow_retries=False,
        )


@dg.op(out=dg.Out(dg.Nothing))
def hello_message(context: dg.OpExecutionContext, config: GreetingConfig) -> None:
    refuse_if_limit_reached(context)
    context.log.info(f"Hello, {config.name}!")


@dg.op(ins={"after": dg.In(dg.Nothing)})
def generate_output() -> str:
    return GENERATED_OUTPUT


@dg.op(ins={"after": dg.In(dg.Nothing)}, out=dg.Out(dg.Nothing))
def sleep(context: dg.OpExecutionContext, config: SleepConfig) -> None:
    context.log.info(f"Sleeping for {config.seconds:g} seconds")
    time.sleep(config.seconds)


@dg.op(ins={"after": dg.In(dg.Nothing)}, out=dg.Out(dg.Nothing))
def log_output(context: dg.OpExecutionContext, generated: str) -> None:
    context.log.info(f"This is an output: {generated}")


@dg.op(ins={"after": dg.In(dg.Nothing)})
def goodbye_message(context: dg.OpExecutionContext, config: GreetingConfig) -> None:
    context.log.info(f"Goodbye, {config.name}!")


@dg.job(
    name=JOB_NAME,
    config=hello_world_config,
    tags={"getting_started/flow": JOB_NAME},
    description=(
        "Greets `name`, hands an output to a later step, pauses `sleep_seconds`, says "
        f"goodbye. At most {MAX_CONCURRENT_RUNS} runs at once: a third fails at its first step."
    ),
)
def hello_world() -> None:
    greeted = hello_message()
    generated = generate_output(after=greeted)
    rested = sleep(after=greeted)
    goodbye_message(after=log_output(generated, after=rested))


def build_hello_world_schedule(
    execution_timezone: str = "America/New_York",
) -> dg.ScheduleDefinition:
    """Daily at 10:00, stopped until someone turns it on, as the tutorial's trigger is."""
    return dg.ScheduleDefinition(
        name="hello_world_daily",
        job=hello_world,
        cron_schedule="0 10 * * *",
        execution_timezone=execution_timezone,
        default_status=dg.DefaultScheduleStatus.STOPPED,
    )
