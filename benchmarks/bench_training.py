"""Training benchmark: input-pipeline throughput and what pre-training buys a linear probe.

1. **input pipeline**: ``tiny`` A²-MAE training steps per second reading groups from the Zarr
   corpus through the DataLoader (2 worker processes) against the same steps on the very same
   batches held in memory (target: >= 0.9 of it). Both runs side by side, best of ``--repeat``.
2. **learning**: a ``tiny`` model pre-trained for a fixed CPU budget (``--minutes``) against the
   same model with random weights: linear-probe and kNN scores on the anchors' land-cover
   labels, split by the corpus's groups/split (target: pre-trained >= random + 10 macro-F1 points).
3. **curated vs random subset** (with ``--subset-corpus``): the same budget on a second corpus of
   the same size, probed on the first one's labels.

Without ``--corpus`` a synthetic labelled corpus is built with ``training.testing``; pass the
demo world's corpus to measure on it. CPU only (no GPU numbers: none was lent to this task).
The main process trains single-threaded (``torch.set_num_threads(1)``, both runs alike): on a
shared 2-core machine more threads thrash and make the numbers noise.

    .venv/bin/python benchmarks/bench_training.py [--quick] [--corpus PATH] [--minutes 3]
"""

from __future__ import annotations

import argparse
import math
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from terracorpus.training.config import parse_train_config
from terracorpus.training.corpus import CorpusReader, open_corpus
from terracorpus.training.data import DataConfig, GroupBatch, make_loader
from terracorpus.training.export import export_encoder, load_encoder
from terracorpus.training.model import A2MAE, model_args
from terracorpus.training.probe import ProbeResult, probe
from terracorpus.training.testing import LSLIKE, S2LIKE, CorpusSpec, write_synthetic_corpus
from terracorpus.training.trainer import train

PIPELINE_TARGET = 0.9
F1_TARGET = 0.10


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
        "batch_size": batch, "warmup_steps": max(1, steps // 10), "lr": 1e-3, "min_lr": 1e-5,
        "num_workers": 2, "log_every": max(1, steps // 10), "checkpoint_every": steps,
    })  # fmt: skip
    result = train(corpus, cfg, out / "run", overwrite=True, progress=False)
    print(f"  pre-trained {steps} steps on {corpus}: loss {result.losses[0]:.4f} -> "
          f"{sum(result.losses[-10:]) / len(result.losses[-10:]):.4f} (mean of last 10)")  # fmt: skip
    export_encoder(out / "run", out / "encoder", overwrite=True)
    return load_encoder(out / "encoder")


def _row(name: str, r: ProbeResult) -> str:
    return (f"  {name:<24} {r.linear_accuracy:8.3f} {r.linear_macro_f1:8.3f} "
            f"{r.knn_accuracy:8.3f} {r.knn_macro_f1:8.3f}")  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small corpus, short runs")
    ap.add_argument("--corpus", help="labelled corpus to use (default: build a synthetic one)")
    ap.add_argument("--subset-corpus", help="a second corpus (random subset) for section 3")
    ap.add_argument("--minutes", type=float, default=None, help="pre-training budget (CPU minutes)")
    ap.add_argument("--steps", type=int, default=None, help="pipeline steps per run")
    ap.add_argument("--repeat", type=int, default=None)
    ap.add_argument("--max-image-px", type=int, default=128)
    ap.add_argument("--patch-px", type=int, default=8)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--folds", type=int, default=None, help="probe by K-fold CV over groups")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    minutes = a.minutes if a.minutes is not None else (0.5 if a.quick else 3.0)
    steps, repeat = a.steps or (10 if a.quick else 30), a.repeat or (1 if a.quick else 2)
    work = Path(tempfile.mkdtemp(prefix="bench-training-"))
    try:
        corpus = (
            Path(a.corpus)
            if a.corpus
            else synthetic_corpus(work / "corpus", 96 if a.quick else 240)
        )
        reader = open_corpus(corpus)
        n_img = sum(s.n_images for s in reader.sensors.values())
        print(f"bench_training: corpus {corpus} ({len(reader.groups)} groups, {n_img} images, "
              f"sensors {', '.join(reader.sensors)}); tiny model, patch {a.patch_px} px, "
              f"max_image_px {a.max_image_px}, batch {a.batch}; CPU, 1 torch thread; no GPU lent")  # fmt: skip

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

        step_s = 1.0 / r["zarr_sps"]
        pre_steps = max(10, int(minutes * 60 / step_s))
        print(f"\n2. learning: pre-train budget {minutes:g} min ~ {pre_steps} steps, then probe")
        trained = pretrain(corpus, work / "main", pre_steps, a.batch, a.patch_px, a.max_image_px)
        torch.manual_seed(0)
        random_model = A2MAE(trained.args)
        kw = {"max_image_px": a.max_image_px, "num_workers": 2, "folds": a.folds}
        scores = {
            "random weights": probe(random_model, reader, **kw),
            "pre-trained": probe(trained, reader, **kw),
        }
        how = f"{a.folds}-fold CV over groups" if a.folds else "corpus split"
        print(f"  {'encoder':<24} {'lin acc':>8} {'lin F1':>8} {'kNN acc':>8} {'kNN F1':>8}   "
              f"({how}: {scores['pre-trained'].n_train} train / {scores['pre-trained'].n_val} "
              f"scored groups, {scores['pre-trained'].n_classes} classes)")  # fmt: skip
        for name, res in scores.items():
            print(_row(name, res))
        gain = scores["pre-trained"].linear_macro_f1 - scores["random weights"].linear_macro_f1
        print(
            f"  linear macro-F1 gain {100 * gain:+.1f} points   target >= +{100 * F1_TARGET:.0f}  {_mark(gain >= F1_TARGET)}"
        )

        print("\n3. curated corpus vs random subset of the same size")
        if a.subset_corpus:
            sub = pretrain(
                Path(a.subset_corpus),
                work / "subset",
                pre_steps,
                a.batch,
                a.patch_px,
                a.max_image_px,
            )
            res = probe(sub, reader, **kw)
            print(_row("subset-pre-trained", res))
            print(
                f"  curated - subset linear macro-F1: {100 * (scores['pre-trained'].linear_macro_f1 - res.linear_macro_f1):+.1f} points"
            )
        else:
            print("  not run: pass --subset-corpus (a corpus of a random subset of the same size)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
