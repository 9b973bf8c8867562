"""Hostile input, safe loading: corrupt data files, broken downloads, bad configs, foreign weights.

Extends tests/test_data.py, tests/test_presets.py and tests/test_io.py without repeating them:
every case here is one they do not cover. Each expects a clear error (DataError, ConfigError or
ValueError naming the file, line, key or variable) instead of a raw numpy/struct/zlib/h5py
traceback, and nothing half-written left behind. No network: downloads go through a fake
`urllib.request.urlopen`, into the empty cache of the `isolated_cache` fixture.
"""
from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import socket
import struct
import tracemalloc
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import yaml

import tfvae
from tfvae import data
from tfvae.config import ConfigError
from tfvae.data import DataError, registry
from tfvae.data.amat import read_amat
from tfvae.data.idx import IMAGES_MAGIC, read_bytes, read_idx

pytestmark = pytest.mark.usefixtures("isolated_cache")  # empty cache, no proxy

AMAT_TEST = "binarized_mnist_test.amat"


def _idx(dims, payload: bytes) -> bytes:
    """An IDX file of uint8 values: the header for `dims`, then `payload` as given."""
    return bytes([0, 0, 8, len(dims)]) + struct.pack(f">{len(dims)}I", *dims) + payload


# ---------------------------------------------------------------- .amat


@pytest.mark.parametrize("content, line, what", [
    ("0 1 0 1\n0 a 0 1\n", 2, "found b'a'"),                       # non-numeric token
    ("0 1 0 1\n0 0.5 0 1\n", 2, "found b'.'"),                     # not 0/1 (a float)
    ("0 1 0 1\n0 -1 0 1\n", 2, "found b'-'"),                      # not 0/1 (negative)
    ("0 1 0 1\r\n0 1 0 1\r\n", 1, "found b'\\r' (Windows line endings?)"),
    ("0 1 0 1\n0\t1 0 1\n", 2, "found b'\\t'"),
    ("0 1 0 1\n\n0 1 0 1\n", 2, "expected 4 values, found 0"),      # a blank line inside
    ("0 1 0 1\n0 1 0 1 1\n", 2, "expected 4 values, found 5"),
], ids=["letter", "float", "negative", "crlf", "tab", "blank-line", "too-many-last"])
def test_amat_bad_tokens_and_lines_name_the_file_and_line(tmp_path, content, line, what):
    path = tmp_path / "bad.amat"
    path.write_bytes(content.encode())
    with pytest.raises(DataError) as err:
        read_amat(path, num_values=4)
    message = str(err.value)
    assert message.startswith(f"{path}, line {line}: ") and what in message
    assert "truncated" not in message  # not even for a last line with too MANY values


def test_amat_binary_garbage_and_whitespace_only_files(tmp_path):
    path = tmp_path / AMAT_TEST
    path.write_bytes(bytes(range(256)) * 4)        # e.g. a gzip file saved under the .amat name
    with pytest.raises(DataError, match=rf"{AMAT_TEST}, line 1: expected only the characters "
                                        r"0, 1, space and newline, found b'\\x00'"):
        data.load_arrays("binarized_mnist", "test", data_dir=tmp_path)
    path.write_text(" \n\n  \n")
    with pytest.raises(DataError, match=rf"{AMAT_TEST}: expected lines of 784 .* empty file"):
        data.load_arrays("binarized_mnist", "test", data_dir=tmp_path)


# ---------------------------------------------------------------- IDX


