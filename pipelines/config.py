"""The run config: read from YAML or TOML, validated once, here.

Each section is a pydantic model with ``extra="forbid"``, so a misspelt key is named with
the keys that are allowed. Inside the project, stages take the validated, frozen sections
(or plain dataclasses made from them); nothing reads raw dicts after this boundary.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic.dataclasses import dataclass as pydantic_dataclass
from pydantic.dataclasses import is_pydantic_dataclass
from pydantic.fields import FieldInfo

from terracorpus.catalogs.access import (
    PC_TOKEN_ENDPOINT,
    Auth,
    asset_host_problem,
    gdal_option_problem,
)
from terracorpus.catalogs.redact import has_credentials, redact_text, strip_credentials
from terracorpus.curation.ap import APParams
from terracorpus.curation.errors import CurationError
from terracorpus.curation.groups import GroupParams
from terracorpus.curation.params import bounds_text, project
from terracorpus.curation.selection import SelectionPolicy
from terracorpus.pipelines.errors import ConfigError

_SECTION = ConfigDict(extra="forbid")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _as_value_error(check: Callable[[], None]) -> None:
    """Run a curation record's own check; its error becomes the ValueError pydantic reports
    under the section's key."""
    try:
        check()
    except CurationError as e:
        raise ValueError(str(e)) from None


class ApiConfig(_Section):
    """One STAC API, the collections to search in it and how its assets are read."""

    url: str = Field(description="STAC API root URL, e.g. http://127.0.0.1:8089")
    collections: list[str] = Field(min_length=1)
    name: str | None = Field(
        default=None,
        min_length=1,
        description="a stable name for this catalog: the config hash uses it instead of url, so "
        "the same catalog served at another address (a local API on a free port, a tunnel) keeps "
        "its run directory's artifacts",
    )
    auth: Auth = Field(
        default="none",
        description="how assets are read: none, planetary-computer (SAS signing), "
        "requester-pays (s3://, you pay), aws-no-sign (anonymous s3://)",
    )
    token_endpoint: str = Field(
        default=PC_TOKEN_ENDPOINT, description="SAS token endpoint (auth: planetary-computer)"
    )
    asset_hosts: list[str] = Field(
        default_factory=list,
        description="[scheme://]host[:port] (host may start with *.) or s3://bucket its assets "
        "may be read from, beyond the API's own host and the known ones of well-known APIs",
    )
    gdal_options: dict[str, str] = Field(
        default_factory=dict,
        description="GDAL config options for its reads (e.g. AWS_REGION); never secrets",
    )

    @field_validator("url", "token_endpoint")
    @classmethod
    def _no_credentials(cls, v: str) -> str:
        if has_credentials(v):
            raise ValueError(
                f"{strip_credentials(v)} carries credentials (a user:password or a token); "
                "secrets never go in the config: put them in a netrc file (~/.netrc, or the "
                "file NETRC names) or the environment"
            )
        return v

    @field_validator("asset_hosts")
    @classmethod
    def _host_patterns(cls, v: list[str]) -> list[str]:
        for pattern in v:
            problem = asset_host_problem(pattern)
            if problem:
                raise ValueError(problem)
        return v

    @field_validator("gdal_options")
    @classmethod
    def _no_secret_options(cls, v: dict[str, str]) -> dict[str, str]:
        for name in v:
            problem = gdal_option_problem(name)
            if problem:
                raise ValueError(problem)
        return v


class SearchConfig(_Section):
    """Where, when and what to search."""

    apis: list[ApiConfig] = Field(default_factory=list)
    bbox: tuple[float, float, float, float] | None = Field(
        default=None, description="lon/lat (west, south, east, north)"
    )
    geojson: str | None = Field(default=None, description="path to a GeoJSON area")
    tiles: list[tuple[float, float, float, float]] | None = Field(
        default=None, description="lon/lat bboxes searched as given (instead of bbox/geojson)"
    )
    start: date | None = None
    end: date | None = None
    max_cloud_cover: float = Field(default=80.0, ge=0, le=100)
    tile_degrees: float = Field(default=1.0, gt=0, description="large areas split into tiles")
    page_size: int = Field(default=100, ge=1, le=10000)
    timeout_s: float = Field(default=30.0, gt=0)
    retries: int = Field(default=4, ge=0)
    backoff_s: float = Field(default=0.5, ge=0, description="retry n waits backoff_s * 2**n")
    parallel: int = Field(default=8, ge=1, description="tiles searched at once (threads)")
    sensor_files: list[str] = Field(default_factory=list, description="extra sensors YAML/TOML")


