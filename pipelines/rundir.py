"""The run directory: where every stage reads and writes its artifacts.

Artifacts are written atomically (a temporary file, then a rename), and each carries the
config hash and stage that made it in its Parquet metadata, so a stage can tell a complete,
current artifact from a stale or partial one, and refuses to mix artifacts of different
configs unless told to. Failures of single scenes or chips go to one failure table that every
stage grows; per-stage scratch directories hold per-batch outputs for resumable stages.

One command at a time works in a run directory: :func:`run_lock` takes an exclusive
``flock`` on ``run.lock`` inside it for the command's lifetime (the kernel drops it when the
process dies, even by kill -9, so a crash never leaves a stale lock).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from terracorpus.catalogs.redact import redact_text
from terracorpus.pipelines.config import RunConfig, load_config, parse_config
from terracorpus.pipelines.errors import RunDirError, StageError
from terracorpus.pipelines.tables import PartitionedWriter, iter_partitions, partitioned_writer

META_KEY = b"terracorpus"
FAILURES = "failures.parquet"
TIMINGS = "timings.json"
CONFIG_FILE = "run-config.json"
LOCK_FILE = "run.lock"


@dataclass(frozen=True)
class Failure:
    """One thing that failed without stopping the run: a scene, a chip, a group."""

    stage: str
    kind: str
    key: str
    reason: str
    detail: str = ""
    time: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))


class RunDir:
    """A run directory bound to one run config.

    Args:
        root: the directory (created if missing).
        config: the run config; its hash is stamped into every artifact.
        allow_mixed: read artifacts made with another config instead of refusing.
    """

    def __init__(self, root: str | Path, config: RunConfig, *, allow_mixed: bool = False) -> None:
        self.root = Path(root)
        self.config = config
        self.config_hash = config.config_hash()
        self.allow_mixed = allow_mixed
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            probe = self.root / f".write-test-{uuid.uuid4().hex}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            raise RunDirError(f"run directory {self.root} is not writable: {e.strerror}") from None
        self._check_config_file()

    # -- paths ---------------------------------------------------------------------------
    def path(self, name: str) -> Path:
        return self.root / name

    def scratch(self, stage: str) -> Path:
        """A per-stage directory for partial (per-batch) outputs; kept for resume."""
        p = self.root / "_scratch" / stage
        p.mkdir(parents=True, exist_ok=True)
        return p

    def clear_scratch(self, stage: str) -> None:
        """Drop a stage's partial outputs (once its artifact is complete, they are redundant),
        and ``_scratch/`` itself when no other stage has any left."""
        scratch = self.root / "_scratch"
        shutil.rmtree(scratch / stage, ignore_errors=True)
        with suppress(OSError):  # not empty: another stage's resumable state is kept
            scratch.rmdir()

    # -- config ---------------------------------------------------------------------------
    def _check_config_file(self) -> None:
        f = self.root / CONFIG_FILE
        if f.exists():
            stored = json.loads(f.read_text())
            if stored.get("config_hash") != self.config_hash and not self.allow_mixed:
                raise RunDirError(
                    f"run directory {self.root} was made with another config "
                    f"(hash {stored.get('config_hash', '?')[:12]}, this one {self.config_hash[:12]}); "
                    "use a new run directory, or pass --allow-mixed to reuse its artifacts"
                )
        write_json_atomic(
            f,
            {
                "config_hash": self.config_hash,
                "config": self.config.model_dump(mode="json"),
            },
        )

    # -- tables ---------------------------------------------------------------------------
    def write_table(self, name: str, frame: pd.DataFrame, stage: str, **extra_meta: Any) -> Path:
        """Write ``frame`` as Parquet (GeoParquet for GeoDataFrames), atomically, stamped."""
        meta = {"stage": stage, "config_hash": self.config_hash, "complete": True, **extra_meta}
        meta["created"] = datetime.now(UTC).isoformat(timespec="seconds")
        target = self.path(name)
        write_parquet_atomic(target, frame, meta)
        return target

    def table_meta(self, name: str) -> dict[str, Any] | None:
        """The terracorpus metadata of an artifact, or None if it is absent or unstamped."""
        p = self.path(name)
        if not p.exists():
            return None
        try:
            md = pq.read_schema(p).metadata or {}
        except (OSError, pa.ArrowInvalid):
            return None
        raw = md.get(META_KEY)
        return json.loads(raw) if raw else None

    def is_current(self, name: str) -> bool:
        """True if the artifact exists, is complete and was made with this config."""
        meta = self.table_meta(name)
        return bool(meta and meta.get("complete") and meta.get("config_hash") == self.config_hash)

    @contextmanager
    def partitioned_table(
        self, name: str, stage: str, partitions: int, **extra_meta: Any
    ) -> Iterator[PartitionedWriter]:
        """Stream a table one partition (row group) at a time; it appears, stamped, only once
        all ``partitions`` were written (:mod:`terracorpus.pipelines.tables`)."""
        meta = {"stage": stage, "config_hash": self.config_hash, "complete": True, **extra_meta}
        meta["created"] = datetime.now(UTC).isoformat(timespec="seconds")
        with partitioned_writer(self.path(name), meta, partitions) as writer:
            yield writer

    def iter_table(
        self, name: str, *, needed_by: str, columns: Sequence[str] | None = None
    ) -> Iterator[pd.DataFrame]:
        """An artifact's partitions one at a time (a single-row-group table is one), with the
        checks of :meth:`read_table`."""
        return iter_partitions(self._checked(name, needed_by), columns)

    def table_columns(self, name: str, *, needed_by: str) -> list[str]:
        """An artifact's column names, with the checks of :meth:`read_table`."""
        return list(pq.read_schema(self._checked(name, needed_by)).names)

    def read_table(self, name: str, *, needed_by: str) -> pd.DataFrame:
        """Read an artifact, refusing a missing one or one made with another config."""
        return read_parquet(self._checked(name, needed_by))

    def _checked(self, name: str, needed_by: str) -> Path:
        """The artifact's path, if it exists, is stamped and was made with this config."""
        p = self.path(name)
        if not p.exists():
            raise StageError(
                f"{needed_by} needs {p}, which does not exist; run the stage that makes it first"
            )
        meta = self.table_meta(name)
        if meta is None:
            raise StageError(
                f"{p} is not a terracorpus artifact (no metadata); remove it and rerun"
            )
        if meta.get("config_hash") != self.config_hash and not self.allow_mixed:
            raise RunDirError(
                f"{p} was made with another config (stage {meta.get('stage')}); rerun that "
                "stage, or pass --allow-mixed"
            )
        return p

    # -- failures -------------------------------------------------------------------------
    def record_failures(self, failures: Sequence[Failure]) -> None:
        """Append failures to the run's failure table (atomic rewrite)."""
        if not failures:
            return
        new = pd.DataFrame([_stored(f) for f in failures])
        old = self.failures()
        table = pd.concat([old, new], ignore_index=True) if len(old) else new
        write_parquet_atomic(self.path(FAILURES), table, {"stage": "failures"})

    def failures(self, stage: str | None = None) -> pd.DataFrame:
        p = self.path(FAILURES)
        if not p.exists():
            cols = [f for f in Failure.__dataclass_fields__]
            return pd.DataFrame(columns=cols)
        df = pd.read_parquet(p)
        return df[df["stage"] == stage] if stage else df

    def clear_failures(self, stage: str) -> None:
        """Forget a stage's failures before it is rerun from scratch."""
        df = self.failures()
        if len(df) and (df["stage"] == stage).any():
            write_parquet_atomic(
                self.path(FAILURES), df[df["stage"] != stage], {"stage": "failures"}
            )

    # -- timings --------------------------------------------------------------------------
    @contextmanager
    def timed(self, stage: str) -> Iterator[None]:
        """Record the wall time of a stage in timings.json."""
        t0 = time.perf_counter()
        yield
        self.record_timing(stage, time.perf_counter() - t0)

    def record_timing(self, stage: str, seconds: float) -> None:
        f = self.path(TIMINGS)
        data = json.loads(f.read_text()) if f.exists() else {}
        data[stage] = round(seconds, 3)
        write_json_atomic(f, data)

    def timings(self) -> dict[str, float]:
        f = self.path(TIMINGS)
        return dict(json.loads(f.read_text())) if f.exists() else {}