@pytest.mark.parametrize("blob, what, gz_what", [
    (b"\0\0", "expected an IDX header, found only 2 bytes", None),
    (b"\0\0\x08\x03\0\0\0\x05", "expected a 16-byte header for 3 dimensions, found 8 bytes",
     None),
    (b"\0\0\x0d\x01\0\0\0\x01abcd", "expected an IDX file of uint8 values .* found magic "
                                    "0x00000d01", None),          # float32 IDX: not supported
    (_idx((2, 2), b"abcde"), r"expected 4 payload bytes for shape \(2, 2\), found 5 "
                             r"\(trailing bytes\)",
     r"expected 4 payload bytes for shape \(2, 2\), found more than 4 \(trailing bytes\)"),
    # Dimensions whose product overflows int64 (to 0): once a raw numpy reshape error.
    (_idx((65536,) * 4, b""), rf"expected {2 ** 64} payload bytes for shape \(65536, 65536, "
                              r"65536, 65536\), found 0 \(truncated payload\)",
     rf"the header declares shape \(65536, 65536, 65536, 65536\), {2 ** 64} payload bytes, "
     "more than the limit of 2147483648 for a gzip file"),
], ids=["short", "dims", "float32", "trailing", "overflow"])
def test_idx_bad_headers_name_the_file(tmp_path, blob, what, gz_what):
    path = tmp_path / "bad-idx1-ubyte"
    path.write_bytes(blob)
    with pytest.raises(DataError, match=f"^{path}: {what}$"):
        read_idx(path)
    gz = path.with_suffix(".gz")
    gz.write_bytes(gzip.compress(blob))  # the same inside gzip
    with pytest.raises(DataError, match=f"^{gz}: {gz_what or what}$"):
        read_idx(gz)


