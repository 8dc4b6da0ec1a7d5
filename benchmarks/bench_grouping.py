"""Grouping benchmark: build_groups at 10,000 and 100,000 synthetic scenes.

The synthetic catalog looks like a year of real acquisitions over a mid-latitude region
spanning several UTM zones: Sentinel-2 L2A on 109.8 km tiles spaced 100 km apart (5-day
revisit, 15 % partial tiles at orbit edges), Landsat 8/9 on 185 km scenes (16-day revisit,
a few km of along-track jitter per date) and Sentinel-1 RTC on 250 x 170 km scenes (12-day
revisit), each in its own UTM zone's CRS, cloud cover uniform in 0-100 %. The region grows
with the scene count; the revisit stays the same.

Measured, side by side in one run (ratios use the process's CPU time, which stays meaningful
on a shared machine; wall time is printed too):

- time and peak memory (RSS above the pre-grouping baseline, sampled every 10 ms) of
  ``build_groups`` at 10k and 100k scenes, and the growth factor (target <= 12x);
- the same ``build_groups`` with every spatial index replaced by the straightforward
  all-pairs intersection test (:class:`AllPairsIndex`) at 10k (target: STRtree >= 20x
  faster), run in a forked child that is stopped after ``--reference-cap`` (25) times the
  STRtree CPU time; a stopped run shows the speed-up as a lower bound. When it finishes, the
  two must return identical groups;
- the candidate search alone (scenes touching each of 5,000 chips), STRtree vs all-pairs.

Run: ``.venv/bin/python benchmarks/bench_grouping.py [--quick]`` (``--quick``: 2,000 and
20,000 scenes, for a fast check; the targets are for the full sizes).
"""

from __future__ import annotations

import argparse
import gc
import math
import multiprocessing
import resource
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psutil
import shapely

from terracorpus.catalogs.scene import SceneRecord
from terracorpus.curation.groups import AllPairsIndex, GroupParams, StrTreeIndex, build_groups
from terracorpus.pipelines.testing.scenes import synthetic_scenes

PARAMS = GroupParams(chip_size_m=5120.0)


@contextmanager
def _peak_rss() -> Iterator[dict[str, float]]:
    """Peak RSS above the starting RSS, in MiB, sampled every 10 ms."""
    proc = psutil.Process()
    gc.collect()
    base = proc.memory_info().rss
    result = {"peak_mib": 0.0}
    stop = threading.Event()

    def sample() -> None:
        peak = base
        while not stop.wait(0.01):
            peak = max(peak, proc.memory_info().rss)
        result["peak_mib"] = (max(peak, proc.memory_info().rss) - base) / 2**20

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        yield result
    finally:
        stop.set()
        t.join()


@dataclass(frozen=True)
class _Timing:
    cpu_s: float
    wall_s: float
    peak_mib: float


def _timed(fn: Callable[[], Any]) -> tuple[Any, _Timing]:
    """Run fn; its process CPU time (robust on a shared machine), wall time and peak RSS."""
    with _peak_rss() as mem:
        c0, t0 = time.process_time(), time.perf_counter()
        out = fn()
        cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    return out, _Timing(cpu, wall, mem["peak_mib"])


def _progress(line: str) -> None:
    print(f"  ... {line}", file=sys.stderr, flush=True)


def _measure(scenes: list[SceneRecord], index: Any) -> tuple[list[Any], _Timing]:
    return _timed(lambda: build_groups(scenes, PARAMS, index=index))


def _reference(
    scenes: list[SceneRecord], expected: list[Any], cap_s: float
) -> tuple[_Timing | None, bool | None]:
    """The all-pairs run in a forked child limited to ``cap_s`` of CPU time.

    Returns (timing, identical groups), or (None, None) if the child hit the cap.
    """
    ctx = multiprocessing.get_context("fork")
    recv, send = ctx.Pipe(duplex=False)

    def child() -> None:
        resource.setrlimit(resource.RLIMIT_CPU, (math.ceil(cap_s), resource.RLIM_INFINITY))
        groups, timing = _measure(scenes, AllPairsIndex)
        send.send((timing, groups == expected))

    proc = ctx.Process(target=child)
    proc.start()
    proc.join()
    return recv.recv() if recv.poll() else (None, None)


