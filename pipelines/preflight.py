"""Everything ``curate`` would refuse, found before anything runs.

:func:`preflight` collects every problem of a validated run config that only shows when a
stage starts: the search area and time range, collections that no sensor reads, sensor files,
local roots, and whether the Dask scheduler named in the config answers. ``config check``
prints them all at once; ``curate`` checks the scheduler before it searches, so a wrong
address costs seconds, not a search.
"""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

from terracorpus.catalogs.errors import CatalogError
from terracorpus.catalogs.search import tiles_for_area, unregistered_collections
from terracorpus.catalogs.sensors import load_registry
from terracorpus.pipelines.config import RunConfig
from terracorpus.pipelines.errors import ClusterError, PipelineError

SCHEDULER_TIMEOUT_S = 5.0


def preflight(cfg: RunConfig, *, scheduler: bool = True) -> list[str]:
    """Every problem ``curate`` would stop at with ``cfg``, one message each (none: fine).

    Args:
        cfg: a run config that parsed (:func:`terracorpus.pipelines.config.load_config`).
        scheduler: also connect to ``dask.scheduler`` when one is named.
    """
    problems = _search_problems(cfg)
    if scheduler and cfg.dask.scheduler:
        try:
            check_scheduler(cfg.dask.scheduler)
        except ClusterError as e:
            problems.append(f"dask.scheduler: {e}")
    return problems


def _search_problems(cfg: RunConfig) -> list[str]:
    from terracorpus.pipelines.stages.search import search_area  # the stage's own rule

    s = cfg.search
    out = []
    if not s.apis:
        out.append("search.apis: empty; name at least one STAC API url and its collections")
    try:
        tiles_for_area(search_area(s), s.tile_degrees)
    except (PipelineError, CatalogError) as e:
        out.append(f"search area: {e}")
    if s.start is not None and s.end is not None and s.start > s.end:
        out.append(f"search.start {s.start} is after search.end {s.end}")
    try:
        registry = load_registry(*s.sensor_files)
    except CatalogError as e:
        out.append(f"search.sensor_files: {e}")
    else:
        missing = unregistered_collections([(a.url, a.collections) for a in s.apis], registry)
        if missing:
            listed = ", ".join(f"{c!r} ({url})" for url, c in missing)
            out.append(
                f"search.apis: no sensor is registered for {len(missing)} collection(s): "
                f"{listed}; add them in a sensors YAML/TOML file (docs/sensors.md)"
            )
    return out


def check_scheduler(address: str, timeout_s: float = SCHEDULER_TIMEOUT_S) -> None:
    """Refuse a Dask scheduler address nothing listens at (a TCP connect; no Dask handshake).

    Raises:
        ClusterError: the address is malformed or nothing answered within ``timeout_s``.
    """
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    if parts.scheme not in ("tcp", "tls"):
        return  # inproc://, ucx://: nothing a plain socket can check
    try:
        host, port = parts.hostname, parts.port
    except ValueError:
        host, port = None, None
    if not host or port is None:
        raise ClusterError(f"{address} is not a scheduler address; give tcp://host:port")
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            pass
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise ClusterError(
            f"cannot reach the Dask scheduler at {address} ({reason}); check the address and "
            "that the scheduler is running, or drop it to start a local cluster"
        ) from None
