"""Finding data files locally, or downloading them into the cache with a checksum.

Lookup order for each file: ``data_dir`` (and ``data_dir/<dataset>``) when
given, otherwise the cache ``$TFVAE_CACHE_DIR/<dataset>`` (default
``~/.cache/tfvae/<dataset>``), otherwise a download into the cache. A file
named ``X.gz`` may also be present uncompressed as ``X``.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from .errors import DataError

DOWNLOAD_TIMEOUT = 60.0  # seconds without data before a download attempt fails
_CHUNK = 1 << 16
_HASHES = ("md5", "sha1", "sha256")


def cache_root() -> Path:
    """The cache directory: ``$TFVAE_CACHE_DIR``, default ``~/.cache/tfvae``."""
    env = os.environ.get("TFVAE_CACHE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "tfvae"


def parse_checksum(spec: str) -> tuple[str, str]:
    """Split ``"sha256:<hex>"`` or ``"md5:<hex>"`` into (algorithm, lowercase hex)."""
    algo, sep, digest = spec.partition(":")
    algo = algo.strip().lower()
    digest = digest.strip().lower()
    if not sep or algo not in _HASHES or not digest or any(
            c not in "0123456789abcdef" for c in digest):
        raise ValueError(f"checksum must look like 'sha256:<hex>' or 'md5:<hex>' "
                         f"(algorithms {', '.join(_HASHES)}), got {spec!r}")
    return algo, digest


def file_digests(path: Path, algos: Iterable[str]) -> dict[str, str]:
    """Hex digests of the file at ``path`` for each algorithm."""
    hashers = {a: hashlib.new(a) for a in set(algos)}
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_CHUNK), b""):
            for h in hashers.values():
                h.update(block)
    return {a: h.hexdigest() for a, h in hashers.items()}


def _matches(digests: Mapping[str, str], checksums: Sequence[str]) -> bool:
    """True when any accepted checksum matches (or none is given)."""
    if not checksums:
        return True
    return any(digests[a] == d for a, d in map(parse_checksum, checksums))


def _describe(digests: Mapping[str, str], checksums: Sequence[str]) -> str:
    expected = " or ".join(checksums)
    actual = ", ".join(f"{a}:{d}" for a, d in sorted(digests.items()))
    return f"expected {expected}, got {actual}"


def _variants(filename: str) -> tuple[str, ...]:
    """Accepted names on disk for ``filename``: itself, then uncompressed."""
    return (filename, filename[:-3]) if filename.endswith(".gz") else (filename,)


def _find(filename: str, directories: Sequence[Path]) -> Path | None:
    for directory in directories:
        for variant in _variants(filename):
            candidate = directory / variant
            if candidate.is_file():
                return candidate
    return None


def resolve_files(dataset: str, filenames: Sequence[str], urls: Sequence[str],
                  checksums: Mapping[str, Sequence[str]], data_dir=None,
                  download: bool = True, verify: bool = False) -> tuple[Path, ...]:
    """Return local paths of ``filenames`` for ``dataset``, downloading as needed.

    ``urls`` are base URLs (mirrors) tried in order, the file name appended.
    ``checksums`` maps a file name to its accepted ``"algo:hex"`` digests: a
    download must match one; local files are hashed only when ``verify``
    (and only under their listed name, not an uncompressed variant).
    """
    if data_dir is not None:
        root = Path(data_dir).expanduser()
        directories = [root, root / dataset]
        found = {f: _find(f, directories) for f in filenames}
        missing = [f for f, p in found.items() if p is None]
        if missing:
            names = ", ".join(" or ".join(_variants(f)) for f in missing)
            looked = ", ".join(str(d) for d in directories)
            raise DataError(f"dataset {dataset!r}: missing file(s) {names} "
                            f"(looked in {looked})")
    else:
        cache = cache_root() / dataset
        found = {}
        for f in filenames:
            path = _find(f, [cache])
            if path is None:
                if not download:
                    raise DataError(
                        f"dataset {dataset!r}: file {f} is not in the cache {cache} "
                        "and download=False. Pass download=True, or put the file in a "
                        "directory and pass data_dir=... (CLI: --data-dir DIR)")
                path = download_file(dataset, f, urls, cache, checksums.get(f, ()))
            found[f] = path
    if verify:
        for f, path in found.items():
            if path.name == f and checksums.get(f):
                _verify_local(path, checksums[f], cached=data_dir is None)
    return tuple(found[f] for f in filenames)


def _verify_local(path: Path, accepted: Sequence[str], cached: bool = False) -> None:
    """Raise DataError naming ``path`` unless its content matches one of ``accepted``."""
    try:
        digests = file_digests(path, (parse_checksum(c)[0] for c in accepted))
    except OSError as e:
        raise DataError(f"cannot read {path} to verify its checksum: {e}") from e
    if not _matches(digests, accepted):
        fix = ("delete it to download it again" if cached else
               "replace it with an intact copy, or load without verify=True")
        raise DataError(f"checksum mismatch for {path}: {_describe(digests, accepted)}. "
                        f"The file is corrupt or a different version: {fix}")


def download_file(dataset: str, filename: str, urls: Sequence[str], dest_dir: Path,
                  checksums: Sequence[str] = (), timeout: float | None = None) -> Path:
    """Download ``filename`` from the first working mirror into ``dest_dir``.

    The data goes to a temporary file in ``dest_dir``, is checked against
    ``checksums``, then renamed into place: a failed or mismatching download
    leaves nothing behind. Raises DataError when no mirror gives a valid file.
    """
    timeout = DOWNLOAD_TIMEOUT if timeout is None else timeout
    algos = [parse_checksum(c)[0] for c in checksums] or ["sha256"]
    full_urls = [u.rstrip("/") + "/" + filename for u in urls]
    if not full_urls:
        raise DataError(f"dataset {dataset!r}: no download URL for {filename}. Put the "
                        "file in a directory and pass data_dir=... (CLI: --data-dir DIR)")
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create the cache directory {dest_dir} for {filename}: {e}. "
                        "Set TFVAE_CACHE_DIR to a writable directory, or put the file in a "
                        "directory and pass data_dir=... (CLI: --data-dir DIR)") from e
    failures, mismatch = [], None
    for url in full_urls:
        try:
            fd, tmp_name = tempfile.mkstemp(dir=dest_dir, prefix=f".{filename}.",
                                            suffix=".part")
        except OSError as e:
            raise DataError(f"cannot write to the cache directory {dest_dir}: {e}. Set "
                            "TFVAE_CACHE_DIR to a writable directory, or put the file in a "
                            "directory and pass data_dir=... (CLI: --data-dir DIR)") from e
        tmp = Path(tmp_name)
        try:
            try:
                with os.fdopen(fd, "wb") as out:
                    digests = _fetch(url, out, algos, timeout)
            except urllib.error.HTTPError as e:
                failures.append(f"{url}: HTTP {e.code} {e.reason}")
                continue
            except (urllib.error.URLError, http.client.HTTPException, OSError) as e:
                failures.append(f"{url}: {getattr(e, 'reason', None) or e}")
                continue
            if not _matches(digests, checksums):
                mismatch = (f"checksum mismatch for {filename} of dataset {dataset!r} "
                            f"downloaded from {url}: {_describe(digests, checksums)}; "
                            "the download was discarded. Put a verified copy in a directory "
                            "and pass data_dir=... (CLI: --data-dir DIR)")
                continue
            target = dest_dir / filename
            try:
                os.replace(tmp, target)
            except OSError as e:
                raise DataError(f"cannot store the download of {filename} as {target}: "
                                f"{e}") from e
            return target
        finally:
            tmp.unlink(missing_ok=True)  # gone already after a successful rename
    if mismatch:
        raise DataError(mismatch)
    raise DataError(
        f"could not download {filename} for dataset {dataset!r} from "
        f"{', '.join(full_urls)} ({'; '.join(failures)}). Put the file in a "
        "directory and pass data_dir=... (CLI: --data-dir DIR)")


def _fetch(url: str, out, algos: Sequence[str], timeout: float) -> dict[str, str]:
    """Stream ``url`` into ``out``, showing progress on stderr; return digests."""
    hashers = {a: hashlib.new(a) for a in set(algos)}
    request = urllib.request.Request(url, headers={"User-Agent": "tfvae"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        total = int(response.headers.get("Content-Length") or 0)
        done, last = 0, 0.0
        try:
            while block := response.read(_CHUNK):
                out.write(block)
                for h in hashers.values():
                    h.update(block)
                done += len(block)
                if time.monotonic() - last > 0.5:
                    _progress(url, done, total)
                    last = time.monotonic()
            if total and done != total:
                raise http.client.IncompleteRead(b"", total - done)
        finally:
            _progress(url, done, total, end="\n")
    return {a: h.hexdigest() for a, h in hashers.items()}


def _progress(url: str, done: int, total: int, end: str = "") -> None:
    share = f" ({100 * done / total:.0f}%)" if total else ""
    total_mb = f" of {total / 1e6:.1f}" if total else ""
    sys.stderr.write(f"\rdownloading {url}: {done / 1e6:.1f}{total_mb} MB{share}{end}")
    sys.stderr.flush()
