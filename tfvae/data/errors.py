"""The error raised for missing, corrupt or unobtainable data."""


class DataError(ValueError):
    """A data set file is missing, malformed, or could not be downloaded."""
