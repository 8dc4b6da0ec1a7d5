"""Asset access per STAC API: how its assets are read, and which hrefs may be read at all.

Pure logic (no network, no GDAL): :mod:`terracorpus.pipelines.access` applies it on the
workers at read time.

**Auth.** Each API names how its assets are read:

- ``none``: as published (public ``https://``; ``s3://`` with the AWS credentials of the
  workers' environment).
- ``planetary-computer``: every ``http(s)`` asset href gets a SAS token appended
  (``href?<token>``). Tokens come from a token endpoint, one per storage account and
  container (``GET <endpoint>/<account>/<container>`` answers ``{"token": ...,
  "msft:expiry": ...}``), the way Microsoft's ``planetary-computer`` package signs.
- ``requester-pays``: ``s3://`` reads send ``x-amz-request-payer: requester`` (USGS Landsat);
  the workers' AWS credentials pay for the transfer.
- ``aws-no-sign``: ``s3://`` reads are anonymous (public buckets, no credentials needed).

**Href policy.** A catalog is untrusted input, so an asset href is read only if it is

- on the API's own scheme and host (and port), or on one of its asset hosts: those the
  user declares (``search.apis[i].asset_hosts``) plus the known ones of well-known APIs
  (:data:`KNOWN_ASSET_HOSTS`); or
- a local path (plain or ``file://``) that, resolved (symlinks, ``..``), lies under one of
  the roots the config names (``access.local_roots``).

GDAL virtual file system paths (``/vsicurl/``, ``/vsis3/``, ...) are never read from a
catalog, whatever the config says: they would bypass every rule above.

An asset host is written ``[scheme://]host[:port]``; ``host`` may start with ``*.`` (any
sub-domain). Without a scheme it means ``https``; without a port, the scheme's default port.
An ``s3://`` entry names a bucket (``s3://usgs-landsat``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote, urlsplit

from terracorpus.catalogs.redact import strip_credentials

Auth = Literal["none", "planetary-computer", "requester-pays", "aws-no-sign"]
AUTHS: tuple[str, ...] = ("none", "planetary-computer", "requester-pays", "aws-no-sign")
PC_TOKEN_ENDPOINT = "https://planetarycomputer.microsoft.com/api/sas/v1/token"
BLOB_DOMAIN = ".blob.core.windows.net"

KNOWN_ASSET_HOSTS: dict[str, tuple[str, ...]] = {
    # Planetary Computer: every collection's blobs are in some Azure storage account.
    "planetarycomputer.microsoft.com": ("https://*.blob.core.windows.net",),
    # Earth Search (v0 and v1): COGs on S3 in us-west-2, as https and as s3:// hrefs.
    "earth-search.aws.element84.com": (
        "https://sentinel-cogs.s3.us-west-2.amazonaws.com",
        "https://sentinel-s1-l1c.s3.amazonaws.com",
        "https://landsatlook.usgs.gov",
        "s3://sentinel-cogs",
        "s3://sentinel-s2-l2a",
        "s3://sentinel-s2-l1c",
        "s3://sentinel-s1-l1c",
        "s3://usgs-landsat",
        "s3://copernicus-dem-30m",
        "s3://copernicus-dem-90m",
        "s3://naip-analytic",
        "s3://naip-visualization",
    ),
    # USGS LandsatLook: https hrefs on its own host, s3:// (requester-pays) alternates.
    "landsatlook.usgs.gov": ("s3://usgs-landsat",),
}
_DEFAULT_PORTS = {"http": 80, "https": 443}

# GDAL configuration options each auth sets for the reads of its API.
_AUTH_GDAL: dict[str, dict[str, str]] = {
    "none": {},
    "planetary-computer": {},
    "requester-pays": {"AWS_REQUEST_PAYER": "requester"},
    "aws-no-sign": {"AWS_NO_SIGN_REQUEST": "YES"},
}


@dataclass(frozen=True)
class ApiAccess:
    """How the assets of one STAC API are read, and where they may be.

    ``api_url`` has its credentials stripped; ``key`` is the config key of the API
    (``search.apis[0]``), named in messages that tell the user what to change;
    ``asset_hosts`` are the declared ones (the API's own host and the known defaults are
    added by :meth:`allowed_hosts`).
    """

    api_url: str
    key: str
    auth: Auth = "none"
    token_endpoint: str = PC_TOKEN_ENDPOINT
    asset_hosts: tuple[str, ...] = ()
    gdal_options: tuple[tuple[str, str], ...] = ()

    def allowed_hosts(self) -> tuple[str, ...]:
        """The API's own origin, its declared asset hosts and the known ones of its host."""
        parts = urlsplit(self.api_url)
        own = f"{parts.scheme}://{parts.netloc}"
        known = KNOWN_ASSET_HOSTS.get((parts.hostname or "").lower(), ())
        return (own, *self.asset_hosts, *known)

    def gdal_config(self) -> dict[str, str]:
        """GDAL configuration options for this API's reads: the auth's, then the user's."""
        return {**_AUTH_GDAL[self.auth], **dict(self.gdal_options)}


