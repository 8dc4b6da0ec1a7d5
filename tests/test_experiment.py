"""The corpus experiment: baseline selections, curation metrics, the table, and the command
end to end on the tiny world (2 arms, 2 seeds, a few steps), resumed after a lost job."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from terracorpus.catalogs.server import StacServer
from terracorpus.catalogs.world.testing import tiny_world
from terracorpus.curation.baselines import (
    balanced_counts,
    farthest_point_selection,
    kmeans_balanced_selection,
    random_selection,
)
from terracorpus.curation.errors import ClusteringError
from terracorpus.curation.metrics import (
    class_entropy,
    coverage_distance,
    residual_duplicate_share,
    selection_quality,
)
from terracorpus.pipelines.cli import main
from terracorpus.pipelines.curate import curate
from terracorpus.pipelines.demo import PRESETS, demo_run_config
from terracorpus.pipelines.errors import StageError
from terracorpus.pipelines.experiment.summary import interval, markdown, summarize
from terracorpus.pipelines.report import write_report
from terracorpus.training.corpus import open_corpus
from terracorpus.training.data import DataConfig, GroupBatch, collate_groups, load_group
from terracorpus.training.model import A2MAE, model_args
from terracorpus.training.testing import write_synthetic_corpus


def _blobs(sizes: tuple[int, ...], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centres = np.eye(len(sizes), 8) * 20
    X = np.concatenate(
        [c + rng.normal(0, 0.5, (n, 8)) for c, n in zip(centres, sizes, strict=True)]
    )
    return X.astype(np.float32), np.repeat(np.arange(len(sizes)), sizes)


# -- selections ---------------------------------------------------------------------------
def test_random_selection_is_seeded_and_without_repeats() -> None:
    a, b = random_selection(100, 30, 1), random_selection(100, 30, 1)
    assert np.array_equal(a, b) and len(np.unique(a)) == 30
    assert not np.array_equal(a, random_selection(100, 30, 2))
    with pytest.raises(ClusteringError, match="cannot select 101 groups from a pool of 100"):
        random_selection(100, 101, 0)


def test_balanced_counts_fill_small_bins_and_share_the_rest_evenly() -> None:
    rng = np.random.default_rng(0)
    counts = balanced_counts(np.array([100, 2, 30, 5]), 40, rng)
    assert counts.sum() == 40 and counts[1] == 2 and counts[3] == 5
    assert abs(int(counts[0]) - int(counts[2])) <= 1
    assert balanced_counts(np.array([1, 1]), 5, rng).tolist() == [1, 1]  # budget beyond capacity


def test_kmeans_balanced_gives_small_clusters_their_share_where_random_does_not() -> None:
    X, truth = _blobs((400, 20, 20, 20))
    picked = kmeans_balanced_selection(X, 40, seed=0)
    per_blob = np.bincount(truth[picked], minlength=4)
    assert len(np.unique(picked)) == 40
    assert per_blob[1:].min() >= 3, per_blob  # random would give each small blob ~1.7
    assert per_blob[0] <= 25, per_blob  # random: ~35


def test_farthest_point_reaches_every_blob_first() -> None:
    X, truth = _blobs((300, 5, 5, 5, 5))
    picked = farthest_point_selection(X, 5)
    assert sorted(truth[picked].tolist()) == [0, 1, 2, 3, 4]
    assert np.array_equal(picked, farthest_point_selection(X, 5))


# -- metrics ------------------------------------------------------------------------------
def test_selection_metrics() -> None:
    assert class_entropy(np.array([0, 0, 1, 1, -1])) == pytest.approx(1.0)
    assert class_entropy(np.array([3, 3, 3])) == 0.0
    X = np.array([[0, 0], [0.1, 0], [5, 5], [10, 10]], np.float32)
    assert residual_duplicate_share(X, 0.5) == pytest.approx(0.5)  # the first two
    assert coverage_distance(X, X) == pytest.approx(0.0, abs=1e-6)
    assert coverage_distance(X, X[[0]]) == pytest.approx(
        np.mean([0, 0.1, np.hypot(5, 5), np.hypot(10, 10)]), rel=1e-5
    )
    q = selection_quality(
        X, np.array([True, False, True, True]), classes=np.array([0, 0, 1, 2]),
        information=np.array([0.01, 0.5, 0.5, np.nan]), duplicate_radius=0.5, min_information=0.05,
    )  # fmt: skip
    assert (q.groups, q.classes_kept, q.residual_duplicates) == (3, 3, 0.0)
    assert q.low_information_share == pytest.approx(0.5)  # of the two with a score


def test_intervals_and_the_comparison_against_the_reference() -> None:
    iv = interval([0.5, 0.6, 0.7])
    assert iv["mean"] == pytest.approx(0.6)
    assert iv["half"] == pytest.approx(4.303 * 0.1 / math.sqrt(3), rel=1e-3)  # t(0.975, 2)
    assert math.isnan(interval([0.4])["half"])
    seg, cls = "segmentation:group:100", "classification:group:100"
    jobs = [{"arm": "random", "seed": s, seg: 0.30 + 0.01 * s, cls: 0.5} for s in range(3)]
    jobs += [{"arm": "ap", "seed": s, seg: 0.50 + 0.01 * s, cls: 0.5 + 0.1 * s} for s in range(3)]
    jobs += [{"arm": "kmeans", "seed": 0, seg: 0.9, cls: 0.9}]  # one seed: no interval
    jobs[0]["baselines"] = {"random": {seg: 0.11, cls: 0.2}}
    res = summarize(jobs, {}, {"kind": "corpora"}, focus="ap")
    assert [k for k, _ in res["columns"]] == [cls, seg]  # task order, whatever the job order
    assert res["versus"]["random"] == {seg: "better", cls: "overlap"}
    assert res["versus"]["kmeans"][seg] == "undetermined"
    md = markdown(res)
    assert "| ap | 0.600 ± 0.248 | 0.510 ± 0.025 |" in md
    assert "| *random weights, no pre-training (1 head set)* | 0.200 | 0.110 |" in md
    assert "| random | overlap | better |" in md


# -- model switches the ablations use --------------------------------------------------------
def test_geo_and_time_encodings_can_be_switched_off(tmp_path: Path) -> None:
    reader = open_corpus(write_synthetic_corpus(tmp_path / "c", n_groups=2))
    cfg = DataConfig(patch_px=8, max_image_px=32, split=None)
    batch: GroupBatch = collate_groups([load_group(reader, g, cfg) for g in range(2)])
    moved = GroupBatch(**{**batch.__dict__, "image_lonlat": batch.image_lonlat + 30.0,
                          "image_time": batch.image_time + 100.0})  # fmt: skip
    for geo, time, differs in ((True, True, True), (False, False, False)):
        torch.manual_seed(0)
        model = A2MAE(model_args("tiny", geo_encoding=geo, time_encoding=time)).eval()
        a, b = model.metadata(batch, 0.0), model.metadata(moved, 0.0)
        assert (not torch.allclose(a, b)) is differs


# -- the command end to end -------------------------------------------------------------------
@pytest.fixture(scope="module")
def curated_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    world = tiny_world(tmp_path_factory.getbasetemp() / "worlds")
    run_dir = tmp_path_factory.mktemp("experiment") / "run"
    with StacServer([world.out]) as server:
        cfg = demo_run_config(world, server.url, run_dir, PRESETS["tiny"])
        curate(cfg.model_copy(update={"dask": cfg.dask.model_copy(update={"workers": 1})}),
               echo=lambda s: None, until="dedup")  # fmt: skip
    yield run_dir


ARGS = ["--seeds", "1", "--steps", "2", "--batch", "2", "--max-image-px", "32",
        "--head-seeds", "1", "--eval-groups", "40"]  # fmt: skip


@pytest.mark.integration
def test_corpora_experiment_two_arms_resumes_and_reports(curated_run: Path) -> None:
    out = curated_run / "experiments" / "corpora"
    cmd = ["experiment", "corpora", "--run", str(curated_run), "--size", "8",
           "--arms", "ap,random", *ARGS]  # fmt: skip
    res = CliRunner().invoke(main, cmd)
    assert res.exit_code == 0, res.output
    results = json.loads((out / "results.json").read_text())
    assert results["arms"] == ["ap", "random"]
    assert [(j["arm"], j["seed"]) for j in results["jobs"]] == [("ap", 0), ("random", 0)]
    keys = [k for k, _ in results["columns"]]
    assert keys[:2] == ["classification:group:100", "segmentation:group:100"]
    for arm in ("ap", "random"):
        assert results["quality"][arm]["groups"] == 8
        for key in keys:
            assert results["scores"][arm][key]["n"] == 1
            assert 0 <= results["scores"][arm][key]["mean"] <= 1
    # the baselines are scored once, by the first job
    assert set(results["baselines"]) == {"random", "no-learning"}
    assert "baselines" in results["jobs"][0] and "baselines" not in results["jobs"][1]
    assert results["versus"]["random"][keys[0]] == "undetermined"  # one seed: no interval
    assert "| ap |" in (out / "results.md").read_text()
    for corpus in ("arms/ap", "arms/random-seed-0", "pool", "evalset"):
        assert (out / corpus / "corpus.zarr").is_dir(), corpus
    _assert_evalset_off_the_pool(curated_run, out)

    # a job lost to a kill is redone; the finished ones are not
    lost, kept = out / "jobs/random/seed-0", out / "jobs/ap/seed-0"
    (lost / "scores.json").unlink()
    kept_mtime = (kept / "scores.json").stat().st_mtime
    res = CliRunner().invoke(main, cmd)
    assert res.exit_code == 0, res.output
    assert "1 of 2 jobs already done" in res.output
    assert (lost / "scores.json").exists()
    assert (kept / "scores.json").stat().st_mtime == kept_mtime

    res = CliRunner().invoke(main, [*cmd, "--holdout", "0.4"])  # other settings, same --out
    assert res.exit_code != 0 and "score differ" in res.output

    html = write_report(curated_run).read_text()
    assert "Experiment: corpora compared" in html and "Curation quality (no training)" in html


def _assert_evalset_off_the_pool(run: Path, out: Path) -> None:
    """Every evaluation group is on held-out ground: none shares ground with a pool group."""
    import zarr

    from terracorpus.pipelines.experiment.corpora import kept_groups
    from terracorpus.pipelines.rundir import read_parquet

    groups = read_parquet(run / "groups.parquet").set_index("group_id")
    evaluation = [
        str(g) for g in zarr.open_group(str(out / "evalset/evalset.zarr"))["groups/group_id"][:]
    ]
    pool = kept_groups(out / "pool")
    held = set(json.loads((out / "source/held-out.json").read_text()))
    assert evaluation and pool and not held & set(pool)
    for g in evaluation:
        a = groups.geometry[g]
        shared = [p for p in pool if a.intersection(groups.geometry[p]).area > 0.01 * a.area]
        assert not shared, (g, shared)


def test_held_out_ground_is_whole_blocks_and_stable(curated_run: Path, tmp_path: Path) -> None:
    from terracorpus.pipelines.experiment.ground import held_out_groups, holdout_source
    from terracorpus.pipelines.rundir import read_parquet

    held = held_out_groups(curated_run, 0.3)
    assert held == held_out_groups(curated_run, 0.3)
    n = len(read_parquet(curated_run / "groups.parquet"))
    assert 0.3 * n <= len(held) < n
    source = holdout_source(curated_run, tmp_path / "source", 0.3)
    for name in ("groups.parquet", "chips.parquet"):
        ids = set(read_parquet(source / name)["group_id"].astype(str))
        assert ids and not ids & set(held), name
    assert len(read_parquet(source / "groups.parquet")) == n - len(held)
    with pytest.raises(StageError, match="--holdout must be in"):
        held_out_groups(curated_run, 1.0)


@pytest.mark.integration
def test_quality_only_compares_every_arm_without_corpora(curated_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "q"
    res = CliRunner().invoke(main, ["experiment", "corpora", "--run", str(curated_run), "--size",
                                    "8", "--quality-only", "--seeds", "3", "--out", str(out)])  # fmt: skip
    assert res.exit_code == 0, res.output
    q = json.loads((out / "results.json").read_text())["quality"]
    assert list(q) == ["ap", "random", "kmeans", "farthest", "all"]
    assert all(q[arm]["groups"] == 8 for arm in ("ap", "random", "kmeans", "farthest"))
    assert q["random"]["draws"] == 3 and q["all"]["coverage"] == pytest.approx(0.0, abs=1e-3)
    assert q["farthest"]["coverage"] < q["random"]["coverage"]  # what k-center optimises
    assert not list(out.rglob("corpus.zarr")) and not (out / "jobs").exists()
    assert "Curation quality (no training)" in res.output and "Downstream" not in res.output


@pytest.mark.integration
def test_ap_exemplars_arm_asks_ap_for_a_cluster_per_place(
    curated_run: Path, tmp_path: Path
) -> None:
    from terracorpus.pipelines.experiment.corpora import ap_overrides
    from terracorpus.pipelines.rundir import read_parquet

    assert ap_overrides("ap", curated_run, 8) == {"target_groups": 8}
    assert ap_overrides("ap-exemplars", curated_run, 8) == {"target_groups": 8, "n_clusters": 8}
    assert ap_overrides("ap-exemplars", curated_run, 5000)["n_clusters"] == 1000  # top_size
    out = tmp_path / "q"
    res = CliRunner().invoke(main, ["experiment", "corpora", "--run", str(curated_run), "--size",
                                    "8", "--quality-only", "--seeds", "1", "--out", str(out),
                                    "--arms", "ap,ap-exemplars"])  # fmt: skip
    assert res.exit_code == 0, res.output
    q = json.loads((out / "results.json").read_text())["quality"]
    assert list(q) == ["ap", "ap-exemplars"] and q["ap-exemplars"]["groups"] == 8

    def picks(arm: str) -> tuple[int, int]:
        t = read_parquet(out / "arms" / arm / "selection.parquet")
        anchors = t[t["role"] == "anchor"]
        kept = anchors[anchors["kept"]]
        return anchors.loc[anchors["cluster_id"] >= 0, "cluster_id"].nunique(), int(
            (kept["reason"] == "exemplar").sum()
        )

    (clusters, exemplars), (ap_clusters, ap_exemplars) = picks("ap-exemplars"), picks("ap")
    assert clusters >= ap_clusters and exemplars >= ap_exemplars
    assert exemplars >= 6  # about one cluster per place: nearly every pick an exemplar


@pytest.mark.slow
@pytest.mark.integration
def test_models_experiment_switches_reach_the_trainer(curated_run: Path, tmp_path: Path) -> None:
    cmd = ["experiment", "models", "--run", str(curated_run), "--out", str(tmp_path / "m"),
           "--variants", "anchor-only,no-geo", *ARGS]  # fmt: skip
    res = CliRunner().invoke(main, cmd)
    assert res.exit_code == 0, res.output
    config = (tmp_path / "m/jobs/no-geo/seed-0/train/config.yaml").read_text()
    assert "geo_encoding: false" in config
    encoder = json.loads((tmp_path / "m/jobs/no-geo/seed-0/train/encoder/encoder.json").read_text())
    assert encoder["model_args"]["geo_encoding"] is False
    assert (
        "anchor_only: true"
        in (tmp_path / "m/jobs/anchor-only/seed-0/train/config.yaml").read_text()
    )


def test_unknown_arm_is_one_clear_error(tmp_path: Path) -> None:
    res = CliRunner().invoke(
        main, ["experiment", "corpora", "--run", str(tmp_path), "--size", "3", "--arms", "ap,best"]
    )
    assert (
        res.exit_code == 2 and "best: choose from ap, random, kmeans, farthest, all" in res.output
    )


def test_a_second_experiment_on_the_same_directory_is_refused(tmp_path: Path) -> None:
    import fcntl

    for name in ("scenes.parquet", "groups.parquet", "chips.parquet"):
        (tmp_path / name).write_text("")  # looks like a run; the lock is checked first
    (tmp_path / "run-config.json").write_text('{"config": {}}')
    out = tmp_path / "exp"
    out.mkdir()
    with (out / ".lock").open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        res = CliRunner().invoke(
            main,
            ["experiment", "corpora", "--run", str(tmp_path), "--size", "3", "--out", str(out)],
        )
    assert res.exit_code == 2 and "another `terracorpus experiment` is running" in res.output


def test_a_run_directory_without_tables_is_one_clear_error(tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["experiment", "corpora", "--run", str(tmp_path), "--size", "3"])
    assert res.exit_code == 2 and "is not a curated run directory" in res.output
