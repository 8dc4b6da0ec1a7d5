"""The corpus: a sharded Zarr v3 store of kept groups, its manifest and STAC collection.

Layout and names are in ``docs/corpus-format.md`` (and :mod:`.format`); :func:`write_corpus`
writes one, :func:`validate_corpus` checks one, :func:`corpus_info` describes one.
"""

from terracorpus.pipelines.corpus.info import corpus_info, picture_grid
from terracorpus.pipelines.corpus.location import CorpusLocation
from terracorpus.pipelines.corpus.memory import MemoryImage, MemoryReader, write_arrays
from terracorpus.pipelines.corpus.plan import (
    CorpusPlan,
    GroupSpec,
    ImageSpec,
    SensorLayout,
    ShardSpec,
    plan_corpus,
)
from terracorpus.pipelines.corpus.validate import ValidationReport, validate_corpus
from terracorpus.pipelines.corpus.writer import Provenance, WriteSummary, write_corpus

__all__ = [
    "CorpusLocation",
    "CorpusPlan",
    "GroupSpec",
    "ImageSpec",
    "MemoryImage",
    "MemoryReader",
    "Provenance",
    "SensorLayout",
    "ShardSpec",
    "ValidationReport",
    "WriteSummary",
    "corpus_info",
    "picture_grid",
    "plan_corpus",
    "validate_corpus",
    "write_arrays",
    "write_corpus",
]
