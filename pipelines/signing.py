"""Planetary Computer signing on the workers: SAS tokens per storage container, cached.

A token is asked for with ``GET <endpoint>/<account>/<container>`` (the header
``Ocp-Apim-Subscription-Key`` carries ``PC_SDK_SUBSCRIPTION_KEY`` from the worker's
environment when it is set) and answers ``{"token": "<query string>", "msft:expiry":
"<RFC 3339>"}``; a signed href is ``href?<token>``. Tokens are cached per endpoint, account and
container in each worker process, re-asked for when less than :data:`REFRESH_MARGIN_S` of
their life is left, and dropped on demand (:meth:`TokenCache.invalidate`) when a read was
refused with them. Signed hrefs exist only in memory, for the read: nothing stores them.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from datetime import datetime

import requests

from terracorpus.catalogs.access import blob_container
from terracorpus.catalogs.redact import strip_credentials
from terracorpus.pipelines.errors import AccessError

REFRESH_MARGIN_S = 300.0
"""Ask for a new token when the cached one has less than this many seconds left (a read of
a scene's assets takes seconds; a describe task minutes at most)."""
TIMEOUT_S = 20.0
SUBSCRIPTION_KEY_ENV = "PC_SDK_SUBSCRIPTION_KEY"


@dataclass(frozen=True)
class SasToken:
    """A token (a URL query string) and when it expires (seconds since the epoch)."""

    token: str
    expires_at: float

    def ttl(self, now: float | None = None) -> float:
        return self.expires_at - (time.time() if now is None else now)


class TokenCache:
    """Tokens per (endpoint, account, container), shared by the threads of one process."""

    def __init__(self, margin_s: float = REFRESH_MARGIN_S, timeout_s: float = TIMEOUT_S) -> None:
        self.margin_s = margin_s
        self.timeout_s = timeout_s
        self._tokens: dict[tuple[str, str, str], SasToken] = {}
        self._lock = threading.Lock()
        self.fetches = 0

    def sign(self, href: str, endpoint: str) -> str:
        """``href`` with a valid token of its container appended."""
        token = self.token(endpoint, *blob_container(href))
        sep = "&" if "?" in href else "?"
        return f"{href}{sep}{token.token}"

    def token(self, endpoint: str, account: str, container: str) -> SasToken:
        """The cached token of a container, or a new one if it is missing or expires soon."""
        key = (endpoint.rstrip("/"), account, container)
        with self._lock:  # one fetch per container, however many threads want it
            cached = self._tokens.get(key)
            if cached is None or cached.ttl() < self.margin_s:
                cached = self._tokens[key] = self._fetch(*key)
            return cached

    def invalidate(self, href: str, endpoint: str) -> None:
        """Forget the token of ``href``'s container (a read with it was refused)."""
        with self._lock:
            self._tokens.pop((endpoint.rstrip("/"), *blob_container(href)), None)

    def _fetch(self, endpoint: str, account: str, container: str) -> SasToken:
        url = f"{endpoint}/{account}/{container}"
        key = os.environ.get(SUBSCRIPTION_KEY_ENV)
        headers = {"Ocp-Apim-Subscription-Key": key} if key else {}
        where = f"the SAS token endpoint {strip_credentials(url)}"
        try:
            response = requests.get(url, headers=headers, timeout=self.timeout_s)
        except requests.RequestException as e:
            raise AccessError(f"cannot reach {where}: {type(e).__name__}") from None
        if response.status_code != 200:
            hint = (
                f"; set {SUBSCRIPTION_KEY_ENV} on the workers"
                if response.status_code
                in (
                    401,
                    403,
                    429,
                )
                else ""
            )
            raise AccessError(f"{where} answered HTTP {response.status_code}{hint}")
        self.fetches += 1
        return _parse_token(response, where)


def _parse_token(response: requests.Response, where: str) -> SasToken:
    try:
        data = response.json()
        token, expiry = str(data["token"]), str(data["msft:expiry"])
        expires_at = datetime.fromisoformat(expiry.replace("Z", "+00:00")).timestamp()
    except (ValueError, KeyError, TypeError):
        raise AccessError(
            f"{where} did not answer a token (JSON with 'token' and 'msft:expiry')"
        ) from None
    if not token:
        raise AccessError(f"{where} answered an empty token")
    return SasToken(token.lstrip("?"), expires_at)


TOKENS = TokenCache()
"""The worker process's tokens (one cache per process: its read threads share it)."""