@dataclass(frozen=True)
class ReadAccess:
    """The access settings of a run: one :class:`ApiAccess` per API and the local roots.

    ``local_roots`` are absolute, resolved directories.
    """

    apis: tuple[ApiAccess, ...] = ()
    local_roots: tuple[str, ...] = ()

    def for_api(self, api_url: str | None) -> ApiAccess | None:
        """The settings of the API a scene came from (None: it came from none of them)."""
        if api_url is None:
            return None
        want = same_api_url(api_url)
        return next((a for a in self.apis if same_api_url(a.api_url) == want), None)

    def read_key(self, api_url: str | None) -> str:
        """What decides how a scene of ``api_url`` is read, as text (for task keys): its
        API's auth, endpoint, asset hosts and options, and the local roots. Not the API's
        URL: an embedded API on another port reads the same files the same way."""
        api = self.for_api(api_url)
        settings = (
            None
            if api is None
            else (api.auth, api.token_endpoint, api.asset_hosts, api.gdal_options)
        )
        return repr((settings, self.local_roots))

    def href_problem(self, href: str, api: ApiAccess | None) -> str | None:
        """Why ``href`` (of a scene from ``api``) may not be read, or None if it may."""
        return href_problem(href, api, self.local_roots)


def same_api_url(url: str) -> str:
    """An API URL in the form two spellings of the same API compare equal in."""
    return strip_credentials(url).rstrip("/")


def href_problem(href: str, api: ApiAccess | None, local_roots: Sequence[str]) -> str | None:
    """Why the href policy refuses ``href``, naming the config key that would allow it.

    Args:
        href: an asset href as the scene record holds it.
        api: the settings of the API the scene came from (None: no configured API).
        local_roots: absolute, resolved directories local files may be read under.
    """
    shown = strip_credentials(href)
    if href.lstrip().startswith("/vsi"):
        return f"href {shown} is a GDAL virtual file system path; catalog hrefs never are"
    parts = urlsplit(href)
    if len(parts.scheme) <= 1 or parts.scheme == "file":  # C:\ is a path, not a scheme
        return _local_problem(href, parts.path if parts.scheme == "file" else href, local_roots)
    if api is None:
        return (
            f"href {shown} is remote and its scene came from no API in search.apis; "
            "search through the API that serves it"
        )
    if any(host_matches(href, pattern) for pattern in api.allowed_hosts()):
        return None
    return (
        f"href {shown} is not on {api.key}'s host or asset hosts; if it is trusted, add "
        f"{origin_pattern(href)!r} to {api.key}.asset_hosts"
    )


