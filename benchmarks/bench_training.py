"""Training benchmark: input-pipeline throughput and what pre-training buys a linear probe.

1. **input pipeline**: ``tiny`` A²-MAE training steps per second reading groups from the Zarr
   corpus through the DataLoader (2 worker processes) against the same steps on the very same
   batches held in memory (target: >= 0.9 of it). Both runs side by side, best of ``--repeat``.
2. **learning**: a ``tiny`` model pre-trained for a fixed number of steps against the same model
   with random weights: linear-probe and kNN scores on the anchors' land-cover labels of the
   probe corpus (target: pre-trained >= random + 10 macro-F1 points).
3. **curated vs random subset**: the same steps on a corpus of a random subset of the same
   size, probed on the same labels (reported whichever wins).

Each probe is reported with all labels (K-fold) and with few: ``SHOTS`` labelled groups per
class, the regime a pre-trained encoder is for (``training.probe.few_label_scores``).

``--demo-run RUN`` measures on a curated demo run directory (``terracorpus demo`` writes one
to ``OUT/run``): its corpus is the curated one; the benchmark builds, with the real
``dedup``/``materialize`` commands, a **probe corpus** of every usable group of the run
(quota ``all``, duplicate radius 0: only the quality rules drop) and a **random subset** of
that corpus as large as the curated one. Probes are stratified 5-fold cross-validations over
the probe corpus's groups, averaged over 3 fold seeds. Without ``--demo-run`` or ``--corpus``
a synthetic labelled corpus is built with ``training.testing``.

CPU only. The main process trains single-threaded (``torch.set_num_threads(1)``, both runs
alike): on a shared 2-core machine more threads thrash and make the numbers noise.

    .venv/bin/python benchmarks/bench_training.py [--quick] [--corpus PATH]
    .venv/bin/python benchmarks/bench_training.py --demo-run demo-run/run --max-image-px 64
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import yaml

from terracorpus.training.config import parse_train_config
from terracorpus.training.corpus import CorpusReader, open_corpus
from terracorpus.training.data import DataConfig, GroupBatch, make_loader
from terracorpus.training.export import export_encoder, load_encoder
from terracorpus.training.model import A2MAE, model_args
from terracorpus.training.probe import (
    anchor_labels,
    extract_features,
    few_label_scores,
    fit_probes,
)
from terracorpus.training.testing import LSLIKE, S2LIKE, CorpusSpec, write_synthetic_corpus
from terracorpus.training.trainer import train

PIPELINE_TARGET = 0.9
F1_TARGET = 0.10
SHOTS = 10  # labelled groups per class of the few-label probe


def _mark(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def synthetic_corpus(path: Path, n_groups: int) -> Path:
    spec = CorpusSpec(
        n_groups=n_groups, footprint_m=480.0, sensors=(S2LIKE, LSLIKE),
        members={"s2like": 2, "lslike": 2}, images_per_shard=16, n_classes=5, val_fraction=0.3,
    )  # fmt: skip
    return write_synthetic_corpus(path, spec)


# -- 1. input pipeline ------------------------------------------------------------------------
def _train_steps(model: A2MAE, opt: torch.optim.Optimizer, batches: Any, steps: int) -> float:
    """Seconds for ``steps`` optimizer steps drawing batches from the iterator ``batches``."""
    t = time.perf_counter()
    for _ in range(steps):
        out = model(next(batches), 0.1)
        opt.zero_grad(set_to_none=True)
        out["loss"].backward()
        opt.step()
    return time.perf_counter() - t


def _recording(source: Any, kept: list[GroupBatch]) -> Any:
    """Pass batches through, keeping each for the in-memory replay."""
    while True:
        batch = next(source)
        kept.append(batch)
        yield batch


def _fresh_model(args: Any) -> tuple[A2MAE, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = A2MAE(args).train()
    return model, torch.optim.AdamW(model.parameters(), lr=1e-4)


def bench_pipeline(
    reader: CorpusReader, cfg: DataConfig, steps: int, batch: int, repeat: int
) -> dict[str, float]:
    args = model_args("tiny", patch_px=cfg.patch_px)
    t_zarr, t_mem, t_read = math.inf, math.inf, math.inf
    for _ in range(repeat):
        loader = make_loader(reader, cfg, batch_size=batch, num_workers=2)
        it = iter(loader)
        model, opt = _fresh_model(args)
        _train_steps(model, opt, it, 2)  # workers started and warm
        kept: list[GroupBatch] = []

        t_zarr = min(t_zarr, _train_steps(model, opt, _recording(it, kept), steps))
        t = time.perf_counter()
        for _ in range(steps):
            next(it)
        t_read = min(t_read, time.perf_counter() - t)
        del it, loader
        model, opt = _fresh_model(args)
        _train_steps(model, opt, iter(kept[:2]), 2)  # same warm-up
        t_mem = min(t_mem, _train_steps(model, opt, iter(kept), steps))
    return {"zarr_sps": steps / t_zarr, "mem_sps": steps / t_mem, "read_bps": steps / t_read}


# -- 2./3. learning ---------------------------------------------------------------------------
def pretrain(corpus: Path, out: Path, steps: int, batch: int, patch_px: int, max_px: int) -> A2MAE:
    cfg = parse_train_config({
        "model": "tiny", "patch_px": patch_px, "max_image_px": max_px, "steps": steps,
        "batch_size": batch, "warmup_steps": max(1, steps // 10), "num_workers": 2,
        "log_every": max(1, steps // 10), "checkpoint_every": steps,
    })  # fmt: skip
    t = time.perf_counter()
    result = train(corpus, cfg, out / "run", overwrite=True, progress=False)
    print(f"  pre-trained {steps} steps on {corpus} in {time.perf_counter() - t:.0f} s: loss "
          f"{result.losses[0]:.4f} -> {np.mean(result.losses[-10:]):.4f} (mean of last 10)")  # fmt: skip
    export_encoder(out / "run", out / "encoder", overwrite=True)
    return load_encoder(out / "encoder")


def probe_scores(
    model: A2MAE, reader: CorpusReader, max_px: int, folds: int | None, seeds: int
) -> dict[str, float]:
    """Linear and kNN scores of ``model``'s anchor features, averaged over ``seeds`` fold seeds
    (the corpus split when ``folds`` is None)."""
    feats = extract_features(model, reader, max_image_px=max_px, num_workers=2)
    labels = anchor_labels(reader)
    runs = [
        fit_probes(feats, labels, reader.groups.split, folds=folds, seed=seed).as_dict()
        for seed in range(seeds if folds else 1)
    ]
    out = {key: float(np.mean([r[key] for r in runs])) for key in runs[0]}
    few = few_label_scores(feats, labels, shots=SHOTS, repeats=10)
    out["few_linear_macro_f1"] = few.linear_macro_f1
    return out


def _row(name: str, r: dict[str, float]) -> str:
    return (f"  {name:<28} {r['linear_accuracy']:8.3f} {r['linear_macro_f1']:8.3f} "
            f"{r['knn_accuracy']:8.3f} {r['knn_macro_f1']:8.3f} {r['few_linear_macro_f1']:10.3f}")  # fmt: skip


# -- the demo run's probe corpus and random subset ----------------------------------------------
def _terracorpus(*args: str) -> None:
    cmd = [sys.executable, "-m", "terracorpus.pipelines.cli", *args]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"`terracorpus {' '.join(args)}` failed:\n{done.stdout}{done.stderr}")


def _copy_run(run: Path, out: Path, dedup: dict[str, Any]) -> Path:
    """A run directory at ``out`` with ``run``'s scenes, groups and chips and a config whose
    dedup section is updated with ``dedup``; returns the config file."""
    out.mkdir(parents=True)
    for name in ("scenes.parquet", "groups.parquet", "chips.parquet"):
        shutil.copy(run / name, out / name)
    config = json.loads((run / "run-config.json").read_text())["config"]
    config["run_dir"] = str(out)
    config["dedup"] = {**config.get("dedup", {}), **dedup}
    path = out.parent / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def demo_corpora(run: Path, work: Path, seed: int = 0) -> tuple[Path, Path]:
    """(probe corpus, random subset corpus) built from the curated demo run ``run``."""
    probe_run = work / "probe-corpus"
    config = _copy_run(run, probe_run, {"quota": "all", "duplicate_radius": 0.0})
    t = time.perf_counter()
    _terracorpus("dedup", "--run-dir", str(probe_run), "--config", str(config), "--allow-mixed")
    _terracorpus("materialize", "--run-dir", str(probe_run), "--config", str(config), "--allow-mixed")  # fmt: skip
    print(f"  probe corpus: every usable group of {run} -> {probe_run} ({time.perf_counter() - t:.0f} s)")  # fmt: skip

    n_curated = len(open_corpus(run).groups)
    subset_run = work / "random-subset"
    config = _copy_run(run, subset_run, {})
    table = pq.read_table(probe_run / "selection.parquet")
    selection = table.to_pandas()
    usable = np.array(sorted(selection.loc[selection["kept"], "group_id"].unique()))
    rng = np.random.default_rng(seed)
    chosen = set(rng.choice(usable, size=min(n_curated, len(usable)), replace=False))
    out = selection["kept"] & selection["group_id"].isin(chosen)
    selection["reason"] = np.where(
        selection["kept"] & ~out, "not_in_random_subset", selection["reason"]
    )
    selection["kept"] = out
    subset = pa_table(selection, table)
    pq.write_table(subset, subset_run / "selection.parquet")
    _terracorpus("materialize", "--run-dir", str(subset_run), "--config", str(config), "--allow-mixed")  # fmt: skip
    print(f"  random subset: {len(chosen)} of the {len(usable)} usable groups (seed {seed}) -> {subset_run}")  # fmt: skip
    return probe_run, subset_run


def pa_table(frame: pd.DataFrame, like: pa.Table) -> pa.Table:
    """``frame`` as an Arrow table with the schema (and run metadata) of ``like``."""
    return pa.Table.from_pandas(frame, schema=like.schema, preserve_index=False)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small corpus, short runs")
    ap.add_argument("--demo-run", help="a curated demo run directory (see the module docstring)")
    ap.add_argument("--corpus", help="labelled corpus to pre-train on (default: a synthetic one)")
    ap.add_argument("--probe-corpus", help="labelled corpus to probe on (default: --corpus)")
    ap.add_argument("--subset-corpus", help="a second corpus (random subset) for section 3")
    ap.add_argument("--pretrain-steps", type=int, default=None, help="pre-training steps (2000)")
    ap.add_argument("--steps", type=int, default=None, help="pipeline steps per run")
    ap.add_argument("--repeat", type=int, default=None)
    ap.add_argument("--max-image-px", type=int, default=128)
    ap.add_argument("--patch-px", type=int, default=8)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--folds", type=int, default=None, help="probe by K-fold CV over groups")
    ap.add_argument("--seeds", type=int, default=3, help="fold seeds averaged with --folds")
    ap.add_argument("--skip-pipeline", action="store_true", help="skip section 1")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    pre_steps = a.pretrain_steps or (60 if a.quick else 2000)
    steps, repeat = a.steps or (10 if a.quick else 30), a.repeat or (1 if a.quick else 2)
    work = Path(tempfile.mkdtemp(prefix="bench-training-"))
    try:
        subset_corpus = Path(a.subset_corpus) if a.subset_corpus else None
        if a.demo_run:
            corpus, folds = Path(a.demo_run), a.folds or 5
            print(f"bench_training: building the probe corpus and random subset of {corpus}")
            probe_corpus, subset_corpus = demo_corpora(corpus, work)
        else:
            corpus = (
                Path(a.corpus)
                if a.corpus
                else synthetic_corpus(work / "corpus", 96 if a.quick else 240)
            )
            probe_corpus, folds = Path(a.probe_corpus or corpus), a.folds
        reader = open_corpus(corpus)
        n_img = sum(s.n_images for s in reader.sensors.values())
        print(f"bench_training: corpus {corpus} ({len(reader.groups)} groups, {n_img} images, "
              f"sensors {', '.join(reader.sensors)}); tiny model, patch {a.patch_px} px, "
              f"max_image_px {a.max_image_px}, batch {a.batch}; CPU, 1 torch thread")  # fmt: skip

        if not a.skip_pipeline:
            cfg = DataConfig(patch_px=a.patch_px, max_image_px=a.max_image_px, split=None)
            r = bench_pipeline(reader, cfg, steps, a.batch, repeat)
            ratio = r["zarr_sps"] / r["mem_sps"]
            print(f"\n1. input pipeline ({steps} steps, best of {repeat})        steps/s")
            print(f"  in memory (same batches)                  {r['mem_sps']:8.3f}")
            print(f"  Zarr corpus, DataLoader 2 workers         {r['zarr_sps']:8.3f}")
            print(f"  loader alone (no model), batches/s        {r['read_bps']:8.3f}")
            print(
                f"  ratio zarr/memory                         {ratio:8.3f}   target >= {PIPELINE_TARGET}  {_mark(ratio >= PIPELINE_TARGET)}"
            )

        probe_reader = open_corpus(probe_corpus)
        labels = anchor_labels(probe_reader)
        how = (
            f"{folds}-fold CV over groups, mean of {a.seeds} fold seeds"
            if folds
            else "corpus split"
        )
        print(f"\n2. learning: pre-train {pre_steps} steps, then probe on {probe_corpus} "
              f"({int((labels >= 0).sum())} labelled anchors, {len(set(labels[labels >= 0]))} "
              f"classes; {how})")  # fmt: skip
        trained = pretrain(corpus, work / "main", pre_steps, a.batch, a.patch_px, a.max_image_px)
        torch.manual_seed(0)
        random_model = A2MAE(trained.args)

        def score(model: A2MAE) -> dict[str, float]:
            return probe_scores(model, probe_reader, a.max_image_px, folds, a.seeds)

        scores = {"random weights": score(random_model), "pre-trained (curated)": score(trained)}
        print(f"  {'encoder':<28} {'lin acc':>8} {'lin F1':>8} {'kNN acc':>8} {'kNN F1':>8} "
              f"{f'{SHOTS}-shot F1':>10}")  # fmt: skip
        for name, res in scores.items():
            print(_row(name, res))
        gain = scores["pre-trained (curated)"]["linear_macro_f1"] - scores["random weights"]["linear_macro_f1"]  # fmt: skip
        print(
            f"  linear macro-F1 gain {100 * gain:+.1f} points   target >= +{100 * F1_TARGET:.0f}  {_mark(gain >= F1_TARGET)}"
        )
        few_gain = scores["pre-trained (curated)"]["few_linear_macro_f1"] - scores["random weights"]["few_linear_macro_f1"]  # fmt: skip
        print(f"  {SHOTS}-shot linear macro-F1 gain {100 * few_gain:+.1f} points (probes trained on "
              f"{SHOTS} groups per class, scored on the rest, mean of 10 draws)")  # fmt: skip

        print("\n3. curated corpus vs random subset of the same size")
        if subset_corpus is not None:
            sub = pretrain(subset_corpus, work / "subset", pre_steps, a.batch, a.patch_px, a.max_image_px)  # fmt: skip
            res = score(sub)
            print(_row("pre-trained (random subset)", res))
            for key, what in (
                ("linear_macro_f1", "linear macro-F1"),
                ("few_linear_macro_f1", f"{SHOTS}-shot linear macro-F1"),
            ):
                diff = scores["pre-trained (curated)"][key] - res[key]
                print(f"  curated - random subset, {what}: {100 * diff:+.1f} points")
        else:
            print(
                "  not run: pass --demo-run, or --subset-corpus (a random subset of the same size)"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
