"""Settings declared once: curation's records are the config sections, one set of bounds."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from terracorpus.curation.ap import APParams
from terracorpus.curation.errors import ClusteringError, GroupingError
from terracorpus.curation.groups import GroupParams
from terracorpus.curation.params import bounds_text, project
from terracorpus.curation.selection import SelectionPolicy
from terracorpus.pipelines.config import DedupConfig, GroupConfig, RunConfig, parse_config
from terracorpus.pipelines.configdoc import example_config
from terracorpus.pipelines.errors import ConfigError

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_config_sections_are_curations_records() -> None:
    cfg = RunConfig()
    assert isinstance(cfg.group, GroupParams)
    assert isinstance(cfg.dedup, APParams) and isinstance(cfg.dedup, SelectionPolicy)
    # the stage's copies are the records' own defaults, not restated ones
    assert project(cfg.group, GroupParams) == GroupParams()
    assert cfg.dedup.ap == APParams() and cfg.dedup.policy == SelectionPolicy()
    assert type(cfg.dedup.ap) is APParams and type(cfg.dedup.policy) is SelectionPolicy


def test_a_config_value_reaches_curation_typed() -> None:
    cfg = parse_config(
        {
            "group": {"chip_size_m": 480, "min_sensors": 1},
            "dedup": {"retry_dampings": [0.9], "partitioning": "random", "quota": "log"},
        }
    )
    assert project(cfg.group, GroupParams) == GroupParams(chip_size_m=480.0, min_sensors=1)
    assert cfg.dedup.ap.retry_dampings == (0.9,)  # a tuple on both sides
    assert cfg.dedup.ap.partitioning == "random" and cfg.dedup.policy.quota == "log"


def test_only_stage_settings_are_declared_in_pipelines() -> None:
    curation = {f.name for c in (APParams, SelectionPolicy) for f in dataclasses.fields(c)}
    own = {f.name for f in dataclasses.fields(DedupConfig)} - curation
    assert own == {"partition_tile_degrees", "dask_min_chips", "descriptor_weights"}
    assert {f.name for f in dataclasses.fields(GroupConfig)} == {
        f.name for f in dataclasses.fields(GroupParams)
    }


@pytest.mark.parametrize(
    ("section", "key", "value", "bounds"),
    [
        ("dedup", "preference_quantile", 1.5, "in [0, 1]"),
        ("dedup", "damping", 1.0, "in [0.5, 1)"),
        ("dedup", "partition_size", 10, ">= 50"),
        ("dedup", "preference", 0.5, "< 0"),
        ("dedup", "max_cloud", 2.0, "in [0, 1]"),
        ("dedup", "target_groups", 0, ">= 1"),
        ("group", "min_coverage", 0.0, "in (0, 1]"),
        ("group", "max_cloud_cover", 101, "in [0, 100]"),
    ],
)
def test_one_bound_checked_at_the_config_and_in_code(
    section: str, key: str, value: float, bounds: str
) -> None:
    with pytest.raises(ConfigError) as e:
        parse_config({section: {key: value}}, "run.yaml")
    assert f"{section}.{key}: must be {bounds}, got {value!r}" in str(e.value)
    record = {"group": GroupParams, "dedup": APParams}[section]
    if key not in {f.name for f in dataclasses.fields(record)}:
        record = SelectionPolicy
    error = GroupingError if section == "group" else ClusteringError
    with pytest.raises(error, match=re.escape(f"{key} must be {bounds}")):
        record(**{key: value})


def test_choices_and_cross_field_rules_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"dedup\.quota: Input should be 'sqrt'"):
        parse_config({"dedup": {"quota": "most"}})
    with pytest.raises(ConfigError, match=r"dedup: .*preference or n_clusters, not both"):
        parse_config({"dedup": {"preference": -1.0, "n_clusters": 5}})
    with pytest.raises(
        ConfigError, match=r"dedup\.bogus: unknown key; allowed keys here: .*damping"
    ):
        parse_config({"dedup": {"bogus": 1}})


def test_bounds_text() -> None:
    assert bounds_text({"ge": 0, "le": 1}) == "in [0, 1]"
    assert bounds_text({"gt": 0, "le": 1}) == "in (0, 1]"
    assert bounds_text({"ge": 0.5, "lt": 1}) == "in [0.5, 1)"
    assert bounds_text({"ge": 50}) == ">= 50"
    assert bounds_text({"lt": 0}) == "< 0"
    assert bounds_text({}) == ""


def test_every_key_documented_once_in_config_init_and_the_dedup_docs() -> None:
    text = example_config()
    dedup_docs = (DOCS / "curation.md").read_text().split("## Knobs")[1]
    for f in dataclasses.fields(DedupConfig):
        assert re.search(rf"^  {f.name}: .*  # \S", text, re.M), f.name  # with a description
        assert re.search(rf"\b{f.name}\b", dedup_docs), f"{f.name} missing from docs/curation.md"
    for f in dataclasses.fields(GroupConfig):
        assert re.search(rf"^  {f.name}: .*  # \S", text, re.M), f.name