def test_idx_corrupt_gzip_streams(tmp_path):
    payload = np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8)
    blob = gzip.compress(_idx((3000,), payload.tobytes()), mtime=0)
    cases = {
        "flipped.gz": blob[:len(blob) // 2] + bytes([blob[len(blob) // 2] ^ 0xFF])
        + blob[len(blob) // 2 + 1:],                              # a bit flip in the data
        "crc.gz": blob[:-8] + bytes([blob[-8] ^ 0xFF]) + blob[-7:],  # a wrong CRC-32
        "garbage.gz": blob + b"garbage",                           # not a second member
        "header.gz": blob[:10],                                    # only the gzip header
        "method.gz": blob[:2] + b"\x07" + blob[3:],                # unknown compression
    }
    for name, corrupt in cases.items():
        path = tmp_path / name
        path.write_bytes(corrupt)
        with pytest.raises(DataError, match=f"^{path}: expected a valid gzip file, found a "
                                            "corrupt or truncated one"):
            read_idx(path)
    # Legitimate variants load: zero padding after the stream, two concatenated members.
    (tmp_path / "padded.gz").write_bytes(blob + b"\0" * 512)
    raw = _idx((3000,), payload.tobytes())
    (tmp_path / "members.gz").write_bytes(gzip.compress(raw[:1000]) + gzip.compress(raw[1000:]))
    for name in ("padded.gz", "members.gz"):
        np.testing.assert_array_equal(read_idx(tmp_path / name), payload)


def test_gzip_bomb_is_read_only_as_far_as_the_header_declares(tmp_path):
    bomb = tmp_path / "bomb-idx1-ubyte.gz"
    bomb.write_bytes(gzip.compress(_idx((10,), bytes(30_000_000)), compresslevel=9))
    assert bomb.stat().st_size < 100_000
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match=r"expected 10 payload bytes for shape \(10,\), found "
                                            r"more than 10 \(trailing bytes\)"):
            read_idx(bomb)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 3_000_000, peak  # inflating it all would take 30 MB
    # A header declaring more than max_bytes is refused before the payload is inflated.
    big = tmp_path / "big-idx3-ubyte.gz"
    big.write_bytes(gzip.compress(_idx((60000, 28, 28), b"")))
    with pytest.raises(DataError, match=rf"^{big}: the header declares shape \(60000, 28, 28\), "
                                        "47040000 payload bytes, more than the limit of 1000000"):
        read_idx(big, IMAGES_MAGIC, max_bytes=1_000_000)
    with pytest.raises(DataError, match=rf"^{bomb}: expected a gzip file of at most 1000 bytes"):
        read_bytes(bomb, max_bytes=1000)
    plain = tmp_path / "plain"
    plain.write_bytes(b"\0\0\x08\x01")
    assert read_bytes(plain, max_bytes=1) == b"\0\0\x08\x01"   # the limit is for gzip only


# ---------------------------------------------------------------- downloads


class _FakeResponse:
    """A response streaming `chunks`; an exception among them is raised when reached."""

    def __init__(self, chunks, length=None):
        self._chunks = list(chunks)
        size = sum(len(c) for c in self._chunks if isinstance(c, bytes))
        self.headers = {"Content-Length": str(size if length is None else length)}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def read(self, n):
        if not self._chunks:
            return b""
        chunk = self._chunks.pop(0)
        if isinstance(chunk, BaseException):
            raise chunk
        return chunk


class _Abort(BaseException):
    """Stands for Ctrl-C: not an error the download code may catch."""


def _fake_web(monkeypatch, responses):
    """Serve `responses[url]()` (a _FakeResponse, or an exception to raise) from urlopen;
    return the list of requested URLs."""
    asked = []

    def urlopen(request, timeout=None):
        url = request.full_url
        asked.append(url)
        result = responses[url]() if url in responses else urllib.error.HTTPError(
            url, 404, "Not Found", {}, None)
        if isinstance(result, BaseException):
            raise result
        return result

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return asked


def _small_amat():
    values = np.random.default_rng(3).integers(0, 2, size=(4, 784))
    return values, "".join(" ".join(map(str, row)) + "\n" for row in values).encode()


def _mirrors(monkeypatch, urls, blob):
    spec = registry.REGISTRY["binarized_mnist"]
    sha = "sha256:" + hashlib.sha256(blob).hexdigest()
    monkeypatch.setitem(registry.REGISTRY, "binarized_mnist", dataclasses.replace(
        spec, urls=tuple(urls), checksums={AMAT_TEST: (sha,)}))


def _cache_listing(tmp_path) -> list[str]:
    """Every name under the cache, hidden temporary files included."""
    cache = tmp_path / "cache"
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*")) if cache.exists() else []


@pytest.mark.parametrize("failure, expected", [
    (ConnectionResetError(104, "Connection reset by peer"), "Connection reset by peer"),
    (socket.timeout("timed out"), "timed out"),
    (None, "IncompleteRead"),          # the server closes before Content-Length bytes
])
def test_interrupted_download_leaves_nothing_in_the_cache(tmp_path, monkeypatch, failure,
                                                          expected):
    _, blob = _small_amat()
    _mirrors(monkeypatch, ["http://a.invalid/"], blob)
    url = "http://a.invalid/" + AMAT_TEST
    chunks = [blob[:1000]] + ([failure] if failure else [])
    _fake_web(monkeypatch, {url: lambda: _FakeResponse(chunks, length=len(blob))})
    with pytest.raises(DataError) as err:
        data.load_arrays("binarized_mnist", "test")
    message = str(err.value)
    assert message.startswith(f"could not download {AMAT_TEST} for dataset 'binarized_mnist'")
    assert f"{url}: " in message and expected in message and "data_dir=" in message
    assert _cache_listing(tmp_path) == ["binarized_mnist"]   # no .part file, no target


def test_an_abort_mid_download_propagates_and_leaves_nothing(tmp_path, monkeypatch):
    _, blob = _small_amat()
    _mirrors(monkeypatch, ["http://a.invalid/"], blob)
    _fake_web(monkeypatch, {"http://a.invalid/" + AMAT_TEST:
                            lambda: _FakeResponse([blob[:500], _Abort()])})
    with pytest.raises(_Abort):
        data.load_arrays("binarized_mnist", "test")
    assert _cache_listing(tmp_path) == ["binarized_mnist"]
    # And a later run downloads cleanly: nothing stale is taken for the file.
    _fake_web(monkeypatch, {"http://a.invalid/" + AMAT_TEST: lambda: _FakeResponse([blob])})
    values, _ = _small_amat()
    images, _ = data.load_arrays("binarized_mnist", "test")
    np.testing.assert_array_equal(images.reshape(4, 784), values)


def test_a_corrupt_mirror_is_skipped_and_only_the_verified_file_is_cached(tmp_path, monkeypatch):
    values, blob = _small_amat()
    bad = blob[:100] + (b"1" if blob[100:101] == b"0" else b"0") + blob[101:]  # one pixel flipped
    _mirrors(monkeypatch, ["http://bad.invalid/", "http://good.invalid/"], blob)
    asked = _fake_web(monkeypatch, {"http://bad.invalid/" + AMAT_TEST: lambda: _FakeResponse([bad]),
                                    "http://good.invalid/" + AMAT_TEST: lambda: _FakeResponse(
                                        [blob[:700], blob[700:]])})
    images, _ = data.load_arrays("binarized_mnist", "test")
    assert asked == ["http://bad.invalid/" + AMAT_TEST, "http://good.invalid/" + AMAT_TEST]
    np.testing.assert_array_equal(images.reshape(4, 784), values)
    assert _cache_listing(tmp_path) == ["binarized_mnist", f"binarized_mnist/{AMAT_TEST}"]
    assert (tmp_path / "cache" / "binarized_mnist" / AMAT_TEST).read_bytes() == blob


def test_checksum_mismatch_says_the_download_was_discarded(tmp_path, monkeypatch):
    _, blob = _small_amat()
    _mirrors(monkeypatch, ["http://a.invalid/"], blob)
    _fake_web(monkeypatch, {"http://a.invalid/" + AMAT_TEST: lambda: _FakeResponse([blob[:-2]])})
    with pytest.raises(DataError, match=r"checksum mismatch .* discarded\. Put a verified copy in "
                                        r"a directory and pass data_dir="):
        data.load_arrays("binarized_mnist", "test")
    assert _cache_listing(tmp_path) == ["binarized_mnist"]


def test_offline_the_real_mirrors_fail_with_a_hint_to_pass_a_local_directory(tmp_path,
                                                                             monkeypatch):
    offline = urllib.error.URLError(socket.gaierror(-3, "Temporary failure in name resolution"))
    asked = _fake_web(monkeypatch, {url + "t10k-images-idx3-ubyte.gz": lambda: offline
                                    for url in registry.REGISTRY["mnist"].urls})
    with pytest.raises(DataError) as err:
        data.load_arrays("mnist", "test")
    message = str(err.value)
    mirrors = [url + "t10k-images-idx3-ubyte.gz" for url in registry.REGISTRY["mnist"].urls]
    assert asked == mirrors and len(mirrors) == 2
    assert all(f"{m}: [Errno -3] Temporary failure in name resolution" in message
               for m in mirrors)
    assert "pass data_dir=..." in message and "--data-dir DIR" in message
    assert _cache_listing(tmp_path) == ["mnist"]


def test_an_unusable_cache_directory_is_a_data_error(tmp_path, monkeypatch):
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("a file where the cache should be")
    monkeypatch.setenv("TFVAE_CACHE_DIR", str(blocker))
    asked = _fake_web(monkeypatch, {})
    with pytest.raises(DataError, match=rf"cannot create the cache directory {blocker}/mnist .*"
                                        "Set TFVAE_CACHE_DIR to a writable directory.*data_dir="):
        data.load_arrays("mnist", "test")
    assert asked == []


# ---------------------------------------------------------------- local checksums


def _mnist_labels_gz(n=20) -> tuple[bytes, np.ndarray]:
    labels = np.random.default_rng(4).integers(0, 10, n, dtype=np.uint8)
    return gzip.compress(_idx((n,), labels.tobytes()), mtime=0), labels


def test_verify_names_the_corrupt_file_and_says_what_to_do(tmp_path, monkeypatch):
    """_verify_local: data_dir and cache files alike are hashed (with verify=True) and a
    mismatch names the file, both digests and the remedy; no download is attempted."""
    blob, _ = _mnist_labels_gz()
    spec = registry.REGISTRY["mnist"]
    good = "sha256:" + hashlib.sha256(blob).hexdigest()
    images = gzip.compress(_idx((20, 1, 1), bytes(20)), mtime=0)
    monkeypatch.setitem(registry.REGISTRY, "mnist", dataclasses.replace(spec, checksums={
        "t10k-images-idx3-ubyte.gz": ("sha256:" + hashlib.sha256(images).hexdigest(),),
        "t10k-labels-idx1-ubyte.gz": (good,)}))
    asked = _fake_web(monkeypatch, {})
    corrupt = blob[:-1] + bytes([blob[-1] ^ 1])
    actual = hashlib.sha256(corrupt).hexdigest()
    local = tmp_path / "local"
    cache = tmp_path / "cache" / "mnist"
    for directory, remedy in ((local, "replace it with an intact copy, or load without "
                                      "verify=True"),
                              (cache, "delete it to download it again")):
        directory.mkdir(parents=True)
        (directory / "t10k-images-idx3-ubyte.gz").write_bytes(images)
        path = directory / "t10k-labels-idx1-ubyte.gz"
        path.write_bytes(corrupt)
        data_dir = local if directory == local else None
        with pytest.raises(DataError) as err:
            data.load_arrays("mnist", "test", data_dir=data_dir, verify=True)
        message = str(err.value)
        assert message.startswith(f"checksum mismatch for {path}: expected {good}, "
                                  f"got sha256:{actual}")
        assert message.endswith(remedy)
        # Without verify the bytes are parsed, and the corruption is found by the reader.
        with pytest.raises(DataError, match=f"^{path}: expected a valid gzip file"):
            data.load_arrays("mnist", "test", data_dir=data_dir)
    assert asked == []


# ---------------------------------------------------------------- preset YAML

_TINY = ("model: {class: vae, data_shape: [16], latent_dim: 2, encoder: {type: mlp, hidden: [8]},"
         " decoder: {type: mlp, hidden: [8]}, likelihood: bernoulli}\n")


def _yaml(tmp_path, text) -> str:
    path = tmp_path / "preset.yaml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("edit, message", [
    (("latent_dim: 2", "latnt_dim: 2"),
     "preset 'preset', model 'vae': unknown key 'latnt_dim'. Did you mean 'latent_dim'"),
    (("latent_dim: 2", "latent_dim: 0"), r"model 'vae': 'latent_dim' must be an integer \(> 0\), "
                                         "got 0"),
    (("latent_dim: 2", "latent_dim: '2'"), r"'latent_dim' must be an integer \(> 0\), got '2'"),
    (("latent_dim: 2", "latent_dim: 2.5"), r"'latent_dim' must be an integer \(> 0\), got 2.5"),
    (("data_shape: [16]", "data_shape: [16, -1]"), "model 'vae': 'data_shape' must be .*got "
                                                   r"\[16, -1\]"),
    (("hidden: [8]}, d", "hidden: [-8]}, d"), r"network 'mlp': 'hidden' must be .*got \[-8\]"),
    ((_TINY, _TINY + "training: {batch_size: -5}\n"),
     r"training section: 'batch_size' must be an integer \(> 0\), got -5"),
    ((_TINY, _TINY + "data: {labels: 'yes'}\n"), "data section: 'labels' must be true or false"),
    ((_TINY, _TINY + "evaluation: {k: 0.5}\n"), "evaluation section: 'k' must be an integer"),
    ((_TINY, _TINY + "training: [1, 2]\n"), "'training' must be a mapping or null, got"),
])
def test_bad_values_in_a_preset_file_name_the_key(tmp_path, edit, message):
    """The YAML-file route (load_preset + build); tests/test_presets.py covers overrides."""
    path = _yaml(tmp_path, _TINY.replace(*edit) if edit[0] != _TINY else edit[1])
    with pytest.raises(ConfigError, match=message):
        tfvae.from_preset(path, compile=False)


