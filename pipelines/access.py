"""Asset access applied on the workers, at read time: policy, auth options, signing.

:func:`read_access` turns the run config into the frozen
:class:`~terracorpus.catalogs.access.ReadAccess` that travels with each task;
:class:`SceneAccess` is what the pixel reader asks, per scene: may these hrefs be read
(the href policy), which GDAL options its API needs, which path GDAL opens for an href
(signed for Planetary Computer; the scene record and every artifact keep the unsigned
href), and what a refused read means for the user.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import requests

from terracorpus.catalogs.access import ApiAccess, ReadAccess, needs_signing
from terracorpus.catalogs.redact import redact_text, strip_credentials
from terracorpus.catalogs.scene import SceneRecord
from terracorpus.pipelines.config import RunConfig
from terracorpus.pipelines.signing import SUBSCRIPTION_KEY_ENV, TOKENS, TokenCache

_DENIED = re.compile(r"\b(403|Access ?Denied|Forbidden)\b", re.IGNORECASE)


def read_access(cfg: RunConfig) -> ReadAccess:
    """The run's access settings, as the workers get them."""
    apis = tuple(
        ApiAccess(
            api_url=strip_credentials(a.url),
            key=f"search.apis[{i}]",
            auth=a.auth,
            token_endpoint=a.token_endpoint,
            asset_hosts=tuple(a.asset_hosts),
            gdal_options=tuple(sorted(a.gdal_options.items())),
        )
        for i, a in enumerate(cfg.search.apis)
    )
    roots = tuple(os.path.realpath(os.path.expanduser(r)) for r in cfg.access.local_roots)
    return ReadAccess(apis=apis, local_roots=roots)


def is_denied(detail: str) -> bool:
    """True if a read failure says the server refused access (HTTP 403, S3 AccessDenied)."""
    return bool(_DENIED.search(detail))


@dataclass(frozen=True)
class SceneAccess:
    """How one scene's assets may be read.

    ``access`` None means no policy and no auth (a direct library call on trusted records);
    the stages always pass the run's settings.
    """

    scene: SceneRecord
    access: ReadAccess | None
    tokens: TokenCache = field(default=TOKENS, compare=False, repr=False)

    @property
    def api(self) -> ApiAccess | None:
        return None if self.access is None else self.access.for_api(self.scene.api_url)

    @property
    def signs(self) -> bool:
        api = self.api
        return api is not None and api.auth == "planetary-computer"

    def refusal(self, hrefs: list[str]) -> str | None:
        """Why the href policy refuses one of ``hrefs`` (the first), or None."""
        if self.access is None:
            return None
        api = self.api
        for href in hrefs:
            problem = self.access.href_problem(href, api)
            if problem is not None:
                return f"scene {self.scene.id}: {problem}"
        return None

    def gdal_options(self) -> dict[str, str]:
        api = self.api
        return {} if api is None else api.gdal_config()

    def open_href(self, href: str) -> str:
        """The href GDAL opens: signed when the API needs it (never stored anywhere)."""
        api = self.api
        if api is None or not needs_signing(href, api.auth):
            return href
        return self.tokens.sign(href, api.token_endpoint)

    def resign(self, hrefs: list[str]) -> None:
        """Drop the tokens of ``hrefs``' containers, so the next open asks for new ones."""
        api = self.api
        if api is not None and api.auth == "planetary-computer":
            for href in hrefs:
                if needs_signing(href, api.auth):
                    self.tokens.invalidate(href, api.token_endpoint)

    def probe_denied(self, hrefs: list[str]) -> str | None:
        """Ask each ``http(s)`` href for one byte: "HTTP 403 for <href>" if one is refused.

        A read refused mid-file reaches us from GDAL only as "got 0 bytes"; this tells a
        refusal from a broken file. Only called for scenes that failed to read.
        """
        for href in hrefs:
            if urlsplit(href).scheme not in ("http", "https"):
                continue
            try:
                with requests.get(
                    self.open_href(href), headers={"Range": "bytes=0-0"}, timeout=10, stream=True
                ) as response:
                    status = response.status_code
            except requests.RequestException:
                continue
            if status == 403:
                return f"HTTP 403 for {strip_credentials(href)}"
        return None

    def denied_detail(self, hrefs: list[str], detail: str) -> str:
        """A refused read explained: the scene, the server's answer, and what to set."""
        api = self.api
        head = f"scene {self.scene.id}: access was refused ({redact_text(detail)})"
        if api is None:
            return f"{head}; the scene came from no API in search.apis, so no auth was applied"
        if api.auth == "planetary-computer":
            return (
                f"{head}, also with a fresh SAS token from {strip_credentials(api.token_endpoint)}"
                f"; check {api.key}.token_endpoint and {SUBSCRIPTION_KEY_ENV}, or whether the "
                f"asset needs no signing ({api.key}.auth: none)"
            )
        if any(urlsplit(h).scheme == "s3" for h in hrefs):
            if api.auth == "requester-pays":
                return f"{head}; check the workers' AWS credentials (requester-pays needs them)"
            return (
                f"{head}; if the bucket is requester-pays (USGS Landsat's s3://usgs-landsat "
                f"is), set {api.key}.auth: requester-pays (your AWS account pays the transfer); "
                f"if it is public, {api.key}.auth: aws-no-sign"
            )
        return (
            f"{head}; if the provider signs its hrefs, set {api.key}.auth (e.g. "
            "planetary-computer); credentials go in a netrc file, never the config"
        )
