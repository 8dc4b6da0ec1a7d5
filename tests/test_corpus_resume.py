"""A materialize killed mid-write (SIGKILL) leaves no corpus; rerunning finishes it identically."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from terracorpus.pipelines.corpus import (
    CorpusLocation,
    MemoryReader,
    Provenance,
    plan_corpus,
    validate_corpus,
    write_corpus,
)
from terracorpus.pipelines.testing.corpora import synthetic_inputs

N_GROUPS, SHARD_MB = 12, 0.07

SCRIPT = textwrap.dedent(
    """
    import sys, time
    from dataclasses import dataclass
    from pathlib import Path
    from terracorpus.pipelines.corpus import CorpusLocation, MemoryReader, Provenance, plan_corpus, write_corpus
    from terracorpus.pipelines.testing.corpora import synthetic_inputs

    @dataclass(frozen=True)
    class Slow(MemoryReader):
        def for_images(self, images):
            return self
        def __call__(self, images, layout):
            time.sleep(0.25)
            return MemoryReader.__call__(self, images, layout)

    out, scratch = Path(sys.argv[1]), Path(sys.argv[2])
    groups, images, arrays, layouts = synthetic_inputs({n})
    plan = plan_corpus(groups, images, layouts, {mb})
    write_corpus(CorpusLocation.of(out), plan, Slow(arrays), scratch=scratch, provenance=Provenance())
    """
).format(n=N_GROUPS, mb=SHARD_MB)


def _content(corpus: Path) -> dict[str, bytes]:
    store = corpus / "corpus.zarr"
    files = {str(p.relative_to(store)): p.read_bytes() for p in store.rglob("*") if p.is_file()}
    shards = json.loads(files.pop("zarr.json"))["attributes"]["terracorpus"]["shards"]
    files["shards"] = json.dumps(shards).encode()
    return files


@pytest.mark.integration
def test_killed_write_resumes_to_identical_content(tmp_path):
    groups, images, arrays, layouts = synthetic_inputs(N_GROUPS)
    plan = plan_corpus(groups, images, layouts, SHARD_MB)
    assert len(plan.shards) >= 8
    out, scratch = tmp_path / "killed", tmp_path / "scratch"
    script = tmp_path / "write.py"
    script.write_text(SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), str(out), str(scratch)])
    markers = scratch / "shards"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(markers.rglob("*.json"))) < 3:
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    done = len(list(markers.rglob("*.json")))
    assert 3 <= done < len(plan.shards), "the kill should land mid-write"
    assert not (out / "corpus.zarr").exists() and (out / "corpus.zarr.partial").exists()

    resumed = write_corpus(
        CorpusLocation.of(out), plan, MemoryReader(arrays), scratch=scratch, provenance=Provenance()
    )
    assert resumed.shards_reused >= done - 1  # a shard written but not yet marked is redone
    assert resumed.shards_written + resumed.shards_reused == len(plan.shards)
    assert validate_corpus(out).ok

    fresh = tmp_path / "fresh"
    write_corpus(
        CorpusLocation.of(fresh),
        plan,
        MemoryReader(arrays),
        scratch=tmp_path / "s2",
        provenance=Provenance(),
    )
    assert _content(out) == _content(fresh)
