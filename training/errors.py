"""Exceptions of ``terracorpus.training``: one base class, specific subclasses.

The training commands print ``error: <message>`` and exit 2 for any of these.
"""

from __future__ import annotations


class TrainingError(Exception):
    """Base class of every error raised by ``terracorpus.training``."""


class CorpusFormatError(TrainingError):
    """A corpus is missing, incomplete, empty, or of a format version this reader does not know."""


class CorpusReadError(TrainingError):
    """A shard of the corpus is missing or corrupt; the message names the shard and the image."""


class TrainConfigError(TrainingError):
    """A training config is invalid; the message names the key."""


class CheckpointError(TrainingError):
    """A checkpoint or exported encoder cannot be used: missing, another model size, or unsafe."""


class RunDirError(TrainingError):
    """An output directory holds an earlier run and neither --resume nor --overwrite was given."""


class ProbeError(TrainingError):
    """A probe cannot run: no labels, or too few labelled groups in a split."""


class EvaluationError(TrainingError):
    """An evaluation cannot run: no or a damaged evaluation set, bands the encoder never saw,
    too few labelled samples in a split."""
