"""Evaluation sets: labelled groups from a truth source, on ground the pre-training corpus does
not hold (:func:`~terracorpus.pipelines.evaluation.build.build_evalset`). Scoring an encoder on
them is ``terracorpus.training.evaluation``."""
