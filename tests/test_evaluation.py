"""Evaluation sets from the demo world's truth, and scoring encoders on them.

The set is built from a run's groups off the ground of a pre-training corpus, split by area;
``training`` reads it back (the format is written down on both sides, held together here).
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import shapely
import torch
import zarr
from click.testing import CliRunner
from describe_builders import trusted_access
from safetensors.torch import save_file

from terracorpus.catalogs.frames import scenes_to_frame
from terracorpus.catalogs.parse import scene_from_item
from terracorpus.catalogs.sensors import builtin_registry
from terracorpus.catalogs.world import read_truth
from terracorpus.catalogs.world.testing import tiny_world
from terracorpus.curation.groups import GroupParams, build_groups, groups_to_frame
from terracorpus.pipelines.cli import main
from terracorpus.pipelines.config import CorpusConfig, RunConfig
from terracorpus.pipelines.evaluation.build import EvalSetParams, build_evalset
from terracorpus.pipelines.evaluation.truth import EvalSetError, RasterTruth, WorldTruth
from terracorpus.pipelines.rundir import RunDir
from terracorpus.pipelines.stages.materialize import chip_id, run_materialize
from terracorpus.training.data import GroupSample, ImageSample
from terracorpus.training.errors import CheckpointError, EvaluationError
from terracorpus.training.evaluation import _too_few, evaluate_encoder, interval95
from terracorpus.training.evaluation_features import _sensor_slots
from terracorpus.training.evaluation_heads import (
    Sample,
    change_scores,
    confusion,
    fit_head,
    iou_scores,
    predict_proba,
)
from terracorpus.training.evaluation_set import open_evalset
from terracorpus.training.export import ENCODER_FORMAT, META, WEIGHTS
from terracorpus.training.model import A2MAE, model_args

N_PRETRAIN = 8


def _run(tmp_path_factory, world) -> RunDir:
    """A run directory holding every group of the tiny world; the first N_PRETRAIN kept."""
    reg = builtin_registry()
    items = sorted(Path(world.out, "items").rglob("*.json"))
    scenes = [scene_from_item(json.loads(p.read_text()), reg) for p in items]
    groups = build_groups(scenes, GroupParams(chip_size_m=480.0))
    selection = pd.DataFrame(
        [
            {"chip_id": chip_id(g.group_id, m.scene_id), "group_id": g.group_id,
             "cluster_id": 0, "is_exemplar": True, "kept": i < N_PRETRAIN, "reason": ""}
            for i, g in enumerate(groups)
            for m in g.members
        ]
    )  # fmt: skip
    scenes, access = trusted_access(scenes)
    run_dir = str(tmp_path_factory.mktemp("evrun"))
    cfg = RunConfig(run_dir=run_dir, corpus=CorpusConfig(shard_mb=2), **access)
    run = RunDir(cfg.run_dir, cfg)
    run.write_table("scenes.parquet", scenes_to_frame(scenes), stage="search")
    run.write_table("groups.parquet", groups_to_frame(groups), stage="group")
    run.write_table("selection.parquet", selection, stage="dedup")
    return run


@pytest.fixture(autouse=True)
def _one_thread():
    """Small heads on a shared 2-core machine: more threads only thrash."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[RunDir, Path, Path]:
    """(run with its pre-training corpus, world directory, evaluation set)."""
    world = tiny_world(tmp_path_factory.getbasetemp())
    run = _run(tmp_path_factory, world)
    run_materialize(run.config, run)
    out = tmp_path_factory.mktemp("evalset") / "set"
    build_evalset(run.root, out, WorldTruth(str(world.out)), exclude=[str(run.root)],
                  params=EvalSetParams(max_groups=24))  # fmt: skip
    return run, Path(world.out), out


def _export(model: A2MAE, out: Path, **meta: object) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.contiguous() for k, v in model.encoder_state_dict().items()}, str(out / WEIGHTS)
    )
    doc = {"format": ENCODER_FORMAT, "version": 1, "model_name": "tiny",
           "model_args": model.args_dict(), "step": 0, **meta}  # fmt: skip
    (out / META).write_text(json.dumps(doc))
    return out


def _footprints(root: zarr.Group) -> dict[str, object]:
    from pyproj import Transformer

    ids = np.asarray(root["groups/group_id"][:]).astype(object).astype(str)
    bounds = np.asarray(root["groups/bounds"][:])
    crs = np.asarray(root["groups/crs"][:]).astype(object).astype(str)
    out = {}
    for g, b, c in zip(ids, bounds, crs, strict=True):
        t = Transformer.from_crs(str(c), "EPSG:4326", always_xy=True)
        xs, ys = t.transform([b[0], b[2], b[2], b[0]], [b[1], b[1], b[3], b[3]])
        out[str(g)] = shapely.Polygon(zip(xs, ys, strict=True))
    return out