@pydantic_dataclass(frozen=True, config=_SECTION)
class GroupConfig(GroupParams):
    """Image-group geometry and diversity rules.

    Curation's :class:`GroupParams`, validated here: every key is declared there once.
    """

    def __post_init__(self) -> None:
        _as_value_error(super().__post_init__)


class DescribeConfig(_Section):
    """What to compute per chip and how to read it."""

    descriptor_size: int = Field(
        default=16,
        ge=4,
        description="pixels per chip side the descriptors are read at, from the coarsest COG "
        "overview still this fine (16: 60 m for a 960 m chip)",
    )
    full_resolution: bool = Field(
        default=False, description="read every chip at its sensor's own GSD instead"
    )
    batch_size: int = Field(default=64, ge=1, description="chips per Dask task (one scene each)")


@pydantic_dataclass(frozen=True, config=_SECTION)
class DedupConfig(SelectionPolicy, APParams):
    """Hierarchical affinity propagation and the selection policy (docs/curation.md).

    Curation's :class:`APParams` and :class:`SelectionPolicy` (declared there once; one flat
    section, as written in a config file) plus the settings only the dedup stage reads.
    """

    partition_tile_degrees: float = Field(
        default=1.0, gt=0, description="tile size (degrees) of the spatial partition key"
    )
    dask_min_chips: int = Field(
        default=20000,
        ge=0,
        description="fewer anchor chips are clustered in-process (Dask overhead would dominate)",
    )
    descriptor_weights: dict[str, float] = Field(
        default_factory=dict,
        description="weight per descriptor part (spec, index, tex, meta); default 1",
    )

    def __post_init__(self) -> None:
        _as_value_error(lambda: APParams.__post_init__(self))
        _as_value_error(lambda: SelectionPolicy.__post_init__(self))

    @property
    def ap(self) -> APParams:
        """The affinity-propagation settings of this section."""
        return project(self, APParams)

    @property
    def policy(self) -> SelectionPolicy:
        """The selection settings of this section."""
        return project(self, SelectionPolicy)


class CorpusConfig(_Section):
    """How the corpus is laid out and where it goes."""

    shard_mb: float = Field(
        default=64.0, gt=0, description="target shard size, MB of uncompressed pixels"
    )
    max_images_per_shard: int = Field(
        default=256,
        ge=1,
        description="cap on images per shard: zarr reads the shard index (16 bytes per image) "
        "with every single-image read, so small chips in huge shards read mostly index",
    )
    codec: Literal["zstd", "blosc-lz4", "blosc-zstd", "none"] = Field(
        default="blosc-zstd",
        description="pixel and validity compression; chosen by measurement (docs/corpus-format.md)",
    )
    codec_level: int = Field(default=3, ge=0, le=22, description="compression level")
    val_fraction: float = Field(
        default=0.1, ge=0, lt=1, description="share of groups in the val split (hash of group id)"
    )


class DaskConfig(_Section):
    """Where the pixel-touching stages run."""

    scheduler: str | None = Field(
        default=None, description="tcp://host:port of an existing cluster"
    )
    workers: int = Field(default=2, ge=1)
    threads_per_worker: int = Field(default=1, ge=1)
    memory_limit: str = "4GiB"


class AccessConfig(_Section):
    """Where assets may be read from beyond the searched APIs' hosts (docs/search.md)."""

    local_roots: list[str] = Field(
        default_factory=list,
        description="directories local asset files may be read under (resolved; nothing "
        "outside them, no ../ escapes)",
    )


