"""Test-wide set-up: network blocked except loopback, shared builders and paths."""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from terracorpus.catalogs.sensors import SensorRegistry, builtin_registry

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TESTS_DATA = Path(__file__).resolve().parent / "data"

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
_real_getaddrinfo = socket.getaddrinfo


def _is_loopback(address: Any) -> bool:
    if isinstance(address, (str, bytes)):  # AF_UNIX path
        return True
    host = address[0]
    if host in ("localhost", "", None):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _guarded_connect(self: socket.socket, address: Any) -> Any:
    if not _is_loopback(address):
        raise OSError(f"network access blocked in tests (only loopback is allowed): {address!r}")
    return _real_connect(self, address)


def _guarded_connect_ex(self: socket.socket, address: Any) -> Any:
    if not _is_loopback(address):
        raise OSError(f"network access blocked in tests (only loopback is allowed): {address!r}")
    return _real_connect_ex(self, address)


@pytest.fixture(autouse=True, scope="session")
def _block_network() -> Iterator[None]:
    """Only loopback connections from the test process; subprocesses inherit the env guard."""
    socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]
    os.environ.setdefault("GDAL_HTTP_MAX_RETRY", "0")
    os.environ["NO_PROXY"] = "127.0.0.1,localhost"
    yield
    socket.socket.connect = _real_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _real_connect_ex  # type: ignore[method-assign]


@pytest.fixture(scope="session")
def shared_stac_items() -> Path:
    path = SHARED_DATA / "stac-items"
    if not path.is_dir():
        path = TESTS_DATA / "stac-items"
    return path


@pytest.fixture(scope="module")
def registry() -> SensorRegistry:
    """The built-in sensor registry."""
    return builtin_registry()