def _candidate_search(scenes: list[SceneRecord], groups: list[Any], index: Any) -> float:
    """CPU seconds to find, for each of the first 5,000 group footprints, the scenes that
    touch it."""
    footprints = shapely.from_wkb([s.footprint_wkb for s in scenes])
    chips = shapely.from_wkb([g.footprint_wkb for g in groups[:5000]])
    c0 = time.process_time()
    index(footprints).query(chips)
    return time.process_time() - c0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2k and 20k scenes")
    ap.add_argument(
        "--reference-cap",
        type=float,
        default=25.0,
        help="stop the all-pairs run after this many times the STRtree CPU time",
    )
    args = ap.parse_args(argv)
    small, large = (2_000, 20_000) if args.quick else (10_000, 100_000)

    scenes = synthetic_scenes(small, seed=1)
    groups_s, t_s = _measure(scenes, StrTreeIndex)
    _progress(f"STRtree at {small}: {t_s}")
    cap = args.reference_cap * t_s.cpu_s
    t_ref, same = _reference(scenes, groups_s, cap)
    _progress(f"all-pairs at {small}: {t_ref}, identical: {same}")
    q_tree = _candidate_search(scenes, groups_s, StrTreeIndex)
    q_ref = _candidate_search(scenes, groups_s, AllPairsIndex)
    n_small = len(groups_s)
    del groups_s, scenes
    scenes = synthetic_scenes(large, seed=2)
    groups_l, t_l = _measure(scenes, StrTreeIndex)
    _progress(f"STRtree at {large}: {t_l}")

    growth = t_l.cpu_s / t_s.cpu_s
    speedup = (t_ref.cpu_s if t_ref else cap) / t_s.cpu_s
    members = sum(len(g.members) for g in groups_l) / max(1, len(groups_l))
    sensors = sum(len(g.sensors) for g in groups_l) / max(1, len(groups_l))
    mode = "quick" if args.quick else "full"
    print(f"grouping benchmark ({mode}; chip {PARAMS.chip_size_m:.0f} m; ratios use CPU time)")
    print(f"{'case':<36}{'scenes':>8}{'groups':>8}{'cpu s':>9}{'wall s':>9}{'peak MiB':>10}")
    for name, n, g, t in (
        ("build_groups, STRtree", small, n_small, t_s),
        ("build_groups, all-pairs reference", small, n_small, t_ref),
        ("build_groups, STRtree", large, len(groups_l), t_l),
    ):
        if t is None:
            print(f"{name:<36}{n:>8}{g:>8}{'> ' + format(cap, '.0f'):>9}{'stopped':>9}{'':>10}")
        else:
            print(f"{name:<36}{n:>8}{g:>8}{t.cpu_s:>9.2f}{t.wall_s:>9.2f}{t.peak_mib:>10.0f}")
    print(
        f"candidate search, 5000 chips at {small}: STRtree {q_tree:.3f} s, all-pairs {q_ref:.3f} s"
    )
    print(f"at {large}: {members:.2f} images and {sensors:.2f} sensors per group")
    print()
    print(f"{'measure':<48}{'value':>9}{'target':>10}  result")
    prefix = "" if t_ref else ">="
    rows = [
        (f"time growth {small} -> {large} scenes", "", growth, "<= 12x", growth <= 12.0),
        (
            f"build_groups speed-up over all-pairs at {small}",
            prefix,
            speedup,
            ">= 20x",
            speedup >= 20.0,
        ),
        (f"candidate search speed-up at {small}", "", q_ref / q_tree, "(info)", None),
    ]
    for name, pre, value, target, ok in rows:
        verdict = "" if ok is None else ("PASS" if ok else "MISS")
        print(f"{name:<48}{pre + format(value, '.1f'):>8}x{target:>10}  {verdict}")
    verdict = "not compared (stopped)" if same is None else ("PASS" if same else "MISS")
    print(f"{'identical groups, STRtree vs all-pairs':<48}{same!s:>9}{'True':>10}  {verdict}")
    return 1 if same is False else 0


if __name__ == "__main__":
    sys.exit(main())