class RunConfig(_Section):
    """A whole curation run."""

    run_dir: str = "run"
    strict: bool = False
    search: SearchConfig = Field(default_factory=SearchConfig)
    group: GroupConfig = Field(default_factory=GroupConfig)
    describe: DescribeConfig = Field(default_factory=DescribeConfig)
    dedup: DedupConfig = Field(default_factory=DedupConfig)
    corpus: CorpusConfig = Field(default_factory=CorpusConfig)
    dask: DaskConfig = Field(default_factory=DaskConfig)
    access: AccessConfig = Field(default_factory=AccessConfig)

    @field_validator("run_dir")
    @classmethod
    def _run_dir_not_empty(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty")
        return v

    def config_hash(self) -> str:
        """sha256 of the canonical JSON of the settings that shape artifacts."""
        data = self.model_dump(mode="json", exclude={"run_dir", "strict", "dask"})
        for api in data["search"]["apis"]:
            if api.get("name"):  # the catalog's identity, not the address it is served at
                del api["url"]
        text = json.dumps(data, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()


def section_fields(annotation: Any) -> dict[str, FieldInfo] | None:
    """The fields of a config section (a pydantic model or pydantic dataclass); None for a
    plain value."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return dict(annotation.model_fields)
    if is_pydantic_dataclass(annotation):
        return dict(annotation.__pydantic_fields__)
    return None


def _format_error(e: ValidationError, source: str) -> str:
    lines = [f"invalid run config {source}:"]
    for err in e.errors():
        key = ".".join(str(p) for p in err["loc"]) or "<root>"
        msg = err["msg"]
        if err["type"] in ("extra_forbidden", "unexpected_keyword_argument"):
            msg = "unknown key"
            allowed = _allowed_keys(err["loc"][:-1])
            if allowed:
                msg += f"; allowed keys here: {', '.join(allowed)}"
        elif err["type"] in _BOUND_ERRORS:
            field = _field_at(err["loc"])
            bounds = bounds_text(_bounds(field)) if field is not None else ""
            if bounds:
                msg = f"must be {bounds}, got {err['input']!r}"
        lines.append(f"  {key}: {msg}")
    return "\n".join(lines)


_BOUND_ERRORS = ("greater_than", "greater_than_equal", "less_than", "less_than_equal")


def _field_at(loc: tuple[Any, ...]) -> FieldInfo | None:
    """The field a validation error's location points at (None past a list or a dict)."""
    fields: dict[str, FieldInfo] | None = section_fields(RunConfig)
    field = None
    for part in loc:
        field = fields.get(part) if fields is not None and isinstance(part, str) else None
        if field is None:
            return None
        fields = section_fields(field.annotation)
    return field


def _bounds(field: FieldInfo) -> dict[str, Any]:
    """A field's numeric bounds as ``{"ge": 0, "le": 1}`` (from pydantic's constraint records)."""
    out = {}
    for m in field.metadata:
        for key in ("ge", "gt", "le", "lt"):
            if hasattr(m, key):
                out[key] = getattr(m, key)
    return out


def _allowed_keys(loc: tuple[Any, ...]) -> list[str]:
    fields = section_fields(RunConfig) if not loc else None
    if loc:
        field = _field_at(loc)
        fields = section_fields(field.annotation) if field is not None else None
    return sorted(fields) if fields is not None else []


def parse_config(data: dict[str, Any], source: str = "<dict>") -> RunConfig:
    """Validate a config mapping; errors name the bad key and what is allowed."""
    if not isinstance(data, dict):
        raise ConfigError(f"run config {source} must be a mapping at the top level")
    try:
        return RunConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_error(e, source)) from None


def load_config(path: str | Path) -> RunConfig:
    """Read and validate a YAML (.yaml/.yml) or TOML (.toml) run config."""
    p = Path(path)
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise ConfigError(
            f"run config {p} does not exist; write one with `terracorpus config init`"
        ) from None
    except OSError as e:
        raise ConfigError(f"cannot read run config {p}: {e.strerror}") from None
    try:
        data = tomllib.loads(text) if p.suffix == ".toml" else yaml.safe_load(text)
    except (yaml.YAMLError, tomllib.TOMLDecodeError) as e:
        kind = "TOML" if p.suffix == ".toml" else "YAML"
        # The parser quotes the offending line, which may hold a URL with credentials.
        raise ConfigError(f"run config {p} is not valid {kind}: {redact_text(str(e))}") from None
    return parse_config(data or {}, str(p))
