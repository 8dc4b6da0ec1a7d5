"""The embedded STAC API: a real ``rustac serve`` process on loopback, fed with local items.

``with StacServer(["world/"]) as srv: Client.open(srv.url)`` gives a STAC API that pystac-client
talks to over HTTP exactly as to Earth Search or Planetary Computer. The server is rustac's
in-memory backend: it starts in well under a second and supports item search by bbox,
datetime, intersects, ids and collections with paging, but not CQL2 ``filter``, ``query`` or
``sortby`` (see docs/search.md); the search code does those client-side.

Inputs are STAC documents on disk: a world directory (``items/**/*.json`` and
``collections/*.json``), any directory of STAC JSON files, or item / item-collection /
collection files (``.json``, ``.geojson``, ``.ndjson``). They are checked here, so a file that
is not STAC is named in a :class:`ServerError` instead of surfacing as a server crash. Relative
asset hrefs are made absolute against each item's file, because a served item's self link
points at the server, not at the file beside its assets.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlparse

from terracorpus.catalogs.errors import ServerError

log = logging.getLogger(__name__)

_ITEM_SUFFIXES = (".json", ".geojson", ".ndjson", ".jsonl", ".parquet")


@dataclass
class StacDocuments:
    """The items and collections to serve, and the unusable items left out (``skipped``:
    one ``"<file>: item <id>: <reason>"`` line each). With ``strict``, an unusable item is
    a :class:`ServerError` instead."""

    items: list[dict[str, Any]] = field(default_factory=list)
    collections: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    strict: bool = False


class StacServer:
    """A ``rustac serve`` subprocess on loopback serving local STAC items; a context manager.

    Args:
        paths: world directories, directories of STAC JSON files, or item / item-collection /
            collection files.
        port: the port to listen on; ``None`` or ``0`` picks a free one.
        host: the address to bind; loopback by default (the server has no authentication).
        startup_timeout_s: how long to wait for the server to answer.
        strict: refuse an unusable item (e.g. one without a ``collection``) instead of leaving
            it out with a warning (``documents.skipped`` lists those left out).

    Raises:
        ServerError: on entering, if the port is taken, the inputs hold no STAC items, an input
            is not STAC, an item is unusable under ``strict``, or the server does not come up.
    """

    def __init__(
        self,
        paths: Sequence[str | Path],
        port: int | None = None,
        host: str = "127.0.0.1",
        startup_timeout_s: float = 30.0,
        strict: bool = False,
    ) -> None:
        self.paths = [Path(p) for p in paths]
        self.strict = strict
        self.host = host
        self.requested_port = port or 0
        self.startup_timeout_s = startup_timeout_s
        self.port: int | None = None
        self.documents = StacDocuments()
        self._proc: subprocess.Popen[bytes] | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    @property
    def url(self) -> str:
        """The API root URL, e.g. ``http://127.0.0.1:40123``."""
        if self.port is None:
            raise ServerError("the STAC server is not running; use it as a context manager")
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> StacServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Check the inputs, start the server and wait until it answers."""
        self.documents = load_stac_documents(self.paths, strict=self.strict)
        port = _free_port(self.host) if self.requested_port == 0 else self.requested_port
        _check_port_free(self.host, port)
        self._tmp = tempfile.TemporaryDirectory(prefix="terracorpus-stac-")
        hrefs = _write_inputs(self.documents, Path(self._tmp.name))
        log_path = Path(self._tmp.name) / "server.log"
        cmd = [*_rustac_command(), "serve", "--addr", f"{self.host}:{port}", *hrefs]
        with log_path.open("wb") as log_file:
            self._proc = subprocess.Popen(
                cmd, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        self.port = port
        try:
            self._wait_ready(log_path)
        except BaseException:
            self.stop()
            raise
        log.info(
            "STAC API at %s: %d items, %d collections",
            self.url,
            len(self.documents.items),
            len(self.collection_ids()),
        )

    def stop(self, timeout_s: float = 5.0) -> None:
        """Terminate the server (kill it if it does not stop in ``timeout_s``); idempotent."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=timeout_s)
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
        self.port = None

    def wait(self) -> None:
        """Block until the server exits; raise :class:`ServerError` if it died on its own."""
        if self._proc is None:
            return
        code = self._proc.wait()
        if code == -signal.SIGINT:  # Ctrl-C reached the server before us
            raise KeyboardInterrupt
        raise ServerError(f"the STAC server at {self.url} exited unexpectedly (code {code})")

    def collection_ids(self) -> list[str]:
        """The collections served: declared ones and those the items name."""
        ids = {str(c["id"]) for c in self.documents.collections}
        ids.update(str(i["collection"]) for i in self.documents.items)
        return sorted(ids)

    def _wait_ready(self, log_path: Path) -> None:
        assert self._proc is not None and self.port is not None
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise _startup_error(log_path.read_text(errors="replace"), self.host, self.port)
            if _answers(f"{self.url}/"):
                # Make sure it is our process answering, not another one on the same port.
                time.sleep(0.05)
                if self._proc.poll() is not None:
                    raise _startup_error(log_path.read_text(errors="replace"), self.host, self.port)
                return
            time.sleep(0.05)
        raise ServerError(
            f"the STAC server on {self.host}:{self.port} did not answer within "
            f"{self.startup_timeout_s:.0f} s; its log:\n{log_path.read_text(errors='replace')[-2000:]}"
        )


