"""Where a corpus lives: a local directory or any fsspec URL (``s3://bucket/prefix``).

A :class:`CorpusLocation` is small and picklable (URL plus storage options), so Dask tasks
open the store themselves; it knows the paths of the store, the manifest and the collection
and how to publish a store atomically on the filesystem at hand.
"""

from __future__ import annotations

import json
import posixpath
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fsspec
import zarr
from fsspec.implementations.local import LocalFileSystem
from zarr.storage import FsspecStore, LocalStore, StoreLike

from terracorpus.pipelines.corpus.format import (
    ATTRS_KEY,
    COLLECTION_NAME,
    MANIFEST_NAME,
    STORE_NAME,
)
from terracorpus.pipelines.errors import CorpusError

PARTIAL_SUFFIX = ".partial"
RETIRED_SUFFIX = ".old"


@dataclass(frozen=True)
class CorpusLocation:
    """A corpus directory: ``url`` (a local path or fsspec URL) and its storage options."""

    url: str
    storage_options: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)

    @classmethod
    def of(cls, url: str | Path, storage_options: dict[str, Any] | None = None) -> CorpusLocation:
        text = str(url).rstrip("/")
        if "://" not in text or text.startswith("file://"):
            text = str(Path(text.removeprefix("file://")).resolve())
        return cls(text, dict(storage_options or {}))

    @property
    def is_local(self) -> bool:
        return "://" not in self.url

    def fs(self) -> fsspec.AbstractFileSystem:
        if self.is_local:
            return LocalFileSystem()
        fs, _ = fsspec.core.url_to_fs(self.url, **self.storage_options)
        return fs

    def path(self, name: str) -> str:
        """The fsspec path (no protocol for object stores) of ``name`` inside the corpus."""
        if self.is_local:
            return str(Path(self.url) / name)
        _, root = fsspec.core.url_to_fs(self.url, **self.storage_options)
        return posixpath.join(root, name)

    def url_of(self, name: str) -> str:
        return posixpath.join(self.url, name) if not self.is_local else str(Path(self.url) / name)

    @property
    def partial_name(self) -> str:
        """Where a new store is written: a temporary name locally, the final name remotely."""
        return STORE_NAME + PARTIAL_SUFFIX if self.is_local else STORE_NAME

    def store(self, name: str = STORE_NAME, *, read_only: bool = False) -> StoreLike:
        """A zarr store on ``name`` inside the corpus directory."""
        if self.is_local:
            return LocalStore(Path(self.url) / name, read_only=read_only)
        return FsspecStore.from_url(
            self.url_of(name), storage_options=self.storage_options or None, read_only=read_only
        )

    @property
    def manifest(self) -> str:
        return self.path(MANIFEST_NAME)

    @property
    def collection(self) -> str:
        return self.path(COLLECTION_NAME)

    def exists(self) -> bool:
        return bool(self.fs().exists(self.path(STORE_NAME)))

    def has_complete_store(self) -> bool:
        """True if a finished corpus store is there (its root says ``complete: true``)."""
        path = self.path(f"{STORE_NAME}/zarr.json")
        fs = self.fs()
        if not fs.exists(path):
            return False
        try:
            meta = json.loads(fs.cat_file(path)).get("attributes", {}).get(ATTRS_KEY, {})
        except (ValueError, AttributeError):
            return False
        return isinstance(meta, dict) and meta.get("complete") is True

    def publish(self) -> None:
        """Make the store written under its temporary name the corpus (local: a rename).

        On object storage the store is written in place and its root ``zarr.json`` with
        ``complete: true`` is the commit marker, written last by the writer.
        """
        if not self.is_local:
            return
        src = Path(self.url) / self.partial_name
        dst = Path(self.url) / STORE_NAME
        if dst.exists():
            raise CorpusError(f"{dst} already exists; remove it, or use --append-to to add to it")
        src.rename(dst)

    def retire(self) -> None:
        """Take an existing store out of the way before it is rebuilt.

        Locally it is renamed to ``corpus.zarr.old`` (removed by :meth:`drop_retired` once
        the new store is published); on object storage it is deleted, as there is no rename.
        """
        fs = self.fs()
        if not fs.exists(self.path(STORE_NAME)):
            return
        if self.is_local:
            old = Path(self.url) / (STORE_NAME + RETIRED_SUFFIX)
            shutil.rmtree(old, ignore_errors=True)
            (Path(self.url) / STORE_NAME).rename(old)
        else:
            fs.rm(self.path(STORE_NAME), recursive=True)

    def drop_retired(self) -> None:
        if self.is_local:
            shutil.rmtree(Path(self.url) / (STORE_NAME + RETIRED_SUFFIX), ignore_errors=True)

    def open_group(self, name: str = STORE_NAME, *, mode: str = "r") -> zarr.Group:
        """The store's root group; a missing store is a :class:`CorpusError`."""
        if mode == "r" and not self.fs().exists(self.path(name)):
            raise CorpusError(f"no corpus store at {self.url_of(name)}")
        try:
            return zarr.open_group(self.store(name, read_only=mode == "r"), mode=mode)  # type: ignore[arg-type]
        except FileNotFoundError:
            raise CorpusError(f"no corpus store at {self.url_of(name)}") from None
