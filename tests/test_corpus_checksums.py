"""Every array of the corpus carries a checksum: a flipped bit anywhere is caught by
`corpus validate` (as a problem, never a traceback) and by the training reader."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from click.testing import CliRunner

from terracorpus.pipelines.cli import main
from terracorpus.pipelines.corpus.format import GROUP_ARRAYS, IMAGE_ARRAYS, MEMBER_ARRAYS
from terracorpus.pipelines.corpus.memory import write_arrays
from terracorpus.pipelines.corpus.validate import validate_corpus
from terracorpus.pipelines.corpus.writer import Provenance
from terracorpus.pipelines.testing.corpora import synthetic_inputs
from terracorpus.training.corpus import open_corpus
from terracorpus.training.errors import CorpusReadError

S2 = "sentinel-2-l2a"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    groups, images, arrays, layouts = synthetic_inputs(6)
    out = tmp_path_factory.mktemp("corpus")
    write_arrays(
        out, groups, images, arrays, layouts, scratch=out / "_scratch", shard_mb=0.15,
        provenance=Provenance(config={"k": 1}, config_hash="abc"),
    )  # fmt: skip
    return out


def _copy(corpus: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(corpus, dst)
    return dst


def _chunk(corpus: Path, array: str) -> Path:
    """The first chunk file of ``array`` (c/0 or c/0/0 for 2-D arrays)."""
    return min(p for p in (corpus / "corpus.zarr" / array / "c").rglob("*") if p.is_file())


def _flip_bit(path: Path, byte: int) -> None:
    data = bytearray(path.read_bytes())
    data[byte % len(data)] ^= 0x01
    path.write_bytes(bytes(data))


def _codecs(arr: Any) -> list[str]:
    return [type(c).__name__ for c in arr.metadata.codecs]


def test_every_array_ends_in_a_crc32c(corpus: Path) -> None:
    root = zarr.open_group(corpus / "corpus.zarr", mode="r")
    names = [f"sensors/{S2}/{n}" for n in (*IMAGE_ARRAYS, "pixels", "valid", "label")]
    names += [f"groups/{n}" for n in (*GROUP_ARRAYS, *MEMBER_ARRAYS, "member_offsets")]
    for name in names:
        arr = root[name]
        assert isinstance(arr, zarr.Array)
        codecs = _codecs(arr)
        if arr.shards:  # pixels, valid: the checksum sits in the sharding codec's chain
            codecs = [type(c).__name__ for c in arr.metadata.codecs[0].codecs]
        assert codecs[-1] == "Crc32cCodec", (name, codecs)


@pytest.mark.parametrize("array", [f"sensors/{S2}/lat", f"sensors/{S2}/datetime"])
def test_a_flipped_bit_in_a_metadata_chunk_is_caught(
    corpus: Path, tmp_path: Path, array: str
) -> None:
    bad = _copy(corpus, tmp_path)
    # the last bytes of a chunk: zstd's last block, still decodable without a checksum
    _flip_bit(_chunk(bad, array), -6)
    report = validate_corpus(str(bad))
    assert not report.ok
    assert any(p.where == array and "checksum" in p.what for p in report.problems), report.problems
    with pytest.raises(CorpusReadError, match=array.rsplit("/", 1)[-1]):
        reader = open_corpus(bad)
        reader.read_image(S2, 0)


def test_an_undecodable_group_table_is_a_problem_not_a_traceback(
    corpus: Path, tmp_path: Path
) -> None:
    bad = _copy(corpus, tmp_path)
    _chunk(bad, "groups/member_index").write_bytes(b"\x28\xb5\x2f\xfd garbage that is not zstd")
    result = CliRunner().invoke(main, ["corpus", "validate", str(bad)])
    assert result.exit_code == 1, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "groups/member_index" in result.output and "cannot be decoded" in result.output
    with pytest.raises(CorpusReadError, match="groups/member_index"):
        open_corpus(bad)


def test_every_metadata_array_is_decoded_by_validate(corpus: Path, tmp_path: Path) -> None:
    bad = _copy(corpus, tmp_path)
    for name in ("crs", "transform", "gsd", "source_href"):
        _chunk(bad, f"sensors/{S2}/{name}").write_bytes(b"junk")
    report = validate_corpus(str(bad))
    where = {p.where for p in report.problems}
    assert {f"sensors/{S2}/{n}" for n in ("crs", "transform", "gsd", "source_href")} <= where


def test_a_corpus_marked_complete_with_an_array_missing_is_invalid(
    corpus: Path, tmp_path: Path
) -> None:
    bad = _copy(corpus, tmp_path)
    shutil.rmtree(bad / "corpus.zarr" / "sensors" / S2 / "group_index")
    report = validate_corpus(str(bad))
    assert any(p.where == f"sensors/{S2}/group_index" for p in report.problems)
    assert np.any(["missing" in p.what for p in report.problems])


def test_damaged_root_attributes_are_problems_not_tracebacks(corpus: Path, tmp_path: Path) -> None:
    import json

    bad = _copy(corpus, tmp_path)
    meta_file = bad / "corpus.zarr" / "zarr.json"
    meta = json.loads(meta_file.read_text())
    attrs = meta["attributes"]["terracorpus"]
    attrs["shards"] = [{"path": "sensors/x/pixels/c/0/0/0/0"}]  # no rows, size or digest
    attrs["sensors"][S2] = {"bands": "not a list"}
    meta_file.write_text(json.dumps(meta))
    report = validate_corpus(str(bad))
    where = {p.where for p in report.problems}
    assert f"sensors/{S2}" in where and "corpus.zarr shards" in where, report.problems
    attrs["counts"] = {"images": "many"}
    meta_file.write_text(json.dumps(meta))
    report = validate_corpus(str(bad))
    assert any("'counts' is malformed" in p.what for p in report.problems)


def test_a_damaged_root_zarr_json_is_one_line_not_a_traceback(corpus: Path, tmp_path: Path) -> None:
    bad = _copy(corpus, tmp_path)
    (bad / "corpus.zarr" / "zarr.json").write_text('{"zarr_format": 3, "node_type": "gr')
    result = CliRunner().invoke(main, ["corpus", "validate", str(bad)])
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ") and "corpus.zarr" in result.output
    assert "Traceback" not in result.output
