"""A demo world for tests: built once per process and cache directory, then reused.

Use from any test module::

    @pytest.fixture(scope="session")
    def world(tmp_path_factory):
        return tiny_world(tmp_path_factory.getbasetemp())
"""

from __future__ import annotations

import fcntl
from pathlib import Path

from terracorpus.catalogs.world.build import WorldSummary, create_world

_BUILT: dict[tuple[str, str, int], WorldSummary] = {}


def cached_world(root: str | Path, preset: str = "tiny", seed: int = 0) -> WorldSummary:
    """The world of ``preset``/``seed`` under ``root/world-<preset>-<seed>``, built if missing.

    A file lock makes concurrent test processes sharing ``root`` build it only once.
    """
    root = Path(root)
    key = (str(root.resolve()), preset, seed)
    if key in _BUILT:
        return _BUILT[key]
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".world-{preset}-{seed}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        summary = create_world(root / f"world-{preset}-{seed}", preset=preset, seed=seed)
    _BUILT[key] = summary
    return summary


def tiny_world(root: str | Path, seed: int = 0) -> WorldSummary:
    """The ``tiny`` world (about 30 items, a few seconds to build) under ``root``."""
    return cached_world(root, "tiny", seed)
