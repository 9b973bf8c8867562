"""Tests of tfvae.data against the reference files in the shared data folder.

The folder is found through $TFVAE_SHARED_DATA (default <repo>/../shared/data).
Nothing here touches the network except servers on 127.0.0.1 started by the
tests themselves.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import http.server
import os
import shutil
import socket
import struct
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from tfvae import data
from tfvae.data import DataError, registry, shapes
from tfvae.data.amat import read_amat
from tfvae.data.idx import read_idx

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TFVAE_SHARED_DATA", ROOT.parent / "shared" / "data"))
AMAT_TEST = "binarized_mnist_test.amat"


def _shared(sub: str) -> Path:
    path = SHARED / sub
    assert path.is_dir(), f"reference data not found at {path} (set TFVAE_SHARED_DATA)"
    return path


pytestmark = pytest.mark.usefixtures("isolated_cache")   # empty cache, no proxy


@pytest.fixture(scope="module")
def bmnist_dir():
    return _shared("binarized_mnist")


@pytest.fixture(scope="module")
def mnist_dir():
    return _shared("mnist")


@pytest.fixture(scope="module")
def bmnist_test(bmnist_dir):
    images, labels = data.load_arrays("binarized_mnist", "test", data_dir=bmnist_dir)
    assert labels is None
    return images


@pytest.fixture(scope="module")
def mnist_test(mnist_dir):
    return data.load_arrays("mnist", "test", data_dir=mnist_dir)


@pytest.fixture(scope="module")
def mnist_as_train(mnist_dir, tmp_path_factory):
    """A data_dir whose MNIST "train" files are the test files (no train set is shared)."""
    directory = tmp_path_factory.mktemp("mnist_train")
    for kind in ("images-idx3", "labels-idx1"):
        (directory / f"train-{kind}-ubyte.gz").symlink_to(mnist_dir / f"t10k-{kind}-ubyte.gz")
    return directory


def _batches(ds):
    return [b.numpy() for b in ds]


def _row_index(images: np.ndarray) -> dict[bytes, int]:
    return {row.tobytes(): i for i, row in enumerate(images.astype(np.uint8))}


def _indices(batch: np.ndarray, index: dict[bytes, int]) -> np.ndarray:
    return np.array([index[row.tobytes()] for row in batch.astype(np.uint8)])


# ---------------------------------------------------------------- registry


def test_list_and_info():
    assert data.list_datasets() == ["binarized_mnist", "dsprites", "fashion_mnist", "mnist",
                                    "shapes", "shapes64"]
    meta = data.info("binarized_mnist")
    assert isinstance(meta, data.DatasetInfo)
    assert (meta.shape, meta.splits, meta.binary, meta.num_classes) == (
        (28, 28, 1), ("train", "valid", "test"), True, 0)
    assert meta.files["test"] == (AMAT_TEST,)
    assert data.info("mnist").default_binarize == "dynamic"
    assert data.info("fashion_mnist").default_binarize is None
    assert data.info("shapes").files == {"train": (), "valid": (), "test": ()}
    assert data.info("shapes").splits == ("train", "valid", "test")
    assert meta.factor_names == () and meta.factor_sizes == ()
    for name in ("shapes", "shapes64", "dsprites"):
        assert data.info(name).factor_names == ("shape", "scale", "orientation", "pos_x", "pos_y")
        assert data.info(name).factor_sizes == (3, 6, 40, 32, 32)
    with pytest.raises(dataclasses.FrozenInstanceError):
        meta.name = "other"


def test_unknown_dataset_suggests_close_match():
    with pytest.raises(DataError, match="binarized_mnist") as err:
        data.info("binarised_mnist")
    assert "Did you mean" in str(err.value) and "fashion_mnist" in str(err.value)
    with pytest.raises(DataError, match="shapes"):
        data.load("shape")


def test_embedded_checksums_match_reference_files(bmnist_dir, mnist_dir):
    for spec, directory in ((registry.REGISTRY["binarized_mnist"], bmnist_dir),
                            (registry.REGISTRY["mnist"], mnist_dir)):
        for path in sorted(directory.iterdir()):
            sha = hashlib.sha256(path.read_bytes()).hexdigest()
            assert f"sha256:{sha}" in spec.checksums[path.name], path.name


# ---------------------------------------------------------------- .amat


def test_binarized_mnist_splits(bmnist_dir, bmnist_test):
    train, _ = data.load_arrays("binarized_mnist", "train", data_dir=bmnist_dir)
    assert train.shape == (50000, 28, 28, 1) and train.dtype == np.float32
    assert round(float(train.mean()), 4) == 0.1306  # published train pixel mean
    valid, _ = data.load_arrays("binarized_mnist", "valid", data_dir=bmnist_dir)
    assert valid.shape == bmnist_test.shape == (10000, 28, 28, 1)
    assert set(np.unique(bmnist_test)) == {0.0, 1.0}


def test_amat_parser_agrees_with_loadtxt(bmnist_dir, bmnist_test):
    with open(bmnist_dir / AMAT_TEST) as f:
        head = np.loadtxt([next(f) for _ in range(300)])
    np.testing.assert_array_equal(bmnist_test[:300].reshape(300, 784), head)


def test_amat_irregular_spacing(tmp_path):
    rng = np.random.default_rng(1)
    values = rng.integers(0, 2, size=(3, 784))
    lines = ["  ".join(map(str, row)) + " " for row in values]
    path = tmp_path / "loose.amat"
    path.write_text("\n".join(lines))  # double spaces, trailing space, no final newline
    np.testing.assert_array_equal(read_amat(path), values)


@pytest.mark.parametrize("content, where, what", [
    ("0 " * 783 + "1\n" + "0 " * 700 + "1\n", "line 2", "expected 784 values, found 701"),
    ("0 " * 783 + "1\n" + "0 " * 783 + "2\n", "line 2", "found b'2'"),
    ("0 " * 783 + "1\n" + "0 " * 100, "line 2", "truncated"),
    ("0 " * 783 + "10\n", "line 1", "multi-digit"),
    ("", "", "empty file"),
])
def test_amat_corrupt_files(tmp_path, content, where, what):
    (tmp_path / AMAT_TEST).write_text(content)
    with pytest.raises(DataError) as err:
        data.load_arrays("binarized_mnist", "test", data_dir=tmp_path)
    message = str(err.value)
    assert AMAT_TEST in message and where in message and what in message


# ---------------------------------------------------------------- IDX


def test_idx_t10k(mnist_dir, mnist_test):
    raw = read_idx(mnist_dir / "t10k-images-idx3-ubyte.gz")
    assert raw.shape == (10000, 28, 28) and raw.dtype == np.uint8
    blob = gzip.decompress((mnist_dir / "t10k-images-idx3-ubyte.gz").read_bytes())
    assert struct.unpack(">4i", blob[:16]) == (2051, 10000, 28, 28)
    np.testing.assert_array_equal(raw.reshape(-1), np.frombuffer(blob[16:], np.uint8))
    images, labels = mnist_test
    assert images.shape == (10000, 28, 28, 1) and images.dtype == np.float32
    np.testing.assert_allclose(images[..., 0], raw / 255.0, atol=1e-7)
    assert labels.dtype == np.int64 and labels[:5].tolist() == [7, 2, 1, 0, 4]
    assert np.bincount(labels).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028,
                                            974, 1009]  # MNIST test class counts


def test_idx_uncompressed_copy_loads_identically(mnist_dir, mnist_test, tmp_path):
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        blob = gzip.decompress((mnist_dir / f"{name}.gz").read_bytes())
        (tmp_path / name).write_bytes(blob)
    images, labels = data.load_arrays("mnist", "test", data_dir=tmp_path)
    np.testing.assert_array_equal(images, mnist_test[0])
    np.testing.assert_array_equal(labels, mnist_test[1])


def _idx_copy(mnist_dir, tmp_path, edit_images=None, edit_labels=None):
    for name, edit in (("t10k-images-idx3-ubyte", edit_images),
                       ("t10k-labels-idx1-ubyte", edit_labels)):
        blob = gzip.decompress((mnist_dir / f"{name}.gz").read_bytes())
        (tmp_path / name).write_bytes(edit(blob) if edit else blob)


def test_idx_wrong_magic(mnist_dir, tmp_path):
    _idx_copy(mnist_dir, tmp_path, edit_images=lambda b: struct.pack(">i", 2049) + b[4:])
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte: expected IDX magic "
                                        r"number 2051, found 2049"):
        data.load_arrays("mnist", "test", data_dir=tmp_path)


def test_idx_truncated_payload(mnist_dir, tmp_path):
    _idx_copy(mnist_dir, tmp_path, edit_images=lambda b: b[:-1000])
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte: .*truncated payload"):
        data.load_arrays("mnist", "test", data_dir=tmp_path)


def test_idx_truncated_gzip(mnist_dir, tmp_path):
    blob = (mnist_dir / "t10k-images-idx3-ubyte.gz").read_bytes()
    (tmp_path / "t10k-images-idx3-ubyte.gz").write_bytes(blob[: len(blob) // 2])
    shutil.copy(mnist_dir / "t10k-labels-idx1-ubyte.gz", tmp_path)
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte\.gz: expected a valid gzip"):
        data.load_arrays("mnist", "test", data_dir=tmp_path)


def test_idx_images_labels_count_mismatch(mnist_dir, tmp_path):
    _idx_copy(mnist_dir, tmp_path,
              edit_labels=lambda b: struct.pack(">ii", 2049, 9999) + b[8:-1])
    with pytest.raises(DataError, match="10000 images .* 9999 labels"):
        data.load_arrays("mnist", "test", data_dir=tmp_path)


# ---------------------------------------------------------------- files


def test_missing_file_in_data_dir(mnist_dir, tmp_path):
    shutil.copy(mnist_dir / "t10k-images-idx3-ubyte.gz", tmp_path)
    with pytest.raises(DataError) as err:
        data.load("mnist", "test", data_dir=tmp_path)
    message = str(err.value)
    assert "t10k-labels-idx1-ubyte.gz" in message and str(tmp_path) in message
    assert "t10k-images" not in message  # only the missing file is named


def test_no_download_and_empty_cache():
    with pytest.raises(DataError, match="download=False.*data_dir"):
        data.load_arrays("fashion_mnist", "test", download=False)


def test_verify_hashes_local_files(mnist_dir, tmp_path):
    data.load_arrays("mnist", "test", data_dir=mnist_dir, verify=True)
    shutil.copy(mnist_dir / "t10k-images-idx3-ubyte.gz", tmp_path)
    labels = gzip.decompress((mnist_dir / "t10k-labels-idx1-ubyte.gz").read_bytes())
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(labels, mtime=1))
    data.load_arrays("mnist", "test", data_dir=tmp_path)  # same content: loads
    with pytest.raises(DataError, match="checksum mismatch .*t10k-labels"):
        data.load_arrays("mnist", "test", data_dir=tmp_path, verify=True)


# ---------------------------------------------------------------- download


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def server(tmp_path):
    """An HTTP server on 127.0.0.1 serving tmp_path/'served'; yields (base URL, dir)."""
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(_QuietHandler, directory=str(served))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/", served
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def _closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/"


def _use_mirrors(monkeypatch, urls, checksums):
    spec = registry.REGISTRY["binarized_mnist"]
    patched = dataclasses.replace(spec, urls=tuple(urls),
                                  checksums={AMAT_TEST: tuple(checksums)})
    monkeypatch.setitem(registry.REGISTRY, "binarized_mnist", patched)


def _serve_small_amat(served: Path) -> tuple[np.ndarray, bytes]:
    values = np.random.default_rng(2).integers(0, 2, size=(4, 784))
    blob = "".join(" ".join(map(str, row)) + "\n" for row in values).encode()
    (served / AMAT_TEST).write_bytes(blob)
    return values, blob


def _cache_files(tmp_path) -> list[str]:
    cache = tmp_path / "cache"
    return sorted(p.name for p in cache.rglob("*")) if cache.exists() else []


def test_download_verifies_and_caches(server, tmp_path, monkeypatch, capfd):
    url, served = server
    values, blob = _serve_small_amat(served)
    md5 = hashlib.md5(blob).hexdigest()
    _use_mirrors(monkeypatch, [_closed_port_url(), url], [f"md5:{md5}"])
    images, labels = data.load_arrays("binarized_mnist", "test")
    np.testing.assert_array_equal(images.reshape(4, 784), values)
    cached = tmp_path / "cache" / "binarized_mnist" / AMAT_TEST
    assert cached.read_bytes() == blob and _cache_files(tmp_path) == [
        "binarized_mnist", AMAT_TEST]
    assert "downloading" in capfd.readouterr().err
    (served / AMAT_TEST).unlink()  # now served from the cache only
    again, _ = data.load_arrays("binarized_mnist", "test", download=False)
    np.testing.assert_array_equal(again, images)


def test_download_checksum_mismatch_leaves_nothing(server, tmp_path, monkeypatch):
    url, served = server
    _, blob = _serve_small_amat(served)
    wrong = "0" * 64
    _use_mirrors(monkeypatch, [url], [f"sha256:{wrong}"])
    with pytest.raises(DataError) as err:
        data.load_arrays("binarized_mnist", "test")
    message = str(err.value)
    assert wrong in message and hashlib.sha256(blob).hexdigest() in message
    assert url + AMAT_TEST in message
    assert _cache_files(tmp_path) == ["binarized_mnist"]  # the directory, no file


def test_download_unreachable_gives_offline_error(server, tmp_path, monkeypatch):
    url, _ = server  # serves nothing: a 404
    closed = _closed_port_url()
    _use_mirrors(monkeypatch, [closed, url], ["sha256:" + "0" * 64])
    with pytest.raises(DataError) as err:
        data.load("binarized_mnist", "test")
    message = str(err.value)
    assert message.startswith(f"could not download {AMAT_TEST} for dataset "
                              "'binarized_mnist'")
    assert closed + AMAT_TEST in message and "404" in message
    assert "data_dir=" in message and "--data-dir" in message
    assert _cache_files(tmp_path) == ["binarized_mnist"]


# ---------------------------------------------------------------- pipelines


def test_unshuffled_eval_pipeline_follows_file_order(bmnist_dir, bmnist_test):
    batches = _batches(data.load("binarized_mnist", "test", data_dir=bmnist_dir,
                                 batch_size=300))
    assert [len(b) for b in batches] == [300] * 33 + [100]
    np.testing.assert_array_equal(np.concatenate(batches), bmnist_test)
    kept = _batches(data.load("binarized_mnist", "test", data_dir=bmnist_dir,
                              batch_size=300, drop_remainder=True))
    assert [len(b) for b in kept] == [300] * 33


def test_shuffle_covers_the_whole_ordered_split(bmnist_dir, bmnist_test):
    index = _row_index(bmnist_test.reshape(10000, -1))
    ds = data.load("binarized_mnist", "test", data_dir=bmnist_dir, shuffle=True, seed=3)
    first, second = _batches(ds), _batches(ds)
    # The test file is sorted by class in blocks of about 1000: the first batch
    # must draw from all over the file, not from the first block.
    assert len(set(_indices(first[0].reshape(100, -1), index) // 1000)) >= 8
    assert sorted(r.tobytes() for r in np.concatenate(first)) == sorted(
        r.tobytes() for r in bmnist_test)  # each example exactly once per epoch
    assert not np.array_equal(first[0], second[0])  # reshuffled every epoch
    again = _batches(data.load("binarized_mnist", "test", data_dir=bmnist_dir,
                               shuffle=True, seed=3))
    np.testing.assert_array_equal(np.concatenate(again), np.concatenate(first))
    other = next(iter(data.load("binarized_mnist", "test", data_dir=bmnist_dir,
                                shuffle=True, seed=4))).numpy()
    assert not np.array_equal(other, first[0])


def test_train_split_shuffled_by_default_with_labels(mnist_as_train, mnist_test):
    images, labels = mnist_test
    ds = data.load("mnist", "train", data_dir=mnist_as_train, labels=True,
                   binarize="none", batch_size=100)
    x, y = next(iter(ds))
    x, y = x.numpy(), y.numpy()
    assert y.shape == (100, 10) and set(np.unique(y)) == {0.0, 1.0}
    assert (y.sum(axis=1) == 1).all() and len(set(y.argmax(1))) >= 8
    rows = _indices((x * 255).round().reshape(100, -1),
                    _row_index((images * 255).round().reshape(10000, -1)))
    assert not np.array_equal(rows, np.arange(100))
    np.testing.assert_array_equal(y.argmax(1), labels[rows])  # pairs stay aligned


def test_labels_one_hot_in_file_order(mnist_dir, mnist_test):
    ds = data.load("mnist", "test", data_dir=mnist_dir, labels=True, batch_size=1000)
    y = np.concatenate([b[1].numpy() for b in ds])
    np.testing.assert_array_equal(y.argmax(1), mnist_test[1])
    with pytest.raises(DataError, match="no labels"):
        data.load("binarized_mnist", "test", data_dir=mnist_dir, labels=True)


def test_max_examples_is_a_random_subset(bmnist_dir, bmnist_test):
    index = _row_index(bmnist_test.reshape(10000, -1))

    def subset(seed):
        ds = data.load("binarized_mnist", "test", data_dir=bmnist_dir, max_examples=500,
                       seed=seed, batch_size=128)
        return _indices(np.concatenate(_batches(ds)).reshape(500, -1), index)

    rows = subset(0)
    assert len(set(rows)) == 500 and len(set(rows // 1000)) == 10  # not the first 500
    np.testing.assert_array_equal(subset(0), rows)
    assert set(subset(1)) != set(rows)


def test_tuple_of_splits(bmnist_dir):
    test, valid = data.load("binarized_mnist", ("test", "valid"), data_dir=bmnist_dir,
                            batch_size=10000)
    assert next(iter(test)).shape == next(iter(valid)).shape == (10000, 28, 28, 1)
    assert not np.array_equal(next(iter(test)), next(iter(valid)))
    with pytest.raises(DataError, match="expected one of train, valid, test"):
        data.load("binarized_mnist", ("test", "tset"), data_dir=bmnist_dir)


def test_each_split_of_a_tuple_can_have_its_own_batch_size(bmnist_dir, bmnist_test):
    valid, test = data.load("binarized_mnist", ("valid", "test"), data_dir=bmnist_dir, batch_size=(3000, 4000))
    assert [b.shape[0] for b in valid] == [3000, 3000, 3000, 1000]
    test_batches = list(test)
    assert [b.shape[0] for b in test_batches] == [4000, 4000, 2000]
    np.testing.assert_array_equal(np.concatenate(test_batches), bmnist_test)     # file order, all of it
    for sizes in ((100,), (100, 200, 300), (100, 0)):
        with pytest.raises(ValueError, match="batch_size must be"):
            data.load("binarized_mnist", ("valid", "test"), data_dir=bmnist_dir, batch_size=sizes)
    with pytest.raises(ValueError, match="one per split of a tuple of splits"):
        data.load("binarized_mnist", "test", data_dir=bmnist_dir, batch_size=(100,))


def test_binarizing_binary_data_is_a_no_op(bmnist_dir, bmnist_test):
    for mode in ("static", "dynamic"):
        ds = data.load("binarized_mnist", "test", data_dir=bmnist_dir, binarize=mode,
                       batch_size=10000)
        np.testing.assert_array_equal(next(iter(ds)).numpy(), bmnist_test)


def test_dynamic_binarization_of_train_batches(mnist_as_train, mnist_test):
    def epochs(seed, count):
        ds = data.load("mnist", "train", data_dir=mnist_as_train, shuffle=False,
                       max_examples=200, seed=seed)
        return np.stack([np.concatenate(_batches(ds)) for _ in range(count)])

    keep = np.sort(np.random.default_rng(0).permutation(10000)[:200])
    gray = mnist_test[0][keep]
    draws = epochs(0, 300)  # binarize=None: mnist's default is "dynamic"
    assert set(np.unique(draws)) == {0.0, 1.0}
    assert not np.array_equal(draws[0], draws[1])  # a new draw every epoch
    assert not np.array_equal(draws[0][:100], draws[0][100:])
    # The average of many draws approaches the grayscale values (std <= 0.029).
    assert abs(draws.mean() - gray.mean()) < 0.003
    assert np.abs(draws.mean(axis=0) - gray).max() < 0.15
    assert np.abs(draws.mean(axis=0) - gray).mean() < 0.02
    np.testing.assert_array_equal(epochs(0, 3), draws[:3])  # reproducible from seed
    assert not np.array_equal(epochs(1, 1)[0], draws[0])


def test_dynamic_binarization_with_shuffle_is_reproducible(mnist_as_train):
    def two_epochs(seed):
        ds = data.load("mnist", "train", data_dir=mnist_as_train, seed=seed,
                       max_examples=1000, labels=True)
        return [np.concatenate([x.numpy() for x, _ in ds]) for _ in range(2)]

    first, second = two_epochs(0)
    assert not np.array_equal(first, second)
    for a, b in zip(two_epochs(0), (first, second)):
        np.testing.assert_array_equal(a, b)


def test_an_endless_stream_started_at_batch_g_is_the_stream_from_0_without_its_first_g(mnist_as_train):
    # The resumable training stream: shuffled passes of 250 examples in batches of 100 (3 per
    # pass, the last of 50), each batch binarized afresh, labels riding along.
    def stream(start, count, seed=0):
        ds = data.load("mnist", "train", data_dir=mnist_as_train, seed=seed, max_examples=250,
                       labels=True, stream_from=start)
        return [(x.numpy(), y.numpy()) for x, y in ds.take(count)]

    whole = stream(0, 12)
    assert [len(x) for x, _ in whole] == [100, 100, 50] * 4
    for x, _ in whole:
        assert set(np.unique(x)) <= {0.0, 1.0}
    # Each pass holds every example once, in its own order, with its own binarization.
    keep = np.sort(np.random.default_rng(0).permutation(10000)[:250])
    _, file_labels = data.load_arrays("mnist", "train", data_dir=mnist_as_train)
    passes = [np.concatenate([y.argmax(1) for _, y in whole[i:i + 3]]) for i in range(0, 12, 3)]
    for labels in passes:
        assert sorted(labels) == sorted(file_labels[keep])
    assert not np.array_equal(passes[0], passes[1])
    images = [np.concatenate([x for x, _ in whole[i:i + 3]]) for i in range(0, 12, 3)]
    assert not np.array_equal(np.sort(images[0].reshape(250, -1), 0), np.sort(images[1].reshape(250, -1), 0))
    for start in (1, 3, 5, 7):      # mid-pass, a pass boundary, later passes
        for (x, y), (x0, y0) in zip(stream(start, 12 - start), whole[start:], strict=True):
            np.testing.assert_array_equal(x, x0)
            np.testing.assert_array_equal(y, y0)
    again = stream(0, 12)           # every iterator reads the same stream; the seed picks it
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(again, whole))
    assert not np.array_equal(stream(0, 1, seed=1)[0][0], whole[0][0])


def test_an_endless_stream_starts_far_on_at_once():
    # Starting at batch 10**9 (100 million passes of 10 batches) must not replay them: it takes
    # about as long as starting at 0. Its batches are the data's rows, and the stream from two
    # batches earlier reaches the same ones.
    images = data.load_arrays("shapes", "test[:95]")[0]
    far = 10 ** 9

    def stream(start, count):
        ds = data.load("shapes", "test[:95]", batch_size=10, train_split="test[:95]", stream_from=start)
        return [x.numpy() for x in ds.take(count)]

    began = time.perf_counter()
    batches = stream(far, 12)
    assert time.perf_counter() - began < 20
    assert [len(x) for x in batches] == [10] * 9 + [5, 10, 10]    # batch 10**9 opens a pass
    rows = {row.tobytes() for row in images.reshape(95, -1)}
    assert all(row.tobytes() in rows for x in batches for row in x.reshape(len(x), -1))
    for x, x0 in zip(stream(far - 2, 14)[2:], batches, strict=True):
        np.testing.assert_array_equal(x, x0)


def test_dynamic_binarization_of_eval_split_is_fixed(mnist_dir, mnist_test):
    ds = data.load("mnist", "test", data_dir=mnist_dir, binarize="dynamic",
                   batch_size=10000, seed=5)
    first, second = next(iter(ds)).numpy(), next(iter(ds)).numpy()
    np.testing.assert_array_equal(first, second)
    again = data.load("mnist", "test", data_dir=mnist_dir, batch_size=10000, seed=5)
    np.testing.assert_array_equal(next(iter(again)).numpy(), first)
    assert set(np.unique(first)) == {0.0, 1.0}
    assert abs(first.mean() - mnist_test[0].mean()) < 0.002


def test_static_and_raw_values(mnist_as_train, mnist_test):
    ds = data.load("mnist", "train", data_dir=mnist_as_train, binarize="static",
                   shuffle=False, batch_size=10000)
    first, second = next(iter(ds)).numpy(), next(iter(ds)).numpy()
    np.testing.assert_array_equal(first, second)  # one draw for all epochs
    assert set(np.unique(first)) == {0.0, 1.0}
    assert abs(first.mean() - mnist_test[0].mean()) < 0.002
    raw = data.load("mnist", "train", data_dir=mnist_as_train, binarize="none",
                    shuffle=False, batch_size=10000)
    np.testing.assert_array_equal(next(iter(raw)).numpy(), mnist_test[0])


@pytest.mark.parametrize("kwargs, message", [
    ({"batch_size": 0}, "batch_size must be a positive integer"),
    ({"batch_size": 2.5}, "batch_size must be a positive integer"),
    ({"binarize": "yes"}, "binarize must be one of"),
    ({"shuffle": "always"}, "shuffle must be None, True or False"),
    ({"seed": -1}, "seed must be an integer >= 0"),
    ({"max_examples": 0}, "max_examples must be None or a positive integer"),
    ({"split": ()}, "split must be"),
    ({"stream_from": -1}, "stream_from must be a batch index"),
    ({"stream_from": 2.0}, "stream_from must be a batch index"),
    ({"stream_from": True}, "stream_from must be a batch index"),
    ({"stream_from": 0, "split": ("train", "test")}, "one split as an endless stream"),
    ({"stream_from": 0, "split": "train[:5]", "batch_size": 10, "drop_remainder": True}, "make no batch of 10"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        data.load("shapes", **kwargs)


# ---------------------------------------------------------------- shapes


@pytest.fixture(scope="module")
def generated():
    return shapes.generate(3000, image_size=64, seed=7)


def _named_values(classes):
    return dict(zip(shapes.FACTOR_NAMES, shapes.factor_values(classes).T))


def test_shapes_generation_properties(generated):
    images, classes = generated
    assert images.shape == (3000, 64, 64, 1) and images.dtype == np.float32
    assert set(np.unique(images)) == {0.0, 1.0}
    assert images.reshape(3000, -1).sum(axis=1).min() > 0
    border = np.concatenate([images[:, 0], images[:, -1], images[:, :, 0],
                             images[:, :, -1]], axis=1)
    assert border.max() == 0  # every shape lies strictly inside the frame
    assert classes.shape == (3000, 5) and classes.dtype == np.int64
    for k, size in enumerate((3, 6, 40, 32, 32)):  # the dSprites grid
        assert set(classes[:, k]) == set(range(size)), shapes.FACTOR_NAMES[k]
    factors = _named_values(classes)
    assert set(factors["shape"]) == {0, 1, 2}
    assert np.allclose(sorted(set(factors["scale"])), [0.5, 0.6, 0.7, 0.8, 0.9, 1.0])
    assert factors["orientation"].min() == 0 and factors["orientation"].max() == 2 * np.pi
    for name in ("pos_x", "pos_y"):
        assert factors[name].min() == 0 and factors[name].max() == 1
        np.testing.assert_allclose(np.diff(np.unique(factors[name])), 1 / 31)
    again, classes_again = shapes.generate(3000, image_size=64, seed=7)
    np.testing.assert_array_equal(again, images)
    np.testing.assert_array_equal(classes_again, classes)
    assert not np.array_equal(shapes.generate(10, 64, seed=8)[0], images[:10])


def test_shapes_match_their_factors(generated):
    """Area, centroid and ellipse axis measured on the pixels agree with the factors."""
    images, classes = generated
    f = _named_values(classes)
    size = 64
    pixels = images[..., 0]
    radius = f["scale"] * shapes.MAX_RADIUS * size
    area = {0: 2.0, 1: np.pi * shapes.ELLIPSE_MINOR, 2: 3 * np.sqrt(3) / 4}
    for kind, unit_area in area.items():
        sel = f["shape"] == kind
        ratio = pixels[sel].sum(axis=(1, 2)) / (unit_area * radius[sel] ** 2)
        assert abs(ratio.mean() - 1) < 0.02, (kind, ratio.mean())
    # All three shapes have their centroid at their centre.
    coords = np.arange(size) + 0.5
    mass = pixels.sum(axis=(1, 2))
    cx = (pixels.sum(axis=1) * coords).sum(axis=1) / mass
    cy = (pixels.sum(axis=2) * coords).sum(axis=1) / mass
    max_r = shapes.MAX_RADIUS * size
    span = size - 2 - 2 * max_r
    assert np.abs(cx - (1 + max_r + f["pos_x"] * span)).max() < 0.5
    assert np.abs(cy - (1 + max_r + f["pos_y"] * span)).max() < 0.5
    # The ellipse's major axis points along the orientation (x right, y down).
    sel = f["shape"] == 1
    p, x0, y0 = pixels[sel], cx[sel, None, None], cy[sel, None, None]
    dx, dy = coords[None, None, :] - x0, coords[None, :, None] - y0
    mxx, myy, mxy = ((p * m).sum(axis=(1, 2)) for m in (dx * dx, dy * dy, dx * dy))
    angle = 0.5 * np.arctan2(2 * mxy, mxx - myy)
    error = np.angle(np.exp(2j * (angle - f["orientation"][sel]))) / 2
    assert np.abs(error).max() < 0.1


def test_shapes_dataset(tmp_path):
    start = time.perf_counter()
    train_x, train_y = data.load_arrays("shapes", "train")
    valid_x, valid_y = data.load_arrays("shapes", "valid")
    test_x, test_y = data.load_arrays("shapes", "test")
    assert time.perf_counter() - start < 5.0
    assert train_x.shape == (20000, 28, 28, 1) and valid_x.shape == test_x.shape == (2000, 28, 28, 1)
    assert train_y.dtype == np.int64 and set(train_y) == {0, 1, 2}
    for split, (x, y) in {"train": (train_x, train_y), "valid": (valid_x, valid_y),
                          "test": (test_x, test_y)}.items():
        size, seed = registry.SHAPES_SPLITS[split]
        expected_x, classes = shapes.generate(size, image_size=28, seed=seed)
        np.testing.assert_array_equal(y, classes[:, 0])
        np.testing.assert_array_equal(x, expected_x)
        assert x.reshape(len(x), -1).sum(axis=1).min() > 0
        assert x[:, [0, -1]].max() == 0 and x[:, :, [0, -1]].max() == 0
    # Different seeds per split: no split repeats another's draws.
    assert not np.array_equal(train_x[:2000], test_x)
    assert not np.array_equal(valid_x, test_x) and not np.array_equal(valid_x, train_x[:2000])
    assert not list((tmp_path / "cache").glob("*"))  # no file, no download
    x, y = next(iter(data.load("shapes", "train", labels=True, seed=1)))
    assert x.shape == (100, 28, 28, 1) and y.shape == (100, 3)
    assert data.load_arrays("shapes", "train")[0].tobytes() == train_x.tobytes()


# ---------------------------------------------------------------- sliced splits


def _mnist_or_skip() -> Path:
    path = SHARED / "mnist"
    if not (path / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"the MNIST t10k files are not in {path} (set TFVAE_SHARED_DATA)")
    return path


def test_slices_of_the_shapes_split_partition_it():
    whole_x, whole_y = data.load_arrays("shapes", "test")
    head_x, head_y = data.load_arrays("shapes", "test[:1500]")
    tail_x, tail_y = data.load_arrays("shapes", "test[1500:]")
    assert (len(head_x), len(tail_x)) == (1500, 500) and (len(head_y), len(tail_y)) == (1500, 500)
    # Rows 0..1499 and 1500..1999 in file order: disjoint and together the whole split, images
    # and labels aligned. (Shapes has repeated images, so this is checked by position.)
    np.testing.assert_array_equal(np.concatenate([head_x, tail_x]), whole_x)
    np.testing.assert_array_equal(np.concatenate([head_y, tail_y]), whole_y)
    # Negative and open bounds mean what they mean in Python; whitespace is tolerated.
    for text, expected in (("test[-300:]", slice(-300, None)), ("test[100:-100]", slice(100, -100)),
                           ("test[ : 7 ]", slice(None, 7)), ("test[:]", slice(None)),
                           ("test[-2000:2000]", slice(-2000, 2000))):
        x, y = data.load_arrays("shapes", text)
        np.testing.assert_array_equal(x, whole_x[expected], err_msg=text)
        np.testing.assert_array_equal(y, whole_y[expected], err_msg=text)


def test_a_union_of_splits_is_their_parts_in_order_and_trains_when_it_holds_train():
    train_x, train_y = data.load_arrays("shapes", "train")
    valid_x, valid_y = data.load_arrays("shapes", "valid")
    test_x, _ = data.load_arrays("shapes", "test")
    x, y = data.load_arrays("shapes", "train+valid")
    np.testing.assert_array_equal(x, np.concatenate([train_x, valid_x]))
    np.testing.assert_array_equal(y, np.concatenate([train_y, valid_y]))
    x, _ = data.load_arrays("shapes", " test[-5:] + train[:+3] ")      # slices, a signed bound, spaces
    np.testing.assert_array_equal(x, np.concatenate([test_x[-5:], train_x[:3]]))
    # Holding "train", the union is shuffled training data by default; the whole of it every pass.
    batch = next(iter(data.load("shapes", "train+valid", batch_size=len(train_x) + len(valid_x)))).numpy()
    assert not np.array_equal(batch, np.concatenate([train_x, valid_x]))
    assert sorted(r.tobytes() for r in batch) == sorted(r.tobytes() for r in np.concatenate([train_x, valid_x]))
    for bad, message in (("train+", "cannot read the union"), ("train+train", "names a split twice"),
                         ("train+vald", "no split 'vald'")):
        with pytest.raises(DataError, match=message):
            data.load_arrays("shapes", bad)
    with pytest.raises(DataError, match="one split at a time"):
        data.load_factors("shapes", "train+valid")


def test_sliced_pipelines_keep_file_order_and_train_on_the_chosen_split():
    whole_x, whole_y = data.load_arrays("shapes", "test")
    head, tail = data.load("shapes", ("test[:1500]", "test[1500:]"), labels=True, batch_size=1000)
    head_x = np.concatenate([x.numpy() for x, _ in head])
    tail_y = np.concatenate([y.numpy() for _, y in tail])
    # Not the training split: unshuffled, in file order.
    np.testing.assert_array_equal(head_x, whole_x[:1500])
    np.testing.assert_array_equal(tail_y.argmax(1), whole_y[1500:])
    # Named as the training split: shuffled each epoch, the same 1500 examples.
    train, test = data.load("shapes", ("test[:1500]", "test[1500:]"), batch_size=1500,
                            train_split="test[:1500]")
    first, second = next(iter(train)).numpy(), next(iter(train)).numpy()
    assert sorted(r.tobytes() for r in first) == sorted(r.tobytes() for r in whole_x[:1500])
    assert not np.array_equal(first, whole_x[:1500]) and not np.array_equal(first, second)
    np.testing.assert_array_equal(next(iter(test)).numpy(), whole_x[1500:])
    # A slice of "train" is training data by default.
    sliced_train = next(iter(data.load("shapes", "train[:300]", batch_size=300))).numpy()
    train_x = data.load_arrays("shapes", "train")[0][:300]
    assert not np.array_equal(sliced_train, train_x)
    assert sorted(r.tobytes() for r in sliced_train) == sorted(r.tobytes() for r in train_x)
    with pytest.raises(ValueError, match="train_split must be one of the requested splits"):
        data.load("shapes", ("test[:1500]", "test[1500:]"), train_split="test")


def test_slices_of_the_mnist_test_files():
    mnist = _mnist_or_skip()
    whole_x, whole_y = data.load_arrays("mnist", "test", data_dir=mnist)
    head_x, head_y = data.load_arrays("mnist", "test[:8000]", data_dir=mnist)
    tail_x, tail_y = data.load_arrays("mnist", "test[8000:]", data_dir=mnist)
    assert (len(head_x), len(tail_x)) == (8000, 2000)
    np.testing.assert_array_equal(np.concatenate([head_x, tail_x]), whole_x)
    np.testing.assert_array_equal(np.concatenate([head_y, tail_y]), whole_y)
    head_rows = set(_row_index((head_x * 255).round().reshape(8000, -1)))
    assert not head_rows & set(_row_index((tail_x * 255).round().reshape(2000, -1)))
    # The cvae preset's recipe: train on the first 8000 with dynamic binarization and
    # labels, evaluate on one fixed draw of the last 2000.
    train, test = data.load("mnist", ("test[:8000]", "test[8000:]"), data_dir=mnist, labels=True,
                            batch_size=8000, train_split="test[:8000]", seed=2)
    (x1, y1), (x2, _) = next(iter(train)), next(iter(train))
    assert x1.shape == (8000, 28, 28, 1) and y1.shape == (8000, 10)
    assert set(np.unique(x1.numpy())) == {0.0, 1.0} and not np.array_equal(x1, x2)
    assert abs(float(np.mean(x1)) - float(head_x.mean())) < 0.003
    (e1, ey), (e2, _) = next(iter(test)), next(iter(test))
    np.testing.assert_array_equal(e1, e2)
    np.testing.assert_array_equal(ey.numpy().argmax(1), tail_y)


@pytest.mark.parametrize("split, message", [
    ("tset", r"no split 'tset'; expected one of train, valid, test, optionally sliced"),
    ("val[:10]", r"no split 'val' \(in 'val\[:10\]'\); expected one of train, valid, test"),
    ("test[a:b]", r"cannot read the slice .*expected one of train, valid, test"),
    ("test[::2]", "no step"),
    ("test[5]", "cannot read the slice"),
    ("test[5:5]", "selects no examples of the 2000"),
    ("test[1500:100]", "selects no examples"),
    ("test[:2001]", r"bound 2001 is out of range .* \(allowed -2000..2000\)"),
    ("test[-2001:]", "bound -2001 is out of range"),
])
def test_bad_slices_say_what_is_valid(split, message):
    with pytest.raises(DataError, match=message):
        data.load_arrays("shapes", split)
    with pytest.raises(DataError, match=message):
        data.load("shapes", ("train", split))


@pytest.mark.parametrize("count, batch, drop, expected", [(10, 4, False, 3), (10, 4, True, 2), (8, 4, False, 2)])
def test_batches_know_their_count_and_cover_every_example_once_per_pass(count, batch, drop, expected):
    # train() counts an epoch's steps from the pipeline's cardinality; a pass holds every row once.
    from tfvae.data.pipeline import batches
    ds = batches(np.arange(count, dtype=np.float32), batch, shuffle=True, seed=1, drop_remainder=drop)
    assert int(ds.cardinality()) == expected
    first, second = [np.concatenate([b.numpy() for b in ds]) for _ in range(2)]
    assert len(first) == (expected * batch if drop else count) and len(set(first)) == len(first)
    if not drop:
        assert sorted(first) == sorted(second) == list(range(count)) and list(first) != list(second)
