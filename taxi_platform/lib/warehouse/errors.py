"""Google Cloud's errors as messages that name the fix, one class per cause.

google-cloud-bigquery maps ``quotaExceeded``, ``billingNotEnabled``, ``accessDenied`` and
``policyViolation`` all to 403, and google-cloud-storage answers a bucket name taken by
another project with 409 (or 403 for a name that looks like someone's domain); read as
"permission denied" they would all send the user to IAM for nothing. ``explain`` reads
Google's own ``reason`` and the permission its message names (``storage.objects.get``,
``bigquery.jobs.create``) and says what to change, and where; Google's message is always
appended, the credentials never.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from google.api_core import exceptions as google_exceptions
from google.auth import exceptions as auth_exceptions


class GcpError(Exception):
    """A Google Cloud step failed in a way the message explains; assets turn it into a Failure.

    ``retryable`` says whether running the step again can help without a change by the user.
    """

    retryable = True


class GcpSettingMissing(GcpError):
    """A setting the step needs is not configured; the message names the variable."""

    retryable = False


class GcpCredentialsMissing(GcpSettingMissing):
    """No credentials anywhere google-auth looks; the message names the three ways."""


class GcpPermissionDenied(GcpError):
    """Google answered 403; the message names the role to grant and on what."""

    retryable = False


class GcpBillingNotEnabled(GcpError):
    """The project has no billing account: BigQuery refuses jobs (or DML in the sandbox)."""

    retryable = False


class GcpQuotaExceeded(GcpError):
    """A quota or rate limit: waiting helps, so a retry may succeed."""


class GcpBucketNameTaken(GcpError):
    """Bucket names are global; another project holds this one."""

    retryable = False


class GcpLocationMismatch(GcpError):
    """The bucket and the dataset are in locations BigQuery cannot join."""

    retryable = False


class GcpJobTimeout(GcpError):
    """A BigQuery job did not finish within the wait; it was asked to cancel."""


class GcpConcurrentUpdate(GcpError):
    """Another statement kept changing the table through every retry."""


STORAGE_ADMIN = "Storage Admin (roles/storage.admin)"
BIGQUERY_ADMIN = "BigQuery Admin (roles/bigquery.admin)"
BIGQUERY_JOB_USER = "BigQuery Job User (roles/bigquery.jobUser)"

CREDENTIALS_HELP = (
    "no Google Cloud credentials found. Set one of: GCP_CREDS (the service-account JSON key "
    "itself, or base64 of it), GOOGLE_APPLICATION_CREDENTIALS (the path of the key file), "
    "or application default credentials (`gcloud auth application-default login`, or run "
    "on Google Cloud with a service account attached)"
)

QUOTA_REASONS = frozenset(
    {"quotaExceeded", "rateLimitExceeded", "userRateLimitExceeded", "dailyLimitExceeded"}
)
_PERMISSION = re.compile(r"\b((?:storage|bigquery)\.[A-Za-z]+\.[A-Za-z]+)\b")
_TAKEN_403 = ("domain name", "not available")


@dataclass(frozen=True)
class GoogleCall:
    """What a call was doing and on what, for the message: the project, bucket, dataset."""

    action: str
    project: str
    bucket: str | None = None
    dataset: str | None = None  # project.dataset


def google_reason(error: google_exceptions.GoogleAPICallError) -> str | None:
    """Google's ``errors[0].reason`` (``quotaExceeded``, ``accessDenied``, ...), if given."""
    for detail in error.errors or ():
        if isinstance(detail, dict) and detail.get("reason"):
            return str(detail["reason"])
    return error.reason


def _google_said(error: google_exceptions.GoogleAPICallError) -> str:
    reason = google_reason(error)
    return f"Google said: {error.code} {reason or ''}: {error.message}".replace("  ", " ")