@pytest.mark.parametrize("payload", [
    "!!python/object/apply:os.mkdir [{marker}]",
    "!!python/object/apply:os.system ['mkdir {marker}']",
    "!!python/object/new:os.mkdir [{marker}]",
    "!!python/name:os.system ''",
], ids=["apply", "apply-shell", "new", "name"])
@pytest.mark.parametrize("route", ["yaml file", "run directory"])
def test_python_tags_are_refused_and_never_run(tmp_path, payload, route):
    marker = tmp_path / "pwned"
    text = _TINY + f"training: {{epochs: {payload.format(marker=marker)}}}\n"
    if route == "yaml file":
        path = _yaml(tmp_path, text)
        source = path
    else:
        run = tmp_path / "run"
        run.mkdir()
        source = str(run / "config.yaml")
        Path(source).write_text(text)
        path = str(run)
    with pytest.raises(ConfigError, match=rf"^{source} is not valid YAML: could not determine a "
                                          r"constructor for the tag .*python/"):
        tfvae.load_preset(path)
    assert not marker.exists()


def test_the_python_tag_payload_is_live_under_an_unsafe_loader(tmp_path):
    """Control for the test above: the same text does run code when not loaded safely."""
    marker = tmp_path / "pwned"
    yaml.unsafe_load(f"epochs: !!python/object/apply:os.mkdir [{marker}]\n")
    assert marker.is_dir()


