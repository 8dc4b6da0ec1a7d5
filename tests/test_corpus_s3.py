"""The corpus on object storage: written, validated and opened through s3:// (moto server)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import xarray as xr
import zarr
from zarr.storage import FsspecStore

from terracorpus.pipelines.corpus import (
    CorpusLocation,
    MemoryReader,
    Provenance,
    corpus_info,
    plan_corpus,
    validate_corpus,
    write_arrays,
    write_corpus,
)
from terracorpus.pipelines.errors import CorpusError
from terracorpus.pipelines.testing.corpora import synthetic_inputs

BUCKET = "terracorpus-test"


@pytest.fixture(scope="module")
def s3() -> Iterator[dict[str, Any]]:
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="k",
        aws_secret_access_key="s",
        region_name="us-east-1",
    ).create_bucket(Bucket=BUCKET)
    yield {
        "key": "k",
        "secret": "s",
        "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"},
    }
    server.stop()


@pytest.mark.integration
def test_corpus_round_trips_through_s3(s3, tmp_path):
    groups, images, arrays, layouts = synthetic_inputs(4)
    url = f"s3://{BUCKET}/corpora/one"
    summary = write_arrays(
        url,
        groups,
        images,
        arrays,
        layouts,
        scratch=tmp_path / "s",
        shard_mb=0.15,
        storage_options=s3,
    )
    assert summary.groups == 4
    report = validate_corpus(url, storage_options=s3)
    assert report.ok, report.problems
    assert corpus_info(url, s3).images == {"sentinel-2-l2a": 8, "landsat-oli-c2-l2": 8}
    # plain zarr and xarray, without our code
    store = FsspecStore.from_url(f"{url}/corpus.zarr", storage_options=s3, read_only=True)
    root = zarr.open_group(store, mode="r")
    ids = np.asarray(root["sensors/sentinel-2-l2a/image_id"][:]).astype(object)
    np.testing.assert_array_equal(root["sensors/sentinel-2-l2a/pixels"][3], arrays[ids[3]].pixels)
    ds = xr.open_zarr(store, group="sensors/landsat-oli-c2-l2", consolidated=False)
    assert ds["pixels"].dims == ("image", "band", "y", "x") and ds.sizes["image"] == 8


class _Crash(MemoryReader):
    def for_images(self, images):
        return self

    def __call__(self, images, layout):
        if images[0].sensor == "sentinel-2-l2a" and images[0].group_id >= "g00002":
            raise RuntimeError("simulated crash")
        return MemoryReader.__call__(self, images, layout)


@pytest.mark.integration
def test_interrupted_s3_write_is_marked_incomplete_until_resumed(s3, tmp_path):
    groups, images, arrays, layouts = synthetic_inputs(4)
    plan = plan_corpus(groups, images, layouts, 0.15)
    loc = CorpusLocation.of(f"s3://{BUCKET}/corpora/two", s3)
    with pytest.raises(RuntimeError):
        write_corpus(loc, plan, _Crash(arrays), scratch=tmp_path / "s", provenance=Provenance())
    with pytest.raises(CorpusError, match="incomplete"):
        corpus_info(loc)  # the root zarr.json is the commit marker, and it says not yet
    assert not validate_corpus(loc).ok
    done = write_corpus(
        loc, plan, MemoryReader(arrays), scratch=tmp_path / "s", provenance=Provenance()
    )
    assert done.shards_reused >= 1
    assert validate_corpus(loc).ok
