"""Reader for the ``.amat`` text format of binarized MNIST.

One example per line, the values separated by single spaces, each value a
single character ``0`` or ``1``.
"""

from __future__ import annotations

import os

import numpy as np

from .errors import DataError, read_file

_ZERO, _ONE, _SPACE, _NEWLINE, _RETURN = (ord(c) for c in "01 \n\r")


def read_amat(path: str | os.PathLike, num_values: int = 784) -> np.ndarray:
    """Read a 0/1 ``.amat`` file into a uint8 array of shape ``[lines, num_values]``.

    Raises DataError naming the file and line for an empty file, a character
    other than 0, 1, space or newline, a multi-digit value, or a line (the last
    one included) that does not hold exactly ``num_values`` values.
    """
    path = os.fspath(path)
    raw = read_file(path)
    if not raw.strip():
        raise DataError(
            f"{path}: expected lines of {num_values} space-separated 0/1 values, "
            "found an empty file")
    buf = np.frombuffer(raw, dtype=np.uint8)
    fast = _parse_canonical(buf, num_values)
    if fast is not None:
        return fast
    return _parse_general(buf, num_values, path)


def _parse_canonical(buf: np.ndarray, num_values: int) -> np.ndarray | None:
    """Parse the canonical layout ``v v ... v\\n``; None if the bytes differ from it."""
    width = 2 * num_values
    if buf.size % width:
        return None
    rows = buf.reshape(-1, width)
    if not (rows[:, -1] == _NEWLINE).all() or not (rows[:, 1:-1:2] == _SPACE).all():
        return None
    values = rows[:, 0::2] - np.uint8(_ZERO)  # wraps below '0' to large values
    if values.max() > 1:
        return None
    return values


def _parse_general(buf: np.ndarray, num_values: int, path: str) -> np.ndarray:
    """Parse any layout of spaces and newlines, and locate the first error."""
    newline = buf == _NEWLINE
    breaks = np.flatnonzero(newline)

    def line_of(i: int) -> int:  # 1-based line number of byte i
        return int(np.searchsorted(breaks, i)) + 1

    bad = np.flatnonzero((buf != _ZERO) & (buf != _ONE) & (buf != _SPACE) & ~newline)
    if bad.size:
        i = bad[0]
        hint = " (Windows line endings?)" if buf[i] == _RETURN else ""
        raise DataError(
            f"{path}, line {line_of(i)}: expected only the characters 0, 1, space "
            f"and newline, found {bytes(buf[i:i + 1])!r}{hint}")

    digit = (buf == _ZERO) | (buf == _ONE)
    glued = np.flatnonzero(digit[1:] & digit[:-1])
    if glued.size:
        raise DataError(
            f"{path}, line {line_of(glued[0])}: expected single-character 0/1 "
            "values separated by spaces, found a multi-digit value")

    starts = np.concatenate([[0], breaks + 1])
    starts = starts[starts < buf.size]  # no line after a final newline
    counts = np.add.reduceat(digit, starts, dtype=np.int64)
    wrong = np.flatnonzero(counts != num_values)
    if wrong.size:
        j = wrong[0]
        short = counts[j] < num_values and j == starts.size - 1
        last = " (the last line: truncated file?)" if short else ""
        raise DataError(
            f"{path}, line {j + 1}{last}: expected {num_values} values, "
            f"found {counts[j]}")
    return (buf[digit] - np.uint8(_ZERO)).reshape(starts.size, num_values)
