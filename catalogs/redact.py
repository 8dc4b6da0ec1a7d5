"""Credentials out of URLs: the one function every stored, logged or rendered URL goes through.

A URL may carry a secret in two places: a user name and password before the host
(``https://user:pw@host/...``) and query parameters (an Azure SAS token ``sv=...&sig=...``,
an S3 presigned ``X-Amz-Signature``, an ``api_key``). :func:`strip_credentials` removes both
and keeps the rest of the URL as it was, so a stored href still names the same object.
:func:`redact_text` does the same to every URL inside a free text (an error message from
GDAL, a log line). Secrets themselves come from environment variables or a netrc file, never
from a URL in the config or a catalog.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import urlsplit, urlunsplit

# Query parameters that are secrets or part of one (Azure SAS, AWS/GCS presigned URLs, keys).
SECRET_PARAMS = frozenset(
    {
        # Azure shared access signatures: the signature and the fields it signs
        *("sv", "ss", "srt", "sp", "se", "st", "spr", "sig", "sr", "si", "sdd", "ses"),
        *("skoid", "sktid", "skt", "ske", "sks", "skv", "saoid", "suoid", "scid"),
        *("rscc", "rscd", "rsce", "rscl", "rsct"),
        # AWS / Google presigned URLs
        *("x-amz-signature", "x-amz-credential", "x-amz-security-token", "x-amz-date"),
        *("x-amz-algorithm", "x-amz-signedheaders", "x-amz-expires"),
        *("x-goog-signature", "x-goog-credential", "x-goog-date", "x-goog-algorithm"),
        *("signature", "awsaccesskeyid", "expires", "policy", "key-pair-id"),
        # generic
        *("token", "access_token", "id_token", "api_key", "apikey", "key", "password"),
        *("passwd", "secret", "subscription-key", "code", "auth", "authorization"),
    }
)
_URL_IN_TEXT = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>()\[\]{}]+")
_QUERY_IN_TEXT = re.compile(r"\?[^\s'\"<>()\[\]{},;]+")


def strip_credentials(url: str) -> str:
    """``url`` without user name/password and without secret query parameters.

    Local paths and strings that are not URLs come back unchanged. Parameters that are not
    secrets keep their order and spelling.
    """
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unbalanced IPv6 bracket: not a URL we could store faithfully
        return _blunt(url)
    if not parts.scheme or "://" not in url:
        return url
    netloc = parts.netloc.rsplit("@", 1)[-1]
    kept = [p for p in parts.query.split("&") if p and not _is_secret(p)]
    return urlunsplit((parts.scheme, netloc, parts.path, "&".join(kept), parts.fragment))


def has_credentials(url: str) -> bool:
    """True if :func:`strip_credentials` would remove something from ``url``."""
    return strip_credentials(url) != url.rstrip("?")


def redact_text(text: str) -> str:
    """``text`` with every URL in it passed through :func:`strip_credentials`, and secret
    parameters removed from any query string in it (GDAL names a dataset by its file name
    and query: ``B04.tif?se=...&sig=...``)."""
    text = _URL_IN_TEXT.sub(lambda m: strip_credentials(m.group(0)), text)
    return _QUERY_IN_TEXT.sub(lambda m: _strip_query(m.group(0)), text)


def _strip_query(query: str) -> str:
    kept = [p for p in query[1:].split("&") if p and not _is_secret(p)]
    return "?" + "&".join(kept) if kept else ""


def _is_secret(param: str) -> bool:
    name = param.split("=", 1)[0].lower()
    return name in SECRET_PARAMS


def _blunt(url: str) -> str:
    """An unparsable URL: drop everything from the first ``@`` or ``?`` on, to be safe."""
    cut = min((i for i in (url.find("@"), url.find("?")) if i >= 0), default=len(url))
    return url[:cut] + ("..." if cut < len(url) else "")


class RedactingFilter(logging.Filter):
    """A logging filter that passes every record's message through :func:`redact_text`.

    Attach it to a handler (the console, the run directory's log): records from any library
    (GDAL through rasterio, urllib3, pystac-client) then reach it without credentials.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact_text(message)
        if clean != message:
            record.msg, record.args = clean, None
        return True
