"""Compression of the corpus arrays: named choices turned into zarr v3 codec chains.

Every chain ends in a CRC32C checksum of each chunk, so a corrupt chunk fails to decode with
an error instead of returning wrong pixels (uncompressed chunks would otherwise decode
silently). The codec and level are written into each array's metadata: readers need no
setting. The choice is measured by ``benchmarks/bench_corpus.py`` (docs/corpus-format.md).
"""

from __future__ import annotations

from typing import Literal

from zarr.abc.codec import BytesBytesCodec
from zarr.codecs import BloscCodec, Crc32cCodec, ZstdCodec

CodecName = Literal["zstd", "blosc-lz4", "blosc-zstd", "none"]
CODECS: tuple[CodecName, ...] = ("zstd", "blosc-lz4", "blosc-zstd", "none")


def compressors(name: str, level: int = 3, *, itemsize: int = 2) -> list[BytesBytesCodec]:
    """The bytes-to-bytes codec chain for ``name`` at ``level`` (checksum included).

    Blosc's byte shuffle needs the element size, ``itemsize``; blosc levels are capped at 9.
    """
    chain: list[BytesBytesCodec] = []
    if name == "zstd":
        chain.append(ZstdCodec(level=level))
    elif name in ("blosc-lz4", "blosc-zstd"):
        chain.append(
            BloscCodec(
                cname="lz4" if name == "blosc-lz4" else "zstd",
                clevel=min(level, 9),
                shuffle="shuffle",
                typesize=itemsize,
            )
        )
    elif name != "none":
        raise ValueError(f"unknown codec {name!r}; choose one of {list(CODECS)}")
    chain.append(Crc32cCodec())
    return chain