def _local_problem(href: str, path: str, local_roots: Sequence[str]) -> str | None:
    shown = strip_credentials(href)
    path = unquote(path)
    if os.path.normpath(path).startswith("/vsi"):
        return f"href {shown} is a GDAL virtual file system path; catalog hrefs never are"
    if not os.path.isabs(path):
        return (
            f"href {shown} is a relative local path; only absolute paths under "
            "access.local_roots are read"
        )
    real = os.path.realpath(path)
    for root in local_roots:
        if real == root or real.startswith(root.rstrip(os.sep) + os.sep):
            return None
    where = f"under {', '.join(local_roots)}" if local_roots else "under any root"
    return (
        f"href {shown} is a local file not {where} (resolved: {real}); if it is trusted, add "
        f"its directory to access.local_roots"
    )


def host_matches(href: str, pattern: str) -> bool:
    """True if ``href``'s scheme, host and port are those ``pattern`` allows."""
    parts = urlsplit(href)
    want = urlsplit(pattern if "://" in pattern else f"https://{pattern}")
    if parts.scheme.lower() != want.scheme.lower():
        return False
    try:
        port, want_port = parts.port, want.port
    except ValueError:
        return False
    default = _DEFAULT_PORTS.get(parts.scheme.lower())
    if (port or default) != (want_port or default):
        return False
    host, want_host = (parts.hostname or "").lower(), (want.hostname or "").lower()
    if want_host.startswith("*."):
        return host.endswith(want_host[1:]) and len(host) > len(want_host) - 1
    return host == want_host


def origin_pattern(href: str) -> str:
    """The asset-host entry that would allow ``href`` (its scheme, host and port)."""
    parts = urlsplit(href)
    return f"{parts.scheme}://{parts.netloc.rsplit('@', 1)[-1]}"


def blob_container(href: str) -> tuple[str, str]:
    """The storage account and container a Planetary Computer token is asked for.

    On Azure blob storage (``https://<account>.blob.core.windows.net/<container>/...``) the
    account is the host's first label; on any other host (a blob emulator, a loopback test
    server) it is the host and port. The container is the first path segment.
    """
    parts = urlsplit(href)
    host = (parts.hostname or "").lower()
    account = host[: -len(BLOB_DOMAIN)] if host.endswith(BLOB_DOMAIN) else parts.netloc
    account = account.rsplit("@", 1)[-1]
    container = parts.path.lstrip("/").split("/", 1)[0]
    return account, container


def needs_signing(href: str, auth: Auth) -> bool:
    """True if a read of ``href`` under ``auth`` needs a SAS token appended."""
    return auth == "planetary-computer" and urlsplit(href).scheme in ("http", "https")


def asset_host_problem(pattern: str) -> str | None:
    """Why ``pattern`` is not a valid asset-host entry, or None."""
    parts = urlsplit(pattern if "://" in pattern else f"https://{pattern}")
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        return f"asset host {pattern!r} has a bad port"
    host = parts.hostname or ""
    if not host or parts.path not in ("", "/") or parts.query or "@" in parts.netloc:
        return (
            f"asset host {pattern!r} must be [scheme://]host[:port] (host may start with '*.'), "
            "or s3://bucket; no path, query or credentials"
        )
    if "*" in host.removeprefix("*."):
        return f"asset host {pattern!r}: '*' is allowed only as the first label ('*.example.com')"
    return None


_SECRET_WORDS = ("SECRET", "TOKEN", "PASSWORD", "USERPWD", "ACCESS_KEY", "HEADER", "BEARER", "SAS")


def gdal_option_problem(name: str) -> str | None:
    """Why ``name`` may not be set in the config's ``gdal_options``, or None."""
    if not name.replace("_", "").isalnum() or not name.isupper():
        return f"GDAL option {name!r} is not an option name (upper case, digits, '_')"
    if any(word in name for word in _SECRET_WORDS) or name.endswith("_KEY"):
        return (
            f"GDAL option {name} holds a secret; secrets never go in the config: set it in "
            "the environment of the workers (or a netrc file for user names and passwords)"
        )
    return None
