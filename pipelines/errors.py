"""Exceptions of ``terracorpus.pipelines``: one base class, specific subclasses."""

from __future__ import annotations


class PipelineError(Exception):
    """Base class of every error raised by ``terracorpus.pipelines``."""


class ConfigError(PipelineError):
    """A run config is invalid; the message names the key and its allowed values."""


class RunDirError(PipelineError):
    """A run directory is unusable: unwritable, or made with another config."""


class StageError(PipelineError):
    """A stage cannot run: a missing input artifact, an empty result, a strict-mode failure."""


class ClusterError(PipelineError):
    """The Dask cluster cannot be started or reached."""


class CorpusError(PipelineError):
    """A corpus is missing, incomplete, corrupt, or of an unknown format version."""


class AccessError(PipelineError):
    """Assets cannot be accessed: a token endpoint refused or was unreachable."""