def _role_for(permission: str | None, call: GoogleCall) -> tuple[str, str]:
    """The role that grants ``permission``, and the resource to grant it on."""
    if permission and permission.startswith("storage."):
        target = f"bucket gs://{call.bucket}" if call.bucket else f"project {call.project}"
        if permission == "storage.buckets.create":
            target = f"project {call.project}"
        return STORAGE_ADMIN, target
    if permission == "bigquery.jobs.create":
        return BIGQUERY_JOB_USER + " or " + BIGQUERY_ADMIN, f"project {call.project}"
    if permission and permission.startswith("bigquery.datasets.create"):
        return BIGQUERY_ADMIN, f"project {call.project}"
    if permission and permission.startswith("bigquery."):
        target = f"dataset {call.dataset}" if call.dataset else f"project {call.project}"
        return BIGQUERY_ADMIN, target
    if call.bucket and not call.dataset:
        return STORAGE_ADMIN, f"bucket gs://{call.bucket}"
    target = f"dataset {call.dataset}" if call.dataset else f"project {call.project}"
    return BIGQUERY_ADMIN, target


def permission_denied(error: google_exceptions.GoogleAPICallError, call: GoogleCall) -> GcpError:
    match = _PERMISSION.search(error.message or "")
    permission = match.group(1) if match else None
    role, target = _role_for(permission, call)
    missing = f" (missing {permission})" if permission else ""
    return GcpPermissionDenied(
        f"permission denied: {call.action} was refused{missing}. Grant the service account "
        f"the {role} role on {target} (IAM & Admin in the console), or use credentials "
        f"that have it. {_google_said(error)}"
    )


def bucket_name_taken(bucket: str, error: google_exceptions.GoogleAPICallError) -> GcpError:
    return GcpBucketNameTaken(
        f"bucket name gs://{bucket} is taken by another project (bucket names are global "
        f"across Google Cloud): choose another GCP_BUCKET_NAME, e.g. with your project id "
        f"in it. {_google_said(error)}"
    )


def explain(error: google_exceptions.GoogleAPICallError, call: GoogleCall) -> GcpError | None:
    """The message for quota, billing and permission errors; ``None`` for anything else."""
    reason = google_reason(error)
    if reason in QUOTA_REASONS or isinstance(error, google_exceptions.TooManyRequests):
        return GcpQuotaExceeded(
            f"quota or rate limit exceeded while {call.action} ({reason}): the step retries "
            f"after a pause; if it keeps failing, lower the concurrency in dagster.yaml or ask "
            f"for more quota (IAM & Admin > Quotas, project {call.project}). "
            f"{_google_said(error)}"
        )
    if reason == "billingNotEnabled":
        return GcpBillingNotEnabled(
            f"billing is not enabled on project {call.project} ({call.action}): link a "
            "billing account to it (console > Billing > Link a billing account); the BigQuery "
            f"sandbox without billing refuses MERGE and other DML. {_google_said(error)}"
        )
    if isinstance(error, google_exceptions.Forbidden):
        return permission_denied(error, call)
    return None


@contextmanager
def google_errors(call: GoogleCall) -> Iterator[None]:
    """Missing credentials, quota, billing and 403 errors as their own messages."""
    try:
        yield
    except auth_exceptions.DefaultCredentialsError:
        # google-auth's own text lists paths it tried; ours names the variables to set.
        raise GcpCredentialsMissing(f"{call.action}: {CREDENTIALS_HELP}") from None
    except google_exceptions.GoogleAPICallError as error:
        explained = explain(error, call)
        if explained is None:
            raise
        raise explained from None


def is_serialization_failure(error: Exception) -> bool:
    """BigQuery's 400 for two DML statements changing one table at once."""
    text = str(getattr(error, "message", error))
    return isinstance(error, google_exceptions.BadRequest) and (
        "Could not serialize access to table" in text or "aborted due to concurrent update" in text
    )


def is_bucket_name_taken(error: google_exceptions.GoogleAPICallError) -> bool:
    """409 on create, or 403 whose message says the name belongs to someone else."""
    if isinstance(error, google_exceptions.Conflict):
        return True
    message = (error.message or "").lower()
    return isinstance(error, google_exceptions.Forbidden) and any(
        phrase in message for phrase in _TAKEN_403
    )
