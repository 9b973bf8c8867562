"""Reader for the IDX format of MNIST-style files (optionally gzip-compressed).

Header: two zero bytes, a type byte (0x08 = uint8), the number of dimensions,
then one big-endian uint32 per dimension; the payload follows.
"""

from __future__ import annotations

import gzip
import os
import zlib

import numpy as np

from .errors import DataError, read_file

IMAGES_MAGIC = 2051  # uint8, 3 dimensions: count, rows, columns
LABELS_MAGIC = 2049  # uint8, 1 dimension: count
_GZIP_MAGIC = b"\x1f\x8b"


def read_bytes(path: str | os.PathLike) -> bytes:
    """Return the content of ``path``, decompressed if it is a gzip file."""
    path = os.fspath(path)
    raw = read_file(path)
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: expected a valid gzip file, found a corrupt or "
                        f"truncated one ({e})") from e


def read_idx(path: str | os.PathLike, magic: int | None = None) -> np.ndarray:
    """Read an IDX file of uint8 values into an array of the declared shape.

    ``magic`` (e.g. IMAGES_MAGIC) is the expected magic number; a different one,
    a header that is not IDX, or a payload whose size does not match the
    declared dimensions raises DataError naming the file.
    """
    path = os.fspath(path)
    data = read_bytes(path)
    if len(data) < 4:
        raise DataError(f"{path}: expected an IDX header, found only {len(data)} bytes")
    found = int.from_bytes(data[:4], "big")
    if magic is not None and found != magic:
        raise DataError(f"{path}: expected IDX magic number {magic}, found {found}")
    if data[:2] != b"\0\0" or data[2] != 0x08 or data[3] == 0:
        raise DataError(f"{path}: expected an IDX file of uint8 values (magic "
                        f"0x000008NN), found magic {found:#010x}")
    ndim = data[3]
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise DataError(f"{path}: expected a {header_size}-byte header for "
                        f"{ndim} dimensions, found {len(data)} bytes")
    dims = tuple(int.from_bytes(data[4 + 4 * k:8 + 4 * k], "big") for k in range(ndim))
    expected = int(np.prod(dims, dtype=np.int64))
    found_size = len(data) - header_size
    if found_size != expected:
        kind = "truncated payload" if found_size < expected else "trailing bytes"
        raise DataError(f"{path}: expected {expected} payload bytes for shape {dims}, "
                        f"found {found_size} ({kind})")
    return np.frombuffer(data, dtype=np.uint8, offset=header_size).reshape(dims).copy()
