"""`curate` end to end on a Planetary-Computer-style catalog: pixels behind SAS signing.

The tiny demo world's items are served by the real local STAC API with their hrefs moved
onto a loopback range server that, like Azure blob storage behind Planetary Computer,
demands a valid, unexpired token of each container (a collection's folder) from its token
endpoint. Tokens end after a few seconds although the endpoint says an hour, and every token
is revoked once the run has made a few hundred reads, so tokens end during the run however
fast the machine is: the workers must re-sign and still read every scene, and no token may
reach any file of the run directory.
"""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from terracorpus.catalogs.server import StacServer
from terracorpus.catalogs.world.build import WorldSummary
from terracorpus.catalogs.world.testing import tiny_world
from terracorpus.pipelines.config import parse_config
from terracorpus.pipelines.corpus.validate import validate_corpus
from terracorpus.pipelines.curate import curate
from terracorpus.pipelines.errors import StageError
from terracorpus.pipelines.testing.httpserve import RangeServer

pytestmark = pytest.mark.integration
TOKEN_LIFE_S = 10.0
REVOKE_AFTER_READS = 300  # the tiny world's curate makes about 1,500


def _revoke_tokens_mid_run(server: RangeServer, done: threading.Event) -> None:
    """Once the run has made ``REVOKE_AFTER_READS`` reads, end every token issued so far."""
    while not done.wait(0.05):
        if sum(server.requests.values()) >= REVOKE_AFTER_READS:
            server.expire_tokens()
            return


def _signed_catalog(world: WorldSummary, server: RangeServer, out: Path) -> Path:
    """The world's items and collections, each asset href a URL on ``server``."""
    cogs = Path(world.out) / "cogs"
    shutil.copytree(Path(world.out) / "collections", out / "collections")
    for path in sorted(Path(world.out).glob("items/*/*.json")):
        item = json.loads(path.read_text())
        for asset in item["assets"].values():
            if Path(asset["href"]).is_relative_to(cogs):
                asset["href"] = server.url(Path(asset["href"]).relative_to(cogs))
        target = out / "items" / path.parent.name / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(item))
    return out


@pytest.fixture(scope="module")
def signed_world(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[WorldSummary, RangeServer, str]]:
    world = tiny_world(tmp_path_factory.getbasetemp() / "worlds")
    with RangeServer(Path(world.out) / "cogs") as blobs:
        blobs.configure(require_token=True, token_ttl_s=TOKEN_LIFE_S, claimed_ttl_s=3600)
        catalog = _signed_catalog(world, blobs, tmp_path_factory.mktemp("pc-catalog"))
        with StacServer([catalog]) as api:
            yield world, blobs, api.url


def _config(world: WorldSummary, blobs: RangeServer, api_url: str, run_dir: Path, auth: str):  # type: ignore[no-untyped-def]
    regions = json.loads((Path(world.out) / "world.json").read_text())["regions"]
    return parse_config(
        {
            "run_dir": str(run_dir),
            "search": {
                "apis": [
                    {
                        "url": api_url,
                        "collections": list(world.collections),
                        "auth": auth,
                        "token_endpoint": blobs.token_endpoint,
                        "asset_hosts": [blobs.base_url],
                    }
                ],
                "tiles": [r["bbox"] for r in regions],
                "start": str(world.start),
                "end": str(world.end),
            },
            "group": {"chip_size_m": 480.0},
            "describe": {"batch_size": 4},
            "dask": {"workers": 2},
        }
    )


def test_curate_reads_signed_pixels_through_token_expiry(
    signed_world: tuple[WorldSummary, RangeServer, str], tmp_path: Path
) -> None:
    world, blobs, api_url = signed_world
    run_dir = tmp_path / "run"
    blobs.reset_counters()
    expired_before = blobs.expired
    done = threading.Event()
    revoker = threading.Thread(target=_revoke_tokens_mid_run, args=(blobs, done), daemon=True)
    revoker.start()
    try:
        curate(_config(world, blobs, api_url, run_dir, "planetary-computer"), echo=lambda s: None)
    finally:
        done.set()
        revoker.join()
    assert validate_corpus(str(run_dir)).ok
    failures = (
        pd.read_parquet(run_dir / "failures.parquet")
        if (run_dir / "failures.parquet").exists()
        else pd.DataFrame({"reason": []})
    )
    unreadable = {"access_denied", "href_refused", "scene_unreadable", "read_error"}
    assert not set(failures["reason"]) & unreadable, failures
    # Tokens ended during the run (reads were refused with them) and were renewed.
    assert blobs.expired > expired_before
    for path in run_dir.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert b"sig=" not in data and b"se=20" not in data, path
    manifest = pd.read_parquet(run_dir / "manifest.parquet")
    assert manifest["sensor"].nunique() >= 2


def test_curate_without_auth_records_what_to_set(
    signed_world: tuple[WorldSummary, RangeServer, str], tmp_path: Path
) -> None:
    world, blobs, api_url = signed_world
    run_dir = tmp_path / "run"
    # The one-line error says the commonest reason and what to set.
    what = r"describe could not read any.*most \(\d+\): access_denied: .*search\.apis\[0\]\.auth"
    with pytest.raises(StageError, match=what):
        curate(_config(world, blobs, api_url, run_dir, "none"), echo=lambda s: None)
    failures = pd.read_parquet(run_dir / "failures.parquet")
    failures = failures[failures["stage"] == "describe"]  # group records its unused scenes
    denied = failures[failures["reason"] == "access_denied"]
    assert len(denied) == len(failures) > 0
    assert denied["detail"].str.contains("search.apis\\[0\\].auth").all()
