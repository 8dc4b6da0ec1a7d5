"""A demo world for tests: built once per process, then reused.

Use from any test module::

    @pytest.fixture(scope="session")
    def world(tmp_path_factory):
        return tiny_world(tmp_path_factory.getbasetemp())
"""

from __future__ import annotations

import fcntl
from pathlib import Path

from terracorpus.catalogs.world.build import WorldSummary, create_world

_BUILT: dict[tuple[str, int], WorldSummary] = {}


def cached_world(root: str | Path, preset: str = "tiny", seed: int = 0) -> WorldSummary:
    """The world of ``preset``/``seed``, built under ``root/world-<preset>-<seed>`` if needed.

    Within one process a world already built (under any root) is returned again as long as
    its directory still exists, so test modules with different roots share one build. A file
    lock makes concurrent processes sharing ``root`` build it only once.
    """
    key = (preset, seed)
    known = _BUILT.get(key)
    if known is not None and (known.out / "world.json").is_file():
        return known
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f".world-{preset}-{seed}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        summary = create_world(root / f"world-{preset}-{seed}", preset=preset, seed=seed)
    _BUILT[key] = summary
    return summary


def tiny_world(root: str | Path, seed: int = 0) -> WorldSummary:
    """The ``tiny`` world (about 30 items, a few seconds of CPU to build)."""
    return cached_world(root, "tiny", seed)