def _shared(a, b) -> bool:
    return a.intersection(b).area > 0.01 * min(a.area, b.area)


@pytest.mark.integration
def test_the_set_lies_off_the_pretraining_ground_and_splits_by_area(built):
    run, _, out = built
    es = open_evalset(out)
    pretrain = _footprints(zarr.open_group(run.root / "corpus.zarr", mode="r"))
    evalset = _footprints(zarr.open_group(out / "corpus.zarr", mode="r"))
    assert len(pretrain) == N_PRETRAIN and set(evalset).isdisjoint(pretrain)
    for fp in evalset.values():
        assert not any(_shared(fp, other) for other in pretrain.values())
    split = dict(zip(es.reader.groups.group_id[es.corpus_group].astype(str), es.split, strict=True))
    assert {"train", "val", "test"} <= set(split.values())
    for a, fa in evalset.items():
        for b, fb in evalset.items():
            if a < b and _shared(fa, fb):
                assert split[a] == split[b]  # no ground seen by two splits


@pytest.mark.integration
def test_class_maps_are_the_world_truth(built):
    _, world_dir, out = built
    es = open_evalset(out)
    root = zarr.open_group(out / "corpus.zarr", mode="r")
    for i in range(0, len(es), 7):
        row = es.corpus_group[i]
        b, crs = root["groups/bounds"][row], str(root["groups/crs"][row])
        truth = read_truth(world_dir, tuple(b), crs)
        known = truth[truth > 0]
        assert es.label[i] == np.bincount(known).argmax()
        assert es.truth[i].shape == (48, 48)  # 480 m at 10 m
        stored = es.truth[i][es.truth[i] > 0]
        assert set(np.unique(stored)) <= set(np.unique(known))


@pytest.mark.integration
def test_evaluate_scores_every_encoder_view_and_label_share(built, tmp_path):
    _, _, out = built
    torch.manual_seed(1)
    enc = _export(A2MAE(model_args("tiny")), tmp_path / "enc")
    report = evaluate_encoder(enc, out, tasks=("classification", "segmentation", "change"),
                              seeds=2, fractions=(0.34, 1.0), views=("group",),
                              pictures_dir=tmp_path / "pics")  # fmt: skip
    for task in ("classification", "segmentation"):
        rows = [r for r in report.rows if r.task == task]
        assert {(r.encoder, r.view, r.fraction) for r in rows} == {
            (e, v, f) for e in ("pre-trained", "random", "no-learning")
            for v in ("group",) for f in (0.34, 1.0)
        }  # fmt: skip
        for r in rows:
            assert 0 <= r.ci95[0] <= r.mean <= r.ci95[1] <= 1 and len(r.per_seed) == 2
        assert (tmp_path / "pics" / f"{task}.png").stat().st_size > 1000
    seg = [r for r in report.rows if r.task == "segmentation" and r.fraction == 1.0]
    assert all(r.details["per_class_iou"] for r in seg)
    # the raw spectra separate the world's classes: far above chance on every test pixel
    assert report.score("segmentation", "no-learning", view="group") > 0.2
    # the world spans several years: groups with one sensor's images of two years are pairs
    assert len(open_evalset(out).pairs) > 0
    change = [r for r in report.rows if r.task == "change"]
    if change:  # scored: F1 of changed pixels with a threshold chosen on val
        assert all(0 <= r.mean <= 1 and "threshold" in r.details for r in change)
    else:  # a split without pairs is said, not scored as zero
        assert "split" in report.skipped["change"]


@pytest.mark.integration
def test_cli_prints_the_table_and_writes_json(built, tmp_path):
    _, _, out = built
    enc = _export(A2MAE(model_args("tiny")), tmp_path / "enc")
    js = tmp_path / "scores.json"
    result = CliRunner().invoke(main, ["evaluate", "--encoder", str(enc), "--evalset", str(out),
                                       "--task", "segmentation", "--seeds", "2", "--fractions",
                                       "1", "--view", "anchor", "--json", str(js)])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "no-learning" in result.output and "random" in result.output
    doc = json.loads(js.read_text())
    assert len(doc["tasks"]["segmentation"]["rows"]) == 3
    assert Path(doc["pictures"]["segmentation"]).is_file()
    quiet = tmp_path / "quiet.json"  # the experiment's jobs score without pictures
    result = CliRunner().invoke(main, ["evaluate", "--encoder", str(enc), "--evalset", str(out),
                                       "--task", "classification", "--seeds", "1", "--view",
                                       "anchor", "--no-baselines", "--no-pictures", "--json",
                                       str(quiet)])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(quiet.read_text())["pictures"] == {}
    assert not (tmp_path / "quiet-pictures").exists()