# -- reading inputs -----------------------------------------------------------------------
def load_stac_documents(paths: Iterable[str | Path], *, strict: bool = False) -> StacDocuments:
    """Read and check STAC items and collections from directories and files.

    An item a STAC API cannot serve (no ``collection``, assets or links of the wrong shape) is
    left out with a warning and listed in ``skipped``; with ``strict`` it is an error.

    Raises:
        ServerError: a path does not exist, a named file is not STAC, nothing holds usable
            items, or (``strict``) an item is unusable.
    """
    docs = StacDocuments(strict=strict)
    given = [Path(p) for p in paths]
    if not given:
        raise ServerError("no STAC inputs given: name a world directory or item files")
    for path in given:
        if path.is_dir():
            _read_directory(path, docs)
        elif path.is_file():
            _read_file(path, docs, strict=True)
        else:
            raise ServerError(f"{path} does not exist; give a world directory or STAC item files")
    if not docs.items:
        unusable = f"; {len(docs.skipped)} unusable, e.g. {docs.skipped[0]}" if docs.skipped else ""
        raise ServerError(
            f"no STAC items in {', '.join(str(p) for p in given)} (looked for items/**/*.json, stac-geoparquet *.parquet, "
            f"or *.json / *.geojson / *.ndjson files holding STAC Items or ItemCollections){unusable}"
        )
    if docs.skipped:
        log.warning(
            "left out %d unusable item(s) of %d (first: %s); --strict refuses them",
            len(docs.skipped),
            len(docs.skipped) + len(docs.items),
            docs.skipped[0],
        )
    return docs


def _read_directory(root: Path, docs: StacDocuments) -> None:
    world_layout = (root / "items").is_dir() or (root / "collections").is_dir()
    if world_layout:
        for f in sorted((root / "collections").glob("*.json")):
            _read_file(f, docs, strict=True)
        for f in sorted((root / "items").rglob("*")):
            if f.is_file() and f.suffix in _ITEM_SUFFIXES:
                _read_file(f, docs, strict=True)
        return
    for f in sorted(root.rglob("*")):
        if f.is_file() and f.suffix in _ITEM_SUFFIXES:
            # Loose directories may hold other JSON (metadata, truth tables): skip non-STAC.
            _read_file(f, docs, strict=False)


def _read_file(path: Path, docs: StacDocuments, *, strict: bool) -> None:
    if path.suffix == ".parquet":
        _read_geoparquet(path, docs, strict=strict)
        return
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ServerError(f"cannot read {path}: {e}") from None
    try:
        if path.suffix in (".ndjson", ".jsonl"):
            objs = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            objs = [json.loads(text)]
    except json.JSONDecodeError as e:
        if not strict:
            log.debug("skipping %s: not JSON (%s)", path, e)
            return
        raise ServerError(f"{path} is not a STAC file: it is not valid JSON ({e})") from None
    base = str(path.parent.resolve())  # once per file: resolving per href is slow
    for obj in objs:
        _add_document(obj, path, base, docs, strict=strict)


def _read_geoparquet(path: Path, docs: StacDocuments, *, strict: bool) -> None:
    """stac-geoparquet (e.g. a corpus's items.parquet), read with rustac."""
    import pyarrow.parquet as pq
    import rustac

    try:
        columns = set(pq.read_schema(path).names)
    except Exception as e:  # pyarrow raises several kinds for a file that is not Parquet
        columns = set()
        log.debug("%s: not Parquet (%s)", path, e)
    if not strict and not {"id", "stac_version", "assets"} <= columns:
        log.debug("skipping %s: not stac-geoparquet (a run's tables, a manifest)", path)
        return
    try:
        obj = rustac.read_sync(str(path), format="geoparquet", set_self_link=False)
    except Exception as e:  # rustac raises its own error for any file that is not STAC
        if not strict:
            log.debug("skipping %s: not stac-geoparquet (%s)", path, e)
            return
        raise ServerError(f"{path} is not stac-geoparquet: {e}") from None
    _add_document(obj, path, str(path.parent.resolve()), docs, strict=strict)


