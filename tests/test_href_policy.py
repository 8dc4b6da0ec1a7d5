"""The href policy: an untrusted catalog cannot make the tool read local files or services.

Each kind of hostile href from issue #13.5 is put into a scene that a run reads with its
access settings from the config; the policy refuses it before GDAL opens anything, with a
failure naming the href (credentials stripped) and the config key that would allow it.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
from describe_builders import build_scene

from terracorpus.catalogs.access import ApiAccess, host_matches, href_problem
from terracorpus.catalogs.scene import AssetRef, SceneRecord
from terracorpus.catalogs.sensors import builtin_registry
from terracorpus.pipelines.access import read_access
from terracorpus.pipelines.config import parse_config
from terracorpus.pipelines.pixels import ChipFailure, ChipPixels, ChipRequest, read_scene_chips
from terracorpus.pipelines.testing.httpserve import RangeServer

GF2 = builtin_registry().get("gaofen-2-pms")
X0, Y0 = 500_000.0, 4_600_000.0
CHIP = [ChipRequest("c", (X0, Y0 - 256, X0 + 256, Y0), "EPSG:32615", 8.0)]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """A catalog root with one good scene, a GeoTIFF outside it, and two loopback servers:
    the API's own (declared) and another service on the same machine (not declared)."""
    base = tmp_path_factory.mktemp("site")
    root, outside = base / "catalog", base / "private"
    good = build_scene(root, "good")
    outside.mkdir()
    shutil.copy(root / "good" / "MSS1.tif", outside / "secret.tif")
    (root / "good" / "link.tif").symlink_to(outside / "secret.tif")
    with RangeServer(root) as api, RangeServer(outside) as other:
        yield {"root": root, "outside": outside, "good": good, "api": api, "other": other}


def _access(site: dict, **api: object):  # type: ignore[no-untyped-def,type-arg]
    api_url = site["api"].base_url + "/stac"
    cfg = parse_config(
        {
            "search": {"apis": [{"url": api_url, "collections": ["gf2"], **api}]},
            "access": {"local_roots": [str(site["root"])]},
        }
    )
    return read_access(cfg), api_url


def _with_band(scene: SceneRecord, href: str, api_url: str) -> SceneRecord:
    bands = tuple((n, AssetRef(n, href) if n == "MSS1" else r) for n, r in scene.bands)
    return replace(scene, bands=bands, api_url=api_url)


def _hostile(site: dict) -> dict[str, str]:  # type: ignore[type-arg]
    other, root = site["other"], site["root"]
    return {
        "file-url-outside": "file:///etc/passwd",
        "path-outside": "/etc/hostname",
        "dotdot-escape": f"{root}/good/../../private/secret.tif",
        "symlink-escape": f"{root}/good/link.tif",
        "relative": "../private/secret.tif",
        "vsicurl": f"/vsicurl/{other.url('secret.tif')}",
        "vsi-local": f"/vsizip/{root}/good/x.zip/secret.tif",
        "vsi-file-url": f"file:///vsicurl/{other.url('secret.tif')}",
        "undeclared-loopback": other.url("secret.tif"),
        "other-scheme": "gs://bucket/secret.tif",
        "credentials": other.url("secret.tif").replace("://", "://alice:hunter2@") + "?sig=abc",
    }


@pytest.mark.parametrize(
    "kind",
    [
        "file-url-outside",
        "path-outside",
        "dotdot-escape",
        "symlink-escape",
        "relative",
        "vsicurl",
        "vsi-local",
        "vsi-file-url",
        "undeclared-loopback",
        "other-scheme",
        "credentials",
    ],
)
def test_hostile_href_is_refused_before_any_read(site: dict, kind: str) -> None:  # type: ignore[type-arg]
    access, api_url = _access(site)
    href = _hostile(site)[kind]
    site["other"].reset_counters()
    out = read_scene_chips(_with_band(site["good"], href, api_url), GF2, CHIP, access=access)
    failure = out[0]
    assert isinstance(failure, ChipFailure) and failure.reason == "href_refused", failure
    assert "scene good" in failure.detail
    assert site["other"].requests == {}  # nothing was asked of the other service
    assert "hunter2" not in failure.detail and "sig=" not in failure.detail
    if kind in ("undeclared-loopback", "credentials"):
        assert "search.apis[0].asset_hosts" in failure.detail
        assert site["other"].base_url in failure.detail
    elif not kind.startswith("vsi") and kind != "other-scheme":
        assert "access.local_roots" in failure.detail