@contextmanager
def run_lock(root: str | Path, command: str, *, wait_s: float = 0.0) -> Iterator[None]:
    """Hold the run directory ``root`` for ``command`` (curate, or one stage command).

    A second command into the same directory waits up to ``wait_s`` seconds, then raises
    :class:`RunDirError` naming the command, process and host that hold it. The lock is an
    exclusive ``flock`` on ``root/run.lock``: released on exit and by the kernel when the
    process dies. (Run directories are local or on a shared POSIX file system; a corpus on
    object storage is guarded by the run directory that writes it, docs/corpus-format.md.)
    """
    path = Path(root) / LOCK_FILE
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        raise RunDirError(f"run directory {root} is not writable: {e.strerror}") from None
    try:
        _acquire(fd, path, wait_s)
        holder = {
            "command": command,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": datetime.now(UTC).isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the flock


@contextmanager
def locked_run(
    root: str | Path, config: RunConfig, command: str, *, allow_mixed: bool = False
) -> Iterator[RunDir]:
    """The :class:`RunDir` at ``root``, held by ``command`` (:func:`run_lock`) while in use.

    The lock is taken before the run's config file is checked or written, so a second
    command never touches the directory."""
    with run_lock(root, command):
        yield RunDir(root, config, allow_mixed=allow_mixed)


def _acquire(fd: int, path: Path, wait_s: float) -> None:
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() >= deadline:
                break
            time.sleep(min(0.2, max(deadline - time.monotonic(), 0.01)))
    waited = f"still in use after {wait_s:g} s" if wait_s > 0 else "in use"
    raise RunDirError(
        f"run directory {path.parent} is {waited} by {_holder(path)}; wait for it to finish "
        "(or stop it), or use another run directory"
    )


def _holder(path: Path) -> str:
    """Who holds the lock, as its lock file says (written right after taking it)."""
    try:
        h = json.loads(path.read_text())
        return f"`terracorpus {h['command']}` (pid {h['pid']} on {h['host']}, since {h['since']})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another terracorpus command"


def config_for(
    run_dir: str | Path, config_path: str | Path | None, *, needs: str | None = None
) -> RunConfig:
    """The config a stage command runs with: the one given (its run_dir set to ``run_dir``),
    else the one the run directory was made with. ``needs`` names the stage's input artifact,
    for the message when there is no run there at all."""
    if config_path is not None:
        return load_config(config_path).model_copy(update={"run_dir": str(run_dir)})
    stored = Path(run_dir) / CONFIG_FILE
    if not stored.exists():
        missing = f"no {CONFIG_FILE}" + (f" and no {needs}" if needs else "")
        raise StageError(
            f"{run_dir} holds no run ({missing}); pass --config with the run config, "
            "or run the earlier stages first (`terracorpus curate`)"
        )
    data = json.loads(stored.read_text())["config"]
    return parse_config({**data, "run_dir": str(run_dir)}, source=str(stored))


# -- atomic file helpers (also used by stages for per-batch outputs) ----------------------
def _tmp_beside(target: Path) -> Path:
    """A fresh temporary file next to ``target``, with the mode a plain ``open`` would give
    (0666 less the umask; mkstemp's 0600 would make artifacts unreadable to colleagues on a
    shared file system)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
    finally:
        os.close(fd)
    return Path(tmp)


def _umask() -> int:
    """The process umask: from /proc on Linux; elsewhere by setting it and straight back
    (which other threads could briefly see, hence not the first choice)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_parquet_atomic(target: Path, frame: pd.DataFrame, meta: dict[str, Any]) -> None:
    """Write a (Geo)DataFrame to ``target`` via a temporary file and a rename."""
    tmp = _tmp_beside(target)
    try:
        frame.to_parquet(tmp, index=False)  # GeoDataFrames write GeoParquet metadata
        table = pq.read_table(tmp)
        merged = dict(table.schema.metadata or {})
        merged[META_KEY] = json.dumps(meta, default=str).encode()
        pq.write_table(table.replace_schema_metadata(merged), tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json_atomic(target: Path, data: Any) -> None:
    tmp = _tmp_beside(target)
    try:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str))
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def read_parquet(path: Path) -> pd.DataFrame:
    """Read Parquet as a GeoDataFrame when it carries GeoParquet metadata, else a DataFrame."""
    md = pq.read_schema(path).metadata or {}
    if b"geo" in md:
        import geopandas as gpd

        frame: pd.DataFrame = gpd.read_parquet(path)
        return frame
    return pd.read_parquet(path)


def _stored(failure: Failure) -> dict[str, Any]:
    """A failure row as the table stores it: no credential in its key or detail (an href
    from a catalog, a GDAL message naming a signed URL)."""
    row = asdict(failure)
    return {k: redact_text(v) if isinstance(v, str) else v for k, v in row.items()}
