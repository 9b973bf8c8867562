"""The error raised for missing, corrupt or unobtainable data, and the guarded file read."""
import os


class DataError(ValueError):
    """A data set file is missing, malformed, or could not be downloaded."""


def read_file(path) -> bytes:
    """The bytes of `path`; an unreadable file raises DataError naming it."""
    try:
        with open(os.fspath(path), "rb") as f:
            return f.read()
    except OSError as e:
        raise DataError(f"cannot read {os.fspath(path)}: {e}") from e