def test_allowed_hrefs_are_read(site: dict) -> None:  # type: ignore[type-arg]
    access, api_url = _access(site)
    good, api = site["good"], site["api"]
    local = replace(good, api_url=api_url)
    as_file_url = _with_band(good, (site["root"] / "good" / "MSS1.tif").as_uri(), api_url)
    on_api_host = replace(
        good,
        api_url=api_url,
        bands=tuple((n, AssetRef(n, api.url(f"good/{n}.tif"))) for n, _ in good.bands),
    )
    for scene in (local, as_file_url, on_api_host):
        assert isinstance(read_scene_chips(scene, GF2, CHIP, access=access)[0], ChipPixels)


def test_declared_asset_host_widens_the_policy(site: dict) -> None:  # type: ignore[type-arg]
    other = site["other"]
    access, api_url = _access(site, asset_hosts=[other.base_url])
    shutil.copy(site["root"] / "good" / "MSS1.tif", site["outside"] / "MSS1.tif")
    scene = _with_band(site["good"], other.url("MSS1.tif"), api_url)
    assert isinstance(read_scene_chips(scene, GF2, CHIP, access=access)[0], ChipPixels)


def test_remote_href_of_a_scene_from_no_configured_api_is_refused(site: dict) -> None:  # type: ignore[type-arg]
    access, _ = _access(site)
    scene = _with_band(site["good"], site["api"].url("good/MSS1.tif"), "http://elsewhere.test/")
    out = read_scene_chips(scene, GF2, CHIP, access=access)
    assert isinstance(out[0], ChipFailure) and out[0].reason == "href_refused"
    assert "search.apis" in out[0].detail


@pytest.mark.parametrize(
    ("href", "pattern", "ok"),
    [
        ("https://a.blob.core.windows.net/c/x.tif", "https://*.blob.core.windows.net", True),
        ("https://blob.core.windows.net/c/x.tif", "https://*.blob.core.windows.net", False),
        ("https://evil.test/a.blob.core.windows.net", "https://*.blob.core.windows.net", False),
        ("http://a.blob.core.windows.net/c/x.tif", "https://*.blob.core.windows.net", False),
        ("https://h.test:8443/x.tif", "h.test", False),
        ("https://h.test:443/x.tif", "h.test", True),
        ("https://H.TEST/x.tif", "h.test", True),
        ("http://127.0.0.1:9000/x.tif", "http://127.0.0.1:9001", False),
        ("s3://usgs-landsat/x.tif", "s3://usgs-landsat", True),
        ("s3://usgs-landsat-private/x.tif", "s3://usgs-landsat", False),
        ("https://u:p@h.test/x.tif", "h.test", True),
    ],
)
def test_host_patterns(href: str, pattern: str, ok: bool) -> None:
    assert host_matches(href, pattern) is ok


def test_known_asset_hosts_of_planetary_computer_and_earth_search() -> None:
    pc = ApiAccess("https://planetarycomputer.microsoft.com/api/stac/v1", "search.apis[0]")
    es = ApiAccess("https://earth-search.aws.element84.com/v1", "search.apis[1]")
    blob = "https://sentinel2l2a01.blob.core.windows.net/sentinel2-l2/x/B04.tif"
    cog = "https://sentinel-cogs.s3.us-west-2.amazonaws.com/sentinel-s2-l2a-cogs/x/B04.tif"
    assert href_problem(blob, pc, ()) is None and href_problem(cog, es, ()) is None
    assert href_problem("s3://usgs-landsat/collection02/x.TIF", es, ()) is None
    assert href_problem(cog, pc, ()) is not None and href_problem(blob, es, ()) is not None


def test_local_root_is_resolved(tmp_path: Path) -> None:
    root = tmp_path / "data"
    (root / "a").mkdir(parents=True)
    cfg = parse_config({"access": {"local_roots": [str(root / "a" / "..")]}})
    roots = read_access(cfg).local_roots
    assert roots == (os.path.realpath(root),)
    assert href_problem(str(root / "a" / "x.tif"), None, roots) is None
    assert href_problem(str(tmp_path / "data-evil" / "x.tif"), None, roots) is not None
