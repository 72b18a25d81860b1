"""The outside world of the getting-started flows: public JSON endpoints over HTTP."""

from typing import Any

import dagster as dg
import requests
from pydantic import Field


class JsonApiError(Exception):
    """The endpoint could not be reached, answered an error, or did not answer JSON.

    The message names the URL and the problem, so the asset can fail with it unchanged.
    """


class HttpJsonApi(dg.ConfigurableResource):
    """One JSON endpoint read with a plain GET.

    The tutorial flows hard-code their URLs; here the URL is configuration, so tests point
    the same assets at a local server and a deployment can point them at a mirror. The
    timeout is there because ``requests`` waits forever without one.
    """

    url: str = Field(description="The endpoint, e.g. https://dummyjson.com/products.")
    timeout_seconds: float = Field(
        default=30.0, gt=0, description="Seconds to wait for the connection and for each read."
    )

    def get_json(self) -> Any:
        """The decoded body of a GET on ``url``; raises ``JsonApiError`` otherwise."""
        try:
            response = requests.get(
                self.url, timeout=self.timeout_seconds, headers={"Accept": "application/json"}
            )
        # ConnectTimeout is both a Timeout and a ConnectionError: report it as a timeout.
        except requests.Timeout:
            raise JsonApiError(
                f"GET {self.url} timed out: no answer within {self.timeout_seconds:g} seconds"
            ) from None
        except requests.ConnectionError as error:
            raise JsonApiError(f"GET {self.url} failed: could not connect ({error})") from None
        except requests.RequestException as error:
            raise JsonApiError(f"GET {self.url} failed: {error}") from None
        if not response.ok:
            raise JsonApiError(
                f"GET {self.url} answered HTTP {response.status_code} {response.reason}: "
                f"{response.text[:200].strip()}"
            )
        try:
            return response.json()
        except ValueError:
            raise JsonApiError(
                f"GET {self.url} answered HTTP {response.status_code} but the body is not JSON "
                f"(Content-Type {response.headers.get('Content-Type', 'missing')}): "
                f"{response.text[:200].strip()}"
            ) from None
