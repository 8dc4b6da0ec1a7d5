"""The dedup stage and command: chips.parquet in, selection.parquet out, bad input explained.

Synthetic chips.parquet (as describe writes it) are built here until real ones exist.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from terracorpus.pipelines.cli import main
from terracorpus.pipelines.config import RunConfig
from terracorpus.pipelines.errors import StageError
from terracorpus.pipelines.rundir import RunDir, read_parquet
from terracorpus.pipelines.stages import dedup as dedup_stage
from terracorpus.pipelines.stages.dedup import features, read_chips, run_dedup

DIM = 16
NAMES_KEY = b"terracorpus.descriptor_names"


def descriptor_names(dim: int) -> list[str]:
    """A layout with the four parts of the real one (spec, index, tex, meta)."""
    parts = ["spec", "index", "tex", "meta"]
    return [f"{parts[i * 4 // dim]}.v{i}" for i in range(dim)]


def make_chips(
    n_groups: int = 300,
    *,
    members: int = 2,
    dim: int = 16,
    clusters: int = 6,
    duplicates: float = 0.2,
    seed: int = 0,
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Anchor + member chips; anchors' descriptors from a Gaussian mixture with planted copies.

    The last ``duplicates`` share of groups are near-copies (noise 1e-3) of earlier groups.
    Returns the chips, each group's planted cluster (copies carry their source's), and the
    source group of each copy.
    """
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 6, (clusters, dim))
    n_orig = n_groups - int(n_groups * duplicates)
    truth = rng.integers(0, clusters, n_orig)
    desc = centres[truth] + rng.normal(0, 1, (n_orig, dim))
    src = rng.integers(0, n_orig, n_groups - n_orig)
    desc = np.vstack([desc, desc[src] + rng.normal(0, 1e-3, (len(src), dim))])
    truth = np.concatenate([truth, truth[src]])
    rows = []
    for g in range(n_groups):
        gid = f"g{g:05d}"
        for m in range(members + 1):
            d = desc[g] if m == 0 else desc[g] + rng.normal(0, 0.5, dim)
            rows.append(
                {
                    "chip_id": f"{gid}/s{m}",
                    "group_id": gid,
                    "scene_id": f"s{m}",
                    "sensor": "sentinel-2-l2a" if m == 0 else "landsat-oli-c2-l2",
                    "role": "anchor" if m == 0 else "member",
                    "nodata_fraction": 0.0,
                    "cloud_fraction": 0.05,
                    "shadow_fraction": 0.0,
                    "snow_fraction": 0.0,
                    "water_fraction": 0.0,
                    "information": 0.5,
                    "lon": 10.0 + (g % 20) * 0.01,
                    "lat": 45.0 + (g // 20) * 0.01,
                    "datetime": pd.Timestamp("2021-06-01", tz="UTC"),
                    "descriptor": d.astype(np.float32),
                }
            )
    return pd.DataFrame(rows), truth, src


def write_chips(
    run: RunDir, chips: pd.DataFrame, names: list[str] | None = None, *, schema_key: bool = False
) -> Path:
    """chips.parquet as describe writes it: stamped, descriptor names in the artifact metadata
    (or, with ``schema_key``, in the schema metadata key ``terracorpus.descriptor_names``)."""
    if not schema_key:
        extra = {} if names is None else {"descriptor_names": names}
        return run.write_table("chips.parquet", chips, stage="describe", **extra)
    path = run.write_table("chips.parquet", chips, stage="describe")
    if names is not None:
        table = pq.read_table(path)
        meta = dict(table.schema.metadata or {})
        meta[NAMES_KEY] = json.dumps(names).encode()
        pq.write_table(table.replace_schema_metadata(meta), path)
    return path


def setup_run(tmp_path: Path, chips: pd.DataFrame, **dedup: Any) -> tuple[RunConfig, RunDir]:
    cfg = RunConfig(run_dir=str(tmp_path / "run"), dedup=dedup)
    run = RunDir(cfg.run_dir, cfg)
    write_chips(run, chips, descriptor_names(DIM))
    return cfg, run


def test_selection_has_every_chip_a_reason_and_no_kept_duplicate_pairs(tmp_path: Path) -> None:
    chips, truth, sources = make_chips(400, dim=DIM, clusters=5)
    cfg, run = setup_run(tmp_path, chips, partition_size=100, top_size=60, duplicate_radius=0.2)
    summary = run_dedup(cfg, run)
    sel = read_parquet(run.path("selection.parquet"))
    assert run.is_current("selection.parquet")
    assert len(sel) == len(chips) and set(sel["chip_id"]) == set(chips["chip_id"])
    assert (sel["reason"] != "").all()
    anchors = sel[sel["role"] == "anchor"].set_index("group_id")
    # a planted copy never survives beside its source: one of them is a near-duplicate
    n_orig = 400 - len(sources)
    kept = anchors["kept"].to_numpy()
    reason = anchors["reason"].to_numpy()
    for copy, source in enumerate(sources, start=n_orig):
        assert not (kept[copy] and kept[source])
        if kept[source] or kept[copy]:
            assert "near_duplicate" in (reason[copy], reason[source])
    # every planted cluster keeps at least one group
    kept_truth = set(truth[kept])
    assert kept_truth == set(range(5))
    # members follow their anchors
    members = sel[sel["role"] == "member"]
    assert (members["kept"].to_numpy() == anchors.loc[members["group_id"], "kept"].to_numpy()).all()
    assert summary.kept_groups == kept.sum() and summary.clusters >= 5
    assert "exemplar" in summary.table() and "over_quota" in summary.reasons


def test_descriptor_names_weight_their_parts(tmp_path: Path) -> None:
    chips, _, _ = make_chips(60, members=0, dim=DIM)
    cfg = RunConfig(run_dir=str(tmp_path / "run"), dedup={"descriptor_weights": {"meta": 0.0}})
    run = RunDir(cfg.run_dir, cfg)
    write_chips(run, chips, descriptor_names(DIM), schema_key=True)
    table = read_chips(run)
    assert list(table.descriptor_names) == descriptor_names(DIM)
    X = features(table, cfg.dedup)
    assert (X[:, DIM * 3 // 4 :] == 0).all() and X[:, 0].std() > 0.5
    bad = RunConfig(run_dir=cfg.run_dir, dedup={"descriptor_weights": {"colour": 1.0}})
    with pytest.raises(StageError, match="unknown part"):
        run_dedup(bad, RunDir(bad.run_dir, bad, allow_mixed=True))


def test_same_selection_on_a_rerun(tmp_path: Path) -> None:
    chips, _, _ = make_chips(300, dim=DIM)
    cfg, run = setup_run(
        tmp_path, chips.sample(frac=1.0, random_state=3), partition_size=80, top_size=50
    )
    run_dedup(cfg, run)
    first = pd.read_parquet(run.path("selection.parquet"))
    run_dedup(cfg, run)
    assert first.equals(pd.read_parquet(run.path("selection.parquet")))


def test_nan_descriptors_are_dropped_recorded_and_explained(tmp_path: Path) -> None:
    chips, _, _ = make_chips(60, dim=DIM)
    bad = chips.index[chips["role"] == "anchor"][:3]
    for i in bad:
        d = chips.at[i, "descriptor"].copy()
        d[2] = np.inf if i == bad[0] else np.nan
        chips.at[i, "descriptor"] = d
    cfg, run = setup_run(tmp_path, chips)
    summary = run_dedup(cfg, run)
    sel = pd.read_parquet(run.path("selection.parquet")).set_index("chip_id")
    assert (sel.loc[chips.loc[bad, "chip_id"], "reason"] == "invalid_descriptor").all()
    groups = chips.loc[bad, "group_id"]
    assert not sel[sel["group_id"].isin(groups)]["kept"].any()
    assert any("NaN/inf" in m for m in summary.messages)
    failures = run.failures("dedup")
    assert set(failures["key"]) == set(chips.loc[bad, "chip_id"])


def test_single_chip_is_kept_as_its_own_cluster(tmp_path: Path) -> None:
    chips, _, _ = make_chips(1, members=0, dim=DIM, duplicates=0.0)
    cfg, run = setup_run(tmp_path, chips)
    summary = run_dedup(cfg, run)
    sel = pd.read_parquet(run.path("selection.parquet"))
    assert sel["kept"].tolist() == [True] and sel["reason"].tolist() == ["exemplar"]
    assert summary.clusters == 1


def test_identical_chips_form_one_cluster_and_one_survivor(tmp_path: Path) -> None:
    chips, _, _ = make_chips(50, members=0, dim=DIM, duplicates=0.0)
    chips["descriptor"] = [np.ones(DIM, np.float32)] * len(chips)
    cfg, run = setup_run(tmp_path, chips, quota="all")
    summary = run_dedup(cfg, run)
    sel = pd.read_parquet(run.path("selection.parquet"))
    assert summary.clusters == 1 and sel["kept"].sum() == 1
    assert (sel["reason"] == "near_duplicate").sum() == 49


def test_fewer_chips_than_target_keeps_all_and_says_so(tmp_path: Path) -> None:
    chips, _, _ = make_chips(40, members=0, dim=DIM, duplicates=0.0)
    cfg, run = setup_run(tmp_path, chips, target_groups=500, duplicate_radius=0.0)
    summary = run_dedup(cfg, run)
    assert summary.kept_groups == 40
    assert any("fewer than target_groups 500" in m for m in summary.messages)


def test_non_converging_blocks_are_recorded_not_silent(tmp_path: Path) -> None:
    chips, _, _ = make_chips(200, members=0, dim=DIM)
    cfg, run = setup_run(
        tmp_path, chips, max_iter=10, convergence_iter=50, partition_size=60, top_size=40
    )
    summary = run_dedup(cfg, run)
    assert summary.unconverged > 0
    assert any("did not converge" in m for m in summary.messages)
    failures = run.failures("dedup")
    assert (failures["reason"] == "not_converged").sum() == summary.unconverged
    assert summary.kept_groups > 0


def test_all_chips_failing_quality_is_an_explained_empty_selection(tmp_path: Path) -> None:
    chips, _, _ = make_chips(30, members=0, dim=DIM)
    chips["cloud_fraction"] = 0.95
    cfg, run = setup_run(tmp_path, chips)
    summary = run_dedup(cfg, run)
    assert summary.kept_groups == 0
    assert any("no group was kept" in m and "cloud" in m for m in summary.messages)


@pytest.mark.parametrize(
    ("column", "change", "message"),
    [
        ("cloud_fraction", "drop", r"lacks the column\(s\) cloud_fraction that curation reads"),
        ("role", "drop", r"lacks the column\(s\) role"),
        ("lon", "drop", r"lacks the column\(s\) lon"),
        (
            "information",
            "text",
            r"column information is (large_)?string, not a number \(describe writes double\)",
        ),
        ("group_id", "number", r"column group_id is int64, not text"),
        ("descriptor", "text", r"column descriptor is (large_)?string, not a list of numbers"),
    ],
)
def test_a_missing_or_mistyped_column_is_an_error_naming_it(
    tmp_path: Path, column: str, change: str, message: str
) -> None:
    # before the typed table, a renamed cloud column silently turned the cloud rule off and a
    # missing role made every chip an anchor
    chips, _, _ = make_chips(20, dim=DIM)
    if change == "drop":
        chips = chips.drop(columns=[column])
    elif change == "text":
        chips[column] = chips[column].astype(str)
    else:
        chips[column] = np.arange(len(chips))
    cfg, run = setup_run(tmp_path, chips)
    with pytest.raises(StageError, match=message):
        run_dedup(cfg, run)
    assert not run.path("selection.parquet").exists()


def test_an_unknown_role_is_refused(tmp_path: Path) -> None:
    chips, _, _ = make_chips(5, dim=DIM)
    chips.loc[0, "role"] = "Anchor"
    cfg, run = setup_run(tmp_path, chips)
    with pytest.raises(StageError, match="role must be one of anchor, member, not 'Anchor'"):
        run_dedup(cfg, run)


def test_missing_chips_is_a_stage_error(tmp_path: Path) -> None:
    cfg = RunConfig(run_dir=str(tmp_path / "run"))
    with pytest.raises(StageError, match="run the stage that makes it"):
        run_dedup(cfg, RunDir(cfg.run_dir, cfg))


@pytest.mark.integration
def test_command_on_local_clusters_gives_the_same_selection_for_any_worker_count(
    tmp_path: Path,
) -> None:
    chips, _, _ = make_chips(500, members=1, dim=DIM)
    cfg, run = setup_run(tmp_path, chips, partition_size=60, top_size=50, dask_min_chips=0)
    runner = CliRunner()
    selections = []
    for workers in (1, 2):
        result = runner.invoke(main, ["dedup", "--run-dir", cfg.run_dir, "--workers", str(workers)])
        assert result.exit_code == 0, result.output
        assert "chips by reason" in result.output and "level 1:" in result.output
        assert "ran on the Dask cluster" in result.output
        selections.append(pd.read_parquet(run.path("selection.parquet")))
    assert selections[0].equals(selections[1])
    serial = RunConfig(run_dir=str(tmp_path / "serial"), dedup=cfg.dedup)
    serial_run = RunDir(serial.run_dir, serial)
    write_chips(serial_run, chips, descriptor_names(DIM))
    run_dedup(serial, serial_run)
    assert selections[0].equals(pd.read_parquet(serial_run.path("selection.parquet")))


def test_command_reports_a_missing_run_clearly(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        main, ["dedup", "--run-dir", str(tmp_path / "nothing"), "--workers", "1"]
    )
    assert result.exit_code == 2
    assert "chips.parquet" in result.output


def test_the_chip_table_reads_columns_of_describes_schema() -> None:
    from terracorpus.pipelines.chips import COLUMNS, SCHEMA
    from terracorpus.pipelines.stages.describe import SCHEMA as WRITTEN

    assert WRITTEN is SCHEMA  # one declaration, used by the writer and the reader
    assert set(COLUMNS) <= set(SCHEMA.names)
    assert {"chip_id", "group_id", "role", "cloud_fraction", "descriptor"} <= set(COLUMNS)


def test_read_chips_gives_typed_arrays_sorted_by_chip_id(tmp_path: Path) -> None:
    chips, _, _ = make_chips(10, dim=DIM)
    chips.loc[4, "information"] = np.nan
    _, run = setup_run(tmp_path, chips.sample(frac=1.0, random_state=1))
    table = read_chips(run)
    assert list(table.chip_id) == sorted(chips["chip_id"])
    assert table.descriptor.shape == (len(chips), DIM) and table.descriptor.dtype == np.float64
    assert table.anchor.sum() == 10 and np.isnan(table.information).sum() == 1


def test_partitioned_chips_and_selection_read_as_the_single_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    chips, _, _ = make_chips(120, dim=DIM)
    chips = chips.sample(frac=1.0, random_state=2).reset_index(drop=True)
    _, one = setup_run(tmp_path / "one", chips)
    cfg = RunConfig(run_dir=str(tmp_path / "parts" / "run"))
    parts = RunDir(cfg.run_dir, cfg)
    blank = chips.iloc[:7].assign(descriptor=None)  # a partition without any descriptor
    pieces = [chips.iloc[7:47], blank, chips.iloc[47:87], chips.iloc[87:]]
    with parts.partitioned_table(
        "chips.parquet",
        stage="describe",
        partitions=len(pieces),
        descriptor_names=descriptor_names(DIM),
    ) as out:
        for piece in pieces:
            out.write(pa.Table.from_pandas(piece, preserve_index=False))
    a, b = read_chips(one), read_chips(parts)
    assert list(a.chip_id) == list(b.chip_id) == sorted(chips["chip_id"])
    blank_rows = np.isin(b.chip_id, blank["chip_id"])
    assert np.isnan(b.descriptor[blank_rows]).all()
    np.testing.assert_array_equal(a.descriptor[~blank_rows], b.descriptor[~blank_rows])
    # selection.parquet in partitions: read whole, the same rows as in one
    monkeypatch.setattr(dedup_stage, "SELECTION_ROWS", 50)
    run_dedup(cfg, parts)
    path = parts.path("selection.parquet")
    assert (
        pq.ParquetFile(path).num_row_groups
        == -(-len(chips) // 50)
        == parts.table_meta("selection.parquet")["partitions"]
    )
    assert len(pd.read_parquet(path)) == len(chips)
