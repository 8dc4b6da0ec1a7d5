"""Exceptions of ``terracorpus.curation``: one base class, specific subclasses."""

from __future__ import annotations


class CurationError(Exception):
    """Base class of every error raised by ``terracorpus.curation``."""


class GroupingError(CurationError):
    """Image groups cannot be built from the given scenes and rules."""


class DescriptorError(CurationError):
    """A chip's arrays cannot be described (wrong shapes, no valid pixels, ...)."""


class ClusteringError(CurationError):
    """Affinity propagation or the selection policy cannot run on the given descriptors."""
