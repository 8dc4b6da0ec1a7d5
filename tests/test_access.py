"""Asset access at read time: Planetary Computer signing, requester-pays, no-sign, 403s.

Pixels sit behind a loopback range server that plays the provider: a token endpoint and
blobs that demand a valid, unexpired SAS token of their container; an S3-style bucket that
demands ``x-amz-request-payer``. Reads go through :func:`read_scene_chips` with the run's
access settings, as the describe and materialize workers call it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import shapely
from describe_builders import build_scene

from terracorpus.catalogs.access import ApiAccess, ReadAccess
from terracorpus.catalogs.frames import scenes_to_frame
from terracorpus.catalogs.scene import SceneRecord
from terracorpus.catalogs.sensors import builtin_registry
from terracorpus.curation.groups import ImageGroup, Member, groups_to_frame
from terracorpus.pipelines.access import read_access
from terracorpus.pipelines.cluster import dask_client
from terracorpus.pipelines.config import DaskConfig, RunConfig, parse_config
from terracorpus.pipelines.errors import ConfigError
from terracorpus.pipelines.pixels import ChipFailure, ChipPixels, ChipRequest, read_scene_chips
from terracorpus.pipelines.rundir import RunDir
from terracorpus.pipelines.signing import TokenCache
from terracorpus.pipelines.stages.describe import run_describe
from terracorpus.pipelines.testing.httpserve import RangeServer

GF2 = builtin_registry().get("gaofen-2-pms")
API = "https://stac.example.test/api/v1"
X0, Y0 = 500_000.0, 4_600_000.0


def _chip(i: int = 0) -> list[ChipRequest]:
    """A 256 m chip at full resolution (4 m), in another COG tile per ``i`` (0-2): GDAL
    caches what it read before, so a new read must ask the server for new bytes."""
    x, y = X0 + 512 * i, Y0 - 512 * i
    return [ChipRequest(f"c{i}", (x, y - 256, x + 256, y), "EPSG:32615", 4.0)]


def _access(server: RangeServer, auth: str, endpoint: str | None = None) -> ReadAccess:
    api = ApiAccess(
        API,
        "search.apis[0]",
        auth,  # type: ignore[arg-type]
        endpoint or server.token_endpoint,
        asset_hosts=(server.base_url,),
    )
    return ReadAccess((api,))


@pytest.fixture(scope="module")
def blobs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[RangeServer, Path]]:
    root = tmp_path_factory.mktemp("blobs")
    with RangeServer(root) as server:
        server.configure(require_token=True)
        yield server, root


def _scene(root: Path, server: RangeServer, name: str) -> SceneRecord:
    scene = build_scene(root / "container", name, href=server.url)
    return replace(scene, api_url=API)


def _failure(result: ChipPixels | ChipFailure) -> ChipFailure:
    assert isinstance(result, ChipFailure), "the read should have failed"
    return result


def test_signed_reads_match_the_local_pixels(blobs: tuple[RangeServer, Path]) -> None:
    server, root = blobs
    scene = _scene(root, server, "signed")
    local = build_scene(root / "container", "signed")  # the same files, read as paths
    before = server.token_requests
    (got,) = read_scene_chips(scene, GF2, _chip(), access=_access(server, "planetary-computer"))
    (want,) = read_scene_chips(local, GF2, _chip())
    assert isinstance(got, ChipPixels) and isinstance(want, ChipPixels)
    np.testing.assert_array_equal(got.pixels, want.pixels)
    # One token for the container, however many assets (5 files) were opened with it.
    assert server.token_requests - before == 1
    # The record keeps the unsigned hrefs: signing happens only in the read.
    assert all("sig=" not in ref.href for _, ref in scene.bands)


def test_unsigned_read_is_refused_and_says_what_to_set(blobs: tuple[RangeServer, Path]) -> None:
    server, root = blobs
    scene = _scene(root, server, "unsigned")
    out = read_scene_chips(scene, GF2, _chip(), access=_access(server, "none"))
    failure = _failure(out[0])
    assert failure.reason == "access_denied"
    assert "scene unsigned" in failure.detail and "search.apis[0].auth" in failure.detail


def test_token_expiring_during_a_run_is_renewed(blobs: tuple[RangeServer, Path]) -> None:
    server, root = blobs
    scene = _scene(root, server, "expiry")
    access = _access(server, "planetary-computer")
    assert isinstance(read_scene_chips(scene, GF2, _chip(0), access=access)[0], ChipPixels)
    issued = server.token_requests
    # The endpoint said the token lives an hour; the store ends it now (a revocation, or
    # clocks apart). The next read is refused once, re-signs and succeeds.
    server.expire_tokens()
    refused = server.expired
    (again,) = read_scene_chips(scene, GF2, _chip(1), access=access)
    assert isinstance(again, ChipPixels), again
    assert server.token_requests == issued + 1 and server.expired > refused


def test_tokens_are_renewed_before_they_expire(blobs: tuple[RangeServer, Path]) -> None:
    server, _ = blobs
    href = server.url("container/expiry/MSS1.tif")
    cache = TokenCache(margin_s=60.0)
    server.configure(claimed_ttl_s=3600)
    first = cache.sign(href, server.token_endpoint)
    assert cache.sign(href, server.token_endpoint) == first  # cached per container
    assert cache.fetches == 1
    server.configure(claimed_ttl_s=30)  # less than the margin left: ask again every time
    try:
        cache.invalidate(href, server.token_endpoint)
        a = cache.sign(href, server.token_endpoint)
        b = cache.sign(href, server.token_endpoint)
    finally:
        server.configure(claimed_ttl_s=3600)
    assert a != b and cache.fetches == 3
    assert a.startswith(href + "?") and "sig=" in a


def test_403_that_signing_does_not_cure_is_a_clear_failure(
    blobs: tuple[RangeServer, Path],
) -> None:
    server, root = blobs
    scene = _scene(root, server, "denied")
    server.fail("container/denied/MSS2.tif", 403)
    out = read_scene_chips(scene, GF2, _chip(), access=_access(server, "planetary-computer"))
    failure = _failure(out[0])
    assert failure.reason == "access_denied"
    assert "scene denied" in failure.detail and "fresh SAS token" in failure.detail
    assert "search.apis[0].token_endpoint" in failure.detail
    assert "sig=" not in failure.detail and "se=" not in failure.detail


def test_token_endpoint_refusing_is_a_clear_failure(
    blobs: tuple[RangeServer, Path], tmp_path: Path
) -> None:
    server, root = blobs
    scene = _scene(root, server, "noendpoint")
    access = _access(server, "planetary-computer", f"{server.base_url}/nothing")
    failure = _failure(read_scene_chips(scene, GF2, _chip(), access=access)[0])
    assert failure.reason == "access_denied"
    assert "token endpoint" in failure.detail and "answered HTTP 403" in failure.detail
    assert "PC_SDK_SUBSCRIPTION_KEY" in failure.detail


@pytest.fixture
def bucket(tmp_path: Path) -> Iterator[tuple[RangeServer, Path]]:
    """An S3-style requester-pays bucket on loopback (path-style, plain http)."""
    with RangeServer(tmp_path) as server:
        server.configure(require_payer=True)
        yield server, tmp_path


def _s3_scene(root: Path, name: str) -> SceneRecord:
    def href(p: Path) -> str:
        return "s3://bucket/" + p.relative_to(root / "bucket").as_posix()

    return replace(build_scene(root / "bucket", name, href=href), api_url=API)


def _s3_access(server: RangeServer, auth: str) -> ReadAccess:
    endpoint = (
        ("AWS_HTTPS", "NO"),
        ("AWS_S3_ENDPOINT", server.base_url.removeprefix("http://")),
        ("AWS_VIRTUAL_HOSTING", "FALSE"),
    )
    api = ApiAccess(
        API, "search.apis[0]", auth, asset_hosts=("s3://bucket",), gdal_options=endpoint
    )  # type: ignore[arg-type]
    return ReadAccess((api,))


@pytest.fixture
def aws_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-a-real-secret")


@pytest.mark.usefixtures("aws_keys")
def test_requester_pays_without_the_flag_says_what_to_set(
    bucket: tuple[RangeServer, Path],
) -> None:
    server, root = bucket
    scene = _s3_scene(root, "rp-none")
    failure = _failure(read_scene_chips(scene, GF2, _chip(), access=_s3_access(server, "none"))[0])
    assert failure.reason == "access_denied"
    assert "scene rp-none" in failure.detail
    assert "search.apis[0].auth: requester-pays" in failure.detail


@pytest.mark.usefixtures("aws_keys")
def test_requester_pays_reads_with_the_flag(bucket: tuple[RangeServer, Path]) -> None:
    server, root = bucket
    scene = _s3_scene(root, "rp")
    out = read_scene_chips(scene, GF2, _chip(), access=_s3_access(server, "requester-pays"))
    assert isinstance(out[0], ChipPixels), out[0]
    assert server.signed > 0  # requester-pays requests are signed with the workers' keys


def test_aws_no_sign_reads_a_public_bucket_anonymously(
    bucket: tuple[RangeServer, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, root = bucket
    server.configure(require_payer=False)
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    scene = _s3_scene(root, "public")
    out = read_scene_chips(scene, GF2, _chip(), access=_s3_access(server, "aws-no-sign"))
    assert isinstance(out[0], ChipPixels), out[0]
    assert server.signed == 0


def test_config_apis_auth_becomes_the_workers_access(tmp_path: Path) -> None:
    cfg = parse_config(
        {
            "search": {
                "apis": [
                    {
                        "url": "https://planetarycomputer.microsoft.com/api/stac/v1/",
                        "collections": ["sentinel-2-l2a"],
                        "auth": "planetary-computer",
                    },
                    {
                        "url": "https://landsatlook.usgs.gov/stac-server",
                        "collections": ["landsat-c2l2-sr"],
                        "auth": "requester-pays",
                        "gdal_options": {"AWS_REGION": "us-west-2"},
                    },
                ]
            },
            "access": {"local_roots": [str(tmp_path / "a" / ".." / "b")]},
        }
    )
    access = read_access(cfg)
    pc = access.for_api("https://planetarycomputer.microsoft.com/api/stac/v1")
    usgs = access.for_api("https://landsatlook.usgs.gov/stac-server/")
    assert pc is not None and pc.auth == "planetary-computer" and pc.key == "search.apis[0]"
    assert usgs is not None and usgs.gdal_config() == {
        "AWS_REQUEST_PAYER": "requester",
        "AWS_REGION": "us-west-2",
    }
    assert access.local_roots == (str((tmp_path / "b").resolve()),)


@pytest.mark.parametrize(
    ("api", "needle"),
    [
        ({"auth": "sas"}, "auth"),
        ({"gdal_options": {"AWS_SECRET_ACCESS_KEY": "x"}}, "environment"),
        ({"gdal_options": {"GDAL_HTTP_USERPWD": "u:p"}}, "environment"),
        ({"token_endpoint": "https://e.test/token?sig=abc"}, "netrc"),
        ({"asset_hosts": ["https://h.test/path"]}, "host[:port]"),
        ({"asset_hosts": ["h*.test"]}, "first label"),
    ],
)
def test_config_refuses_bad_access_settings(api: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config({"search": {"apis": [{"url": API, "collections": ["c"], **api}]}})
    assert needle in str(e.value)
    assert "abc" not in str(e.value) and "u:p" not in str(e.value)


def _group(gid: str, scene_ids: list[str]) -> ImageGroup:
    when = datetime(2021, 6, 1, tzinfo=UTC)
    members = tuple(
        Member(sid, "gaofen-2-pms", when, 0.0, 1.0, 0.0, "anchor" if i == 0 else "member")
        for i, sid in enumerate(scene_ids)
    )
    footprint = shapely.to_wkb(shapely.box(-93.0, 41.5, -92.99, 41.51))
    bounds = (X0, Y0 - 256, X0 + 256, Y0)
    return ImageGroup(
        gid, scene_ids[0], "gaofen-2-pms", "EPSG:32615", bounds, footprint, (0, 0, 64, 64), 4.0,
        members,
    )  # fmt: skip


@pytest.mark.integration
def test_describe_workers_sign_reads_and_store_no_token(
    blobs: tuple[RangeServer, Path], tmp_path: Path
) -> None:
    server, root = blobs
    scenes = [_scene(root, server, name) for name in ("w-good", "w-denied")]
    server.fail("container/w-denied/MSS3.tif", 403)
    api = {
        "url": API,
        "collections": ["gf2"],
        "auth": "planetary-computer",
        "token_endpoint": server.token_endpoint,
        "asset_hosts": [server.base_url],
    }
    cfg = RunConfig(run_dir=str(tmp_path / "run"), search={"apis": [api]})
    run = RunDir(cfg.run_dir, cfg)
    run.write_table("scenes.parquet", scenes_to_frame(scenes), stage="search")
    groups = [_group("g1", ["w-good"]), _group("g2", ["w-denied"])]
    run.write_table("groups.parquet", groups_to_frame(groups), stage="group")
    with dask_client(DaskConfig(workers=1), quiet=True) as client:
        summary = run_describe(cfg, run, client)
    assert "1 chips described, 1 failed" in summary
    fails = run.failures("describe").set_index("key")
    assert fails.loc["g2/w-denied", "reason"] == "access_denied"
    assert fails.loc["g2/w-denied", "kind"] == "scene"
    for name in ("scenes.parquet", "chips.parquet", "failures.parquet"):
        assert b"sig=" not in run.path(name).read_bytes(), name
