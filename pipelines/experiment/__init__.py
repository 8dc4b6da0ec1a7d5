"""Does curation earn its place? The same pool curated several ways, pre-trained, scored.

``terracorpus experiment corpora`` (:func:`run_corpora_experiment`): from one curated run's
usable candidate groups (the pool), corpora of one size by affinity propagation (the run's own
dedup config at ``target_groups``), uniform random, hierarchical k-means with balanced
sampling, greedy farthest-point, and the whole pool (:mod:`.corpora`), and on request
``ap-exemplars`` (the run's dedup with ``n_clusters`` = the size: about one AP cluster per
place, so nearly every pick is an exemplar instead of quota fill); the curation quality
of each without training (:mod:`terracorpus.curation.metrics`); the same model pre-trained for
the same steps and batch on each, for several seeds, each job its own processes, scored on the
labelled pool (:mod:`.jobs`); a table with means and 95 % intervals (:mod:`.summary`).

``terracorpus experiment models`` (:func:`run_models_experiment`): the same machinery on one
corpus with model variants instead of corpora (mask policy, anchor-only, geographic and time
encodings off).

Everything lives in ``<run>/experiments/<name>/`` (or ``--out``): ``experiment.json`` (the
settings; a rerun with other settings is refused), ``pool/`` and ``arms/<arm>/`` (run
directories with their corpora), ``jobs/<arm>/seed-<s>/`` and ``results.json`` / ``.md``.
Rerunning the command after a kill skips every finished corpus and job.
"""

from __future__ import annotations

from typing import Any

ARMS = ("ap", "random", "kmeans", "farthest", "all", "ap-exemplars")
DEFAULT_ARMS = ARMS[:5]
STOCHASTIC = ("random", "kmeans")  # arms drawn anew for every seed
VARIANTS: dict[str, dict[str, Any]] = {  # model ablations: train-config overrides
    "complementary": {"mask_policy": "complementary"},
    "consistent": {"mask_policy": "consistent"},
    "independent": {"mask_policy": "independent"},
    "anchor-only": {"anchor_only": True},
    "no-geo": {"geo_encoding": False},
    "no-time": {"time_encoding": False},
}
