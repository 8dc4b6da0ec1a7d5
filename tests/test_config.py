"""The run config: one validation boundary with messages that point at the bad key."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from terracorpus.pipelines.cli import main
from terracorpus.pipelines.config import RunConfig, load_config, parse_config
from terracorpus.pipelines.configdoc import example_config
from terracorpus.pipelines.errors import ConfigError


def test_unknown_key_is_named_with_the_allowed_keys() -> None:
    with pytest.raises(ConfigError) as e:
        parse_config({"group": {"chip_sise_m": 100}}, "run.yaml")
    msg = str(e.value)
    assert "group.chip_sise_m: unknown key" in msg
    assert "chip_size_m" in msg  # the allowed keys are listed


def test_wrong_type_names_key_and_problem() -> None:
    with pytest.raises(ConfigError, match=r"dedup\.damping"):
        parse_config({"dedup": {"damping": "high"}})
    with pytest.raises(ConfigError, match=r"search\.max_cloud_cover"):
        parse_config({"search": {"max_cloud_cover": 120}})


def test_example_config_is_valid_and_lists_every_section(tmp_path: Path) -> None:
    text = example_config()
    cfg = parse_config(yaml.safe_load(text))
    assert cfg == RunConfig()
    for section in RunConfig.model_fields:
        assert f"\n{section}:" in "\n" + text


def test_yaml_and_toml_load_the_same(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("run_dir: r\ngroup:\n  chip_size_m: 480\n")
    (tmp_path / "a.toml").write_text('run_dir = "r"\n[group]\nchip_size_m = 480\n')
    assert load_config(tmp_path / "a.yaml") == load_config(tmp_path / "a.toml")


def test_config_hash_ignores_where_it_runs_but_not_what_it_makes() -> None:
    base = RunConfig()
    assert (
        base.config_hash() == parse_config({"dask": {"workers": 7}, "run_dir": "x"}).config_hash()
    )
    assert base.config_hash() != parse_config({"group": {"chip_size_m": 100}}).config_hash()


def test_a_named_catalog_hashes_by_its_name_not_its_address() -> None:
    def cfg(url: str, name: str | None) -> RunConfig:
        api = {"url": url, "collections": ["c"], **({"name": name} if name else {})}
        return parse_config({"search": {"apis": [api]}})

    # The demo's local API gets a new port every run; its artifacts do not depend on it.
    assert (
        cfg("http://127.0.0.1:1111", "w").config_hash()
        == cfg("http://127.0.0.1:2222", "w").config_hash()
    )
    assert (
        cfg("http://127.0.0.1:1111", "w").config_hash()
        != cfg("http://127.0.0.1:1111", "v").config_hash()
    )
    # Unnamed, the address is the catalog's identity.
    assert (
        cfg("http://a.example", None).config_hash() != cfg("http://b.example", None).config_hash()
    )


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("group: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


def test_cli_init_then_check(tmp_path: Path) -> None:
    runner = CliRunner()
    path = tmp_path / "run.yaml"
    r = runner.invoke(main, ["config", "init", str(path)])
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["config", "check", str(path)])
    # the example names no API and no area yet: curate would refuse it, so check does too
    assert r.exit_code == 2 and "search.apis: empty" in r.output and "area" in r.output
    data = yaml.safe_load(path.read_text())
    data["search"].update(
        apis=[{"url": "http://127.0.0.1:9", "collections": ["sentinel-2-l2a"]}],
        bbox=[-93.0, 41.0, -92.0, 42.0],
    )
    edited = tmp_path / "edited.yaml"
    edited.write_text(yaml.safe_dump(data))
    r = runner.invoke(main, ["config", "check", str(edited)])
    assert r.exit_code == 0 and "valid" in r.output, r.output
    r = runner.invoke(main, ["config", "init", str(path)])
    assert r.exit_code != 0 and "exists" in r.output


def test_cli_check_bad_key_exits_non_zero_without_traceback(tmp_path: Path) -> None:
    path = tmp_path / "run.yaml"
    path.write_text("dedupe: {}\n")
    r = CliRunner().invoke(main, ["config", "check", str(path)])
    assert r.exit_code == 2
    assert "dedupe: unknown key" in r.output
    assert "Traceback" not in r.output