def test_an_infinite_learning_rate_is_rejected(tmp_path):
    with pytest.raises(ConfigError, match="'learning_rate' must be a number"):
        tfvae.load_preset(_yaml(tmp_path, _TINY + "training: {learning_rate: .inf}\n"))


def test_a_non_string_model_class_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="'class'"):
        tfvae.load_preset(_yaml(tmp_path, "model: {class: [vae]}\n"))


def test_a_non_utf8_preset_file_is_a_config_error_naming_it(tmp_path):
    path = tmp_path / "preset.yaml"
    path.write_bytes(_TINY.encode() + b"# caf\xe9 in latin-1\n")
    with pytest.raises(ConfigError, match=f"{path}"):
        tfvae.load_preset(str(path))


# ---------------------------------------------------------------- weights


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory):
    """A tiny model's preset file and saved weights (latent_dim 2)."""
    directory = tmp_path_factory.mktemp("weights")
    preset = directory / "tiny.yaml"
    preset.write_text(_TINY)
    model = tfvae.from_preset(str(preset), compile=False)
    for v in model.trainable_variables:
        v.assign(v + 0.5)
    path = str(directory / "tiny.weights.h5")
    model.save_weights(path)
    return str(preset), path


def test_weights_of_another_latent_dim_raise_a_value_error(tiny_weights):
    preset, path = tiny_weights
    model = tfvae.from_preset(preset, compile=False, latent_dim=3)
    with pytest.raises(ValueError, match=rf"the weights in {path} do not fit model 'vae' as "
                                         "configured: .*(hidden0|params)"):
        tfvae.presets.load_weights(model, path)