def _add_document(obj: Any, path: Path, base: str, docs: StacDocuments, *, strict: bool) -> None:
    kind = obj.get("type") if isinstance(obj, dict) else None
    if kind == "Feature" and "stac_version" in obj and obj.get("id"):
        problem = _unusable(obj)
        if problem is None:
            docs.items.append(_checked_item(obj, path, base))
        elif docs.strict:
            raise ServerError(f"{path}: item {obj['id']!r} {problem}")
        else:
            docs.skipped.append(f"{path}: item {obj['id']!r} {problem}")
            log.debug("skipping %s", docs.skipped[-1])
    elif kind == "FeatureCollection" and isinstance(obj.get("features"), list):
        for feature in obj["features"]:
            _add_document(feature, path, base, docs, strict=True)
    elif kind == "Collection" and obj.get("id") and "extent" in obj:
        docs.collections.append({**obj, "links": []})
    elif strict:
        raise ServerError(
            f"{path} is not a STAC file: expected a STAC Item, ItemCollection or Collection "
            f"(a JSON object with 'type' Feature/FeatureCollection/Collection and "
            f"'stac_version'), found type {kind!r}"
        )
    else:
        log.debug("skipping %s: not a STAC item or collection", path)


def _unusable(item: dict[str, Any]) -> str | None:
    """Why a STAC API cannot serve ``item``, or None."""
    collection = item.get("collection")
    if not collection:
        return "names no 'collection'; a STAC API serves items within collections, so add one"
    if not isinstance(collection, str):
        return f"has collection {collection!r}, not a string id"
    if not isinstance(item.get("assets") or {}, dict):
        return "has 'assets' that are not a mapping of key to asset"
    if not isinstance(item.get("links") or [], list):
        return "has 'links' that are not a list"
    if not all(isinstance(a, dict) for a in (item.get("assets") or {}).values()):
        return "has an asset that is not a JSON object"
    return None


def _checked_item(item: dict[str, Any], path: Path, base: str) -> dict[str, Any]:
    assets = {
        key: {**asset, "href": _absolute_href(str(asset.get("href", "")), base)}
        for key, asset in (item.get("assets") or {}).items()
    }
    # The server gives each item its own self link. Items that bring one make rustac's
    # loading quadratic (4,000 items: 13 s instead of 1 s), so theirs is kept as "via".
    links = [
        {**link, "rel": "via"} if link.get("rel") == "self" else link
        for link in item.get("links") or []
        if isinstance(link, dict)
    ]
    return {**item, "assets": assets, "links": links}


def _absolute_href(href: str, base: str) -> str:
    if not href or len(urlparse(href).scheme) > 1 or os.path.isabs(href):
        return href
    return os.path.normpath(os.path.join(base, href))


def _write_inputs(docs: StacDocuments, folder: Path) -> list[str]:
    """Collections as one JSON file each, items as one ndjson file: what rustac loads."""
    hrefs = []
    for i, collection in enumerate(docs.collections):
        f = folder / f"collection-{i}.json"
        f.write_text(json.dumps(collection))
        hrefs.append(str(f))
    items = folder / "items.ndjson"
    with items.open("w") as out:
        for item in docs.items:
            out.write(json.dumps(item, separators=(",", ":")) + "\n")
    hrefs.append(str(items))
    return hrefs


# -- process and port helpers -------------------------------------------------------------
def _rustac_command() -> list[str]:
    beside = Path(sys.executable).parent / "rustac"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("rustac")
    if found:
        return [found]
    raise ServerError("the rustac command is not installed; pip install 'rustac>=0.9.6'")


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


def _check_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # SO_REUSEADDR: a port left in TIME_WAIT by a stopped server is free; a listening
        # socket still makes the bind fail (Linux).
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            raise ServerError(_port_taken(host, port)) from None


def _port_taken(host: str, port: int) -> str:
    return (
        f"port {port} on {host} is already in use; choose another with --port, "
        "or leave it out to pick a free one"
    )


def _startup_error(server_log: str, host: str, port: int) -> ServerError:
    if "Address already in use" in server_log:
        return ServerError(_port_taken(host, port))
    tail = server_log.strip()[-2000:]
    return ServerError(f"the STAC server on {host}:{port} failed to start: {tail}")


def _answers(url: str) -> bool:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy
    try:
        with opener.open(url, timeout=1.0) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError):
        return False
