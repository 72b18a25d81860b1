"""Local HTTP servers answering as Google's Storage and BigQuery JSON APIs do.

The official google-cloud-storage and google-cloud-bigquery clients talk to them unchanged
(``emulator_host`` / ``api_endpoint``, anonymous credentials). Errors have Google's shape:
the HTTP status and ``{"error": {"code", "message", "errors": [{"message", "domain",
"reason"}], "status"}}``; a failed query job is DONE with ``status.errorResult``, as
``jobs.get`` reports it.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Answer = tuple[int, dict]
Route = Callable[[str, str, dict], Answer]

STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ALREADY_EXISTS",
    429: "RESOURCE_EXHAUSTED",
}


def google_error(code: int, reason: str, message: str, domain: str = "global") -> Answer:
    """An error answer exactly as Google's JSON APIs send one."""
    return code, {
        "error": {
            "code": code,
            "message": message,
            "errors": [{"message": message, "domain": domain, "reason": reason}],
            "status": STATUS_NAMES.get(code, "UNKNOWN"),
        }
    }


def forbidden(permission: str, resource: str = "the resource") -> Answer:
    message = (
        f"taxi-loader@p.iam.gserviceaccount.com does not have {permission} access to "
        f"{resource}. Permission '{permission}' denied on resource (or it may not exist)."
    )
    return google_error(403, "forbidden", message)


def not_found(message: str = "Not Found") -> Answer:
    return google_error(404, "notFound", message)


class GoogleStub:
    """Answers each request with ``route(method, path, body)``; records every request."""

    def __init__(self, route: Route):
        self.requests: list[tuple[str, str, dict]] = []
        self.route = route
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                try:
                    body = json.loads(raw) if raw else {}
                except ValueError:
                    body = {"raw": raw.decode(errors="replace")}
                stub.requests.append((self.command, self.path, body))
                status, answer = stub.route(self.command, self.path, body)
                payload = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def sent(self, method: str, pattern: str) -> list[dict]:
        """Bodies of the requests whose method matches and whose path matches ``pattern``."""
        return [
            body
            for sent_method, path, body in self.requests
            if sent_method == method and re.search(pattern, path)
        ]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# What a query job ends as: None (success), or the errorResult it fails with.
JobOutcome = Callable[[int, dict], dict | None]


class BigQueryJobs:
    """BigQuery's dataset and jobs endpoints for one project: datasets.get, jobs.insert,
    jobs.get, jobs.getQueryResults and jobs.cancel.

    ``outcome(n, configuration)`` decides how the n-th job (from 1) ends; ``finishes=False``
    keeps every job RUNNING. A finished query returns ``result_rows`` (one INT64 column).
    """

    def __init__(
        self,
        project: str = "p",
        dataset_location: str = "US",
        outcome: JobOutcome = lambda n, config: None,
        finishes: bool = True,
        result_rows: list[int] | None = None,
    ):
        self.project, self.dataset_location = project, dataset_location
        self.outcome, self.finishes = outcome, finishes
        self.result_rows = result_rows or []
        self.jobs: dict[str, dict] = {}
        self._numbers = itertools.count(1)

    def _job(self, job_id: str) -> dict:
        job = self.jobs[job_id]
        state = "DONE" if self.finishes else "RUNNING"
        status: dict[str, Any] = {"state": state}
        if self.finishes and job["error"] is not None:
            status.update(errorResult=job["error"], errors=[job["error"]])
        return {
            "kind": "bigquery#job",
            "id": f"{self.project}:{job['location']}.{job_id}",
            "jobReference": {
                "projectId": self.project,
                "jobId": job_id,
                "location": job["location"],
            },
            "configuration": job["configuration"],
            "status": status,
            "statistics": {"query": {"totalBytesProcessed": "1024", "numDmlAffectedRows": "7"}},
        }

    def _query_results(self, job_id: str) -> Answer:
        job = self.jobs[job_id]
        if self.finishes and job["error"] is not None:
            error = job["error"]
            return google_error(400, error["reason"], error["message"])
        return 200, {
            "kind": "bigquery#getQueryResultsResponse",
            "jobReference": self._job(job_id)["jobReference"],
            "jobComplete": self.finishes,
            "totalRows": str(len(self.result_rows)),
            "schema": {"fields": [{"name": "f0_", "type": "INTEGER", "mode": "NULLABLE"}]},
            "rows": [{"f": [{"v": str(value)}]} for value in self.result_rows],
        }

    def route(self, method: str, path: str, body: dict) -> Answer:
        path = path.split("?")[0]
        prefix = f"/bigquery/v2/projects/{self.project}"
        if method == "GET" and path.startswith(f"{prefix}/datasets/"):
            dataset = path.rsplit("/", 1)[1]
            reference = {"projectId": self.project, "datasetId": dataset}
            return 200, {
                "kind": "bigquery#dataset",
                "datasetReference": reference,
                "location": self.dataset_location,
            }
        if method == "POST" and path == f"{prefix}/jobs":
            number = next(self._numbers)
            job_id = body.get("jobReference", {}).get("jobId") or f"job_{number}"
            self.jobs[job_id] = {
                "configuration": body.get("configuration", {}),
                "location": body.get("jobReference", {}).get("location"),
                "error": self.outcome(number, body.get("configuration", {})),
            }
            answer = self._job(job_id)
            answer["status"] = {"state": "RUNNING"}  # jobs.insert returns before it ends
            return 200, answer
        if match := re.fullmatch(rf"{prefix}/queries/([^/]+)", path):
            return self._query_results(match.group(1))
        if match := re.fullmatch(rf"{prefix}/jobs/([^/]+)/cancel", path):
            self.jobs[match.group(1)]["cancelled"] = True
            return 200, {"kind": "bigquery#jobCancelResponse", "job": self._job(match.group(1))}
        if match := re.fullmatch(rf"{prefix}/jobs/([^/]+)", path):
            return 200, self._job(match.group(1))
        return not_found(f"no route for {method} {path}")