@pytest.mark.integration
def test_bands_the_encoder_never_saw_are_refused(built, tmp_path):
    _, _, out = built
    enc = _export(A2MAE(model_args("tiny")), tmp_path / "enc", bands=[[0.665, 0.03]])
    result = CliRunner().invoke(main, ["evaluate", "--encoder", str(enc), "--evalset", str(out)])
    assert result.exit_code == 2
    assert "never saw" in result.output and "it saw [0.665] µm" in result.output
    # the experiment scores every arm on one set, whatever sensors its corpus held
    result = CliRunner().invoke(main, ["evaluate", "--encoder", str(enc), "--evalset", str(out),
                                       "--task", "classification", "--seeds", "1", "--view",
                                       "anchor", "--no-baselines", "--allow-unseen-bands"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "pre-trained" in result.output


def test_an_export_of_another_model_is_refused(tmp_path):
    enc = _export(A2MAE(model_args("tiny")), tmp_path / "enc")
    doc = json.loads((enc / META).read_text())
    doc["model_name"], doc["model_args"] = "other-vit", {"img_size": 224, "embed_dim": 768}
    (enc / META).write_text(json.dumps(doc))
    result = CliRunner().invoke(
        main, ["evaluate", "--encoder", str(enc), "--evalset", str(tmp_path)]
    )
    assert result.exit_code == 2 and "another model" in result.output
    (enc / META).write_text(json.dumps({"format": "timm", "model": "vit"}))
    with pytest.raises(CheckpointError, match="not a terracorpus encoder export"):
        evaluate_encoder(enc, tmp_path)


def test_a_directory_without_labels_is_not_an_evaluation_set(tmp_path):
    with pytest.raises(EvaluationError, match="evalset build"):
        open_evalset(tmp_path)


def test_truth_missing_for_a_year_is_named(tmp_path):
    truth = RasterTruth({2023: str(tmp_path / "2023.tif")}, {1: "water"})
    with pytest.raises(EvalSetError, match="no labels raster for 2024"):
        truth((0, 0, 10, 10), "EPSG:32631", 2024, (4, 4))
    world = tiny_world(tmp_path)
    years = WorldTruth(str(world.out)).years
    with pytest.raises(EvalSetError, match=f"no truth for {max(years) + 1}"):
        WorldTruth(str(world.out))((0, 0, 1, 1), "EPSG:32615", max(years) + 1, (2, 2))


def test_evalset_build_cli_needs_a_truth(tmp_path):
    result = CliRunner().invoke(main, ["evalset", "build", "--run", str(tmp_path), "--out",
                                       str(tmp_path / "o")])  # fmt: skip
    assert result.exit_code == 2 and "--world" in result.output


# -- heads and metrics, without files ----------------------------------------------------------
def _blobs(n: int, rng: np.random.Generator) -> list[Sample]:
    """Feature grids whose channel k is high where the (upsampled) class is k."""
    out = []
    for _ in range(n):
        cls = rng.integers(1, 4, size=(4, 4))
        feats = np.stack([(cls == k).astype(np.float32) for k in range(4)]) + rng.normal(
            0, 0.1, (4, 4, 4)
        ).astype(np.float32)
        target = np.kron(cls, np.ones((4, 4), dtype=np.int64))  # 16 x 16 pixels
        out.append(Sample(feats, target))
    return out


def test_a_linear_head_upsampled_to_pixels_learns_a_separable_map():
    rng = np.random.default_rng(0)
    train, test = _blobs(30, rng), _blobs(10, rng)
    head = fit_head(train, 4, weight_decay=1e-4, seed=0)
    truth = np.concatenate([s.target.ravel() for s in test])
    pred = np.concatenate([p.argmax(0).ravel() for p in predict_proba(head, test)])
    miou, per_class = iou_scores(confusion(truth, pred, 4))
    assert miou > 0.7 and set(per_class) == {1, 2, 3}  # bilinear edges cost a little


def test_metrics_on_a_known_confusion():
    cm = confusion(np.array([0, 0, 1, 1, -1]), np.array([0, 1, 1, 1, 0]), 2)
    assert cm.tolist() == [[1, 1], [0, 2]]  # the unknown pixel is not counted
    s = change_scores(cm)
    assert s["precision"] == pytest.approx(2 / 3) and s["recall"] == 1.0
    assert s["f1"] == pytest.approx(0.8)
    miou, per = iou_scores(cm)
    assert per == {0: 0.5, 1: pytest.approx(2 / 3)} and miou == pytest.approx(7 / 12)
    lo, hi = interval95([0.5, 0.6, 0.7])
    assert lo < 0.6 < hi and interval95([0.4]) == (0.4, 0.4)


def test_change_with_too_few_changed_pairs_is_unscorable_with_the_counts():
    maps = np.zeros((8, 4, 4), np.uint8)
    maps[:, 0, 0] = 255  # unknown
    maps[[0, 1, 4, 6], 1, 1] = 1  # changed: train 2 pairs, val 1, test 1
    maps[0, 2, :] = 1

    class Pairs:
        change = maps

        def __len__(self) -> int:
            return len(maps)

    es = SimpleNamespace(pairs=Pairs())
    splits = {"train": np.arange(4), "val": np.array([4, 5]), "test": np.array([6, 7])}
    why = _too_few("change", es, splits)  # type: ignore[arg-type]
    assert why.startswith("unscorable")
    assert "train 2 of 4 pairs, 6 of 60 known pixels" in why
    assert "val 1 of 2 pairs, 1 of 30 known pixels" in why and "every split" in why
    maps[5, 3, 3] = maps[7, 3, 3] = 1  # a second changed pair in val and in test
    assert _too_few("change", es, splits) == ""  # type: ignore[arg-type]


def test_the_report_shows_each_tasks_scores_and_picture(tmp_path):
    import matplotlib.pyplot as plt

    from terracorpus.pipelines.report_training import training_sections

    pictures = tmp_path / "evaluation-pictures"
    pictures.mkdir()
    fig = plt.figure(figsize=(1, 1))
    fig.savefig(pictures / "segmentation.png")
    plt.close(fig)
    row = {"encoder": "no-learning", "view": "group", "fraction": 1.0, "mean": 0.412,
           "ci95": [0.4, 0.424]}  # fmt: skip
    doc = {"tasks": {"segmentation": {"metric": "miou", "rows": [row]}},
           "skipped": {"change": "no change pairs"}}  # fmt: skip
    (tmp_path / "evaluation.json").write_text(json.dumps(doc))
    sections = dict(training_sections(tmp_path, lambda fig: ""))
    body = sections["Downstream tasks: classification, segmentation, change detection"]
    assert "0.412" in body and "[0.400, 0.424]" in body and "data:image/png" in body
    assert "change: skipped (no change pairs)" in body


def _image(
    sensor: str, grid: tuple[int, int], gsd: float, origin: tuple[float, float]
) -> ImageSample:
    h, w = grid
    return ImageSample(
        sensor=sensor, pixels=torch.zeros(1, h, w), valid=torch.ones(h, w, dtype=torch.bool),
        wavelengths=torch.ones(1), bandwidths=torch.zeros(1), gsd=gsd, origin_m=origin,
        transform=(gsd, 0.0, origin[0], 0.0, -gsd, -origin[1]), lonlat=(0.0, 0.0),
        doy_year=(1.0, 2023.0), is_anchor=origin == (0.0, 0.0) and sensor == "first",
        visible=torch.ones(h * w, dtype=torch.bool), grid=grid,
    )  # fmt: skip


def test_sensor_slots_pool_each_sensors_tokens_onto_the_first_images_patches():
    # first image: 2 x 2 patches of 10 m; two s2 dates of one 20 m patch over all of it; one l8
    # patch of 10 m over the top-right patch only. Tokens (L, D=2) in image order.
    images = [_image("first", (2, 2), 10.0, (0.0, 0.0)), _image("s2", (1, 1), 20.0, (0.0, 0.0)),
              _image("s2", (1, 1), 20.0, (0.0, 0.0)), _image("l8", (1, 1), 10.0, (10.0, 0.0))]  # fmt: skip
    tokens = np.array([[9, 9]] * 4 + [[1, 2], [3, 6], [5, 7]], dtype=np.float32)
    slots = _sensor_slots(GroupSample(0, "g", images), tokens, ("l8", "naip", "s2"), 1)
    assert slots.shape == (3 * 2 * 2, 2, 2)  # sensors x (mean, std) x D, on the 2 x 2 grid
    l8_mean, l8_std, naip, s2_mean, s2_std = (
        slots[0:2],
        slots[2:4],
        slots[4:8],
        slots[8:10],
        slots[10:12],
    )
    assert np.allclose(s2_mean, np.array([2, 4])[:, None, None])  # both dates, every patch
    assert np.allclose(s2_std, np.array([1, 2])[:, None, None])  # their spread over dates
    assert np.allclose(l8_mean[:, 0, 1], [5, 7]) and np.allclose(l8_std, 0)
    assert np.allclose(l8_mean[:, 0, 0], 0) and np.allclose(l8_mean[:, 1, :], 0)  # not covered
    assert np.allclose(naip, 0)  # a sensor the group lacks: zeros
    assert not np.isin(9, slots)  # the first image's own tokens are not pooled again