def test_weights_mismatch_names_the_variable_with_both_shapes_and_loads_nothing(tiny_weights):
    preset, path = tiny_weights
    model = tfvae.from_preset(preset, compile=False, latent_dim=3)
    before = [v.numpy().copy() for v in model.weights]
    with pytest.raises(ValueError) as err:
        tfvae.presets.load_weights(model, path)
    message = str(err.value)
    # latent_dim 2 -> 3 changes the decoder's first kernel (2, 8) -> (3, 8) (and the encoder's
    # output layer, (8, 4) -> (8, 6)): the message must say which, and both shapes.
    assert "decoder" in message or "encoder" in message
    assert ("(2, 8)" in message and "(3, 8)" in message) or (
        "(8, 4)" in message and "(8, 6)" in message)
    for v, old in zip(model.weights, before):   # no layer half-loaded
        np.testing.assert_array_equal(v.numpy(), old, err_msg=v.path)


@pytest.mark.parametrize("corruption", ["truncated", "garbage"])
def test_a_corrupt_weights_file_is_a_value_error_naming_it(tiny_weights, tmp_path, corruption):
    preset, path = tiny_weights
    bad = tmp_path / "bad.weights.h5"
    blob = Path(path).read_bytes()
    bad.write_bytes(blob[:len(blob) // 3] if corruption == "truncated" else os.urandom(2000))
    model = tfvae.from_preset(preset, compile=False)
    with pytest.raises(ValueError, match=str(bad)):
        tfvae.presets.load_weights(model, str(bad))
