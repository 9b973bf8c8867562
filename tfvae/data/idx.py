"""Reader for the IDX format of MNIST-style files (optionally gzip-compressed).

Header: two zero bytes, a type byte (0x08 = uint8), the number of dimensions,
then one big-endian uint32 per dimension; the payload follows.

A gzip file is decompressed as a stream, and only as far as the header
declares (plus one byte to detect trailing data): a small file that inflates
to gigabytes (a "decompression bomb") costs no more memory than the declared
payload, and a declared payload above ``max_bytes`` is refused unread.
"""

from __future__ import annotations

import gzip
import io
import math
import os
import zlib
from typing import BinaryIO

import numpy as np

from .errors import DataError, read_file

IMAGES_MAGIC = 2051  # uint8, 3 dimensions: count, rows, columns
LABELS_MAGIC = 2049  # uint8, 1 dimension: count
MAX_BYTES = 1 << 31  # largest payload a gzip file may inflate to (MNIST train: 47 MB)
_GZIP_MAGIC = b"\x1f\x8b"
_GZIP_ERRORS = (OSError, EOFError, zlib.error)  # gzip.BadGzipFile is an OSError


def _stream(raw: bytes) -> tuple[BinaryIO, bool]:
    """A reader over ``raw``, decompressing it on the fly if it is gzip; and whether it is."""
    if raw[:2] == _GZIP_MAGIC:
        return gzip.GzipFile(fileobj=io.BytesIO(raw), mode="rb"), True
    return io.BytesIO(raw), False


def _read(stream: BinaryIO, size: int, path: str) -> bytes:
    """Up to ``size`` bytes of ``stream``; a corrupt gzip stream raises DataError."""
    try:
        return stream.read(size)
    except _GZIP_ERRORS as e:
        raise DataError(f"{path}: expected a valid gzip file, found a corrupt or "
                        f"truncated one ({e})") from e


def read_bytes(path: str | os.PathLike, max_bytes: int = MAX_BYTES) -> bytes:
    """Return the content of ``path``, decompressed if it is a gzip file.

    A corrupt or truncated gzip file, or one that inflates to more than
    ``max_bytes``, raises DataError naming the file.
    """
    path = os.fspath(path)
    raw = read_file(path)
    stream, compressed = _stream(raw)
    if not compressed:
        return raw
    data = _read(stream, max_bytes + 1, path)
    if len(data) > max_bytes:
        raise DataError(f"{path}: expected a gzip file of at most {max_bytes} bytes "
                        "uncompressed, found more")
    return data


def read_idx(path: str | os.PathLike, magic: int | None = None,
             max_bytes: int = MAX_BYTES) -> np.ndarray:
    """Read an IDX file of uint8 values into an array of the declared shape.

    ``magic`` (e.g. IMAGES_MAGIC) is the expected magic number; a different one,
    a header that is not IDX, a payload whose size does not match the declared
    dimensions, a corrupt or truncated gzip file, or a gzip file declaring a
    payload of more than ``max_bytes`` raises DataError naming the file.
    """
    path = os.fspath(path)
    raw = read_file(path)
    stream, compressed = _stream(raw)
    head = _read(stream, 4, path)
    if len(head) < 4:
        raise DataError(f"{path}: expected an IDX header, found only {len(head)} bytes")
    found = int.from_bytes(head, "big")
    if magic is not None and found != magic:
        raise DataError(f"{path}: expected IDX magic number {magic}, found {found}")
    if head[:2] != b"\0\0" or head[2] != 0x08 or head[3] == 0:
        raise DataError(f"{path}: expected an IDX file of uint8 values (magic "
                        f"0x000008NN), found magic {found:#010x}")
    ndim = head[3]
    header_size = 4 + 4 * ndim
    dims_raw = _read(stream, 4 * ndim, path)
    if len(dims_raw) < 4 * ndim:
        raise DataError(f"{path}: expected a {header_size}-byte header for "
                        f"{ndim} dimensions, found {4 + len(dims_raw)} bytes")
    dims = tuple(int.from_bytes(dims_raw[4 * k:4 * k + 4], "big") for k in range(ndim))
    expected = math.prod(dims)  # a Python int: no overflow for hostile dimensions
    if compressed and expected > max_bytes:
        raise DataError(f"{path}: the header declares shape {dims}, {expected} payload "
                        f"bytes, more than the limit of {max_bytes} for a gzip file")
    if compressed:
        payload = _read(stream, expected + 1, path)
        found_size, more = len(payload), "more than " if len(payload) > expected else ""
    else:
        payload = memoryview(raw)[header_size:]  # no copy of the payload
        found_size, more = len(payload), ""
    if found_size != expected:
        kind = "truncated payload" if found_size < expected else "trailing bytes"
        shown = expected if more else found_size
        raise DataError(f"{path}: expected {expected} payload bytes for shape {dims}, "
                        f"found {more}{shown} ({kind})")
    return np.frombuffer(payload, dtype=np.uint8).reshape(dims).copy()
