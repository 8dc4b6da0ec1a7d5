"""Demo-world benchmark: how long each preset takes to build, and how big it is.

Targets (issue 2 and the world brief): ``tiny`` builds in < 10 s on one core (every unit test
uses it), ``small`` (the demo) in < 60 s and at most a few hundred MB, ``bench`` in minutes and
at most a few GB. The build is single-process; wall time on a shared machine includes waiting
for a core, so CPU time (user + system of this process) is shown beside it and judged too.

Run: ``.venv/bin/python benchmarks/bench_world.py [--quick] [--full] [--preset P] [--seed N]``
(``--quick``: tiny only; default: tiny and small; ``--full``: also bench; ``--preset``:
just the named ones, e.g. ``redundant``, which should build in a few minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from terracorpus.catalogs.world import create_world

# preset -> (seconds target, megabytes target)
TARGETS = {
    "tiny": (10.0, 100.0),
    "small": (60.0, 500.0),
    "bench": (600.0, 5000.0),
    "redundant": (180.0, 500.0),
}


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def measure(preset: str, seed: int, root: Path) -> dict[str, float | str | int]:
    out = root / f"world-{preset}"
    t0, c0 = time.perf_counter(), _cpu()
    s = create_world(out, preset=preset, seed=seed)
    wall, cpu = time.perf_counter() - t0, _cpu() - c0
    mb = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 1e6
    shutil.rmtree(out)
    return {"preset": preset, "items": s.total_items, "mb": mb, "wall": wall, "cpu": cpu}


def _mark(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny preset only")
    ap.add_argument("--full", action="store_true", help="also the bench preset (minutes, GBs)")
    ap.add_argument("--preset", action="append", choices=sorted(TARGETS), help="only these")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    presets = ["tiny"] if args.quick else ["tiny", "small"] + (["bench"] if args.full else [])
    presets = args.preset or presets
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-world-") as tmp:
        for p in presets:
            rows.append(measure(p, args.seed, Path(tmp)))
            print(f"built {p}", file=sys.stderr)
    print(f"load average at end: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores\n")
    head = f"{'preset':<7}{'items':>6}{'MB':>9}{'wall s':>9}{'CPU s':>8}{'target s':>10}{'wall':>6}{'CPU':>6}{'MB':>6}"
    print(head)
    print("-" * len(head))
    for r in rows:
        secs, mb = TARGETS[str(r["preset"])]
        print(
            f"{r['preset']:<7}{r['items']:>6}{r['mb']:>9.1f}{r['wall']:>9.1f}{r['cpu']:>8.1f}{secs:>10.0f}"
            f"{_mark(float(r['wall']) < secs):>6}{_mark(float(r['cpu']) < secs):>6}{_mark(float(r['mb']) < mb):>6}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
