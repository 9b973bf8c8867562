"""Tests of the factor grid of the generated shapes, the dSprites reader and tfvae.data.factors.

Rendering is checked against geometry worked out independently (pixel counts
by 1-D brute force, exact symmetries of the shapes, numpy's rot90 and
ravel_multi_index); the dSprites reader against small fake files written here
with the real keys; the sampler against the metrics' interface and MIG.
Nothing here touches the network.
"""

from __future__ import annotations

import numpy as np
import pytest

from tfvae import data
from tfvae.data import DataError, dsprites, registry, shapes
from tfvae.metrics import factor_vae_score, grid_sample_fn, mig

SIZES = (3, 6, 40, 32, 32)


pytestmark = pytest.mark.usefixtures("isolated_cache")   # empty cache, no proxy


def _one(shape, scale, orientation, pos_x, pos_y, size=64) -> np.ndarray:
    """One image [size, size] rendered from factor values (on the grid or not)."""
    return shapes.render_values([[shape, scale, orientation, pos_x, pos_y]], size)[0, ..., 0]


def _geometry(size):
    max_r = size / 4
    return max_r, size - 2 - 2 * max_r  # largest radius, travel of the centre


# ------------------------------------------------------------------------------ the grid


def test_classes_map_to_the_dsprites_grid_values():
    classes = np.array([[0, 0, 0, 0, 0], [2, 5, 39, 31, 31], [1, 2, 13, 10, 20]])
    expected = np.array([[0, 0.5, 0, 0, 0], [2, 1.0, 2 * np.pi, 1, 1],
                         [1, 0.7, 2 * np.pi * 13 / 39, 10 / 31, 20 / 31]])
    np.testing.assert_allclose(shapes.factor_values(classes), expected, rtol=1e-12)
    assert shapes.FACTOR_SIZES == SIZES and tuple(map(len, shapes.GRID)) == SIZES
    for bad, message in (([[0, 6, 0, 0, 0]], "'scale' must be in 0..5"),
                         ([[0, 0, 0, 0, -1]], "'pos_y' must be in 0..31"),
                         ([[0, 0, 0, 0]], r"shape \[n, 5\]"),
                         ([[0.0, 0, 0, 0, 0]], "must be integers")):
        with pytest.raises(ValueError, match=message):
            shapes.render(np.array(bad), 28)
    with pytest.raises(ValueError, match="image_size must be an integer >= 12"):
        shapes.render(np.zeros((1, 5), int), 8)


def test_generate_draws_the_grid_uniformly_and_renders_its_classes():
    images, classes = shapes.generate(500, image_size=20, seed=4)
    expected = grid_sample_fn(SIZES)(None, None, 500, np.random.default_rng(4))
    np.testing.assert_array_equal(classes, expected)
    np.testing.assert_array_equal(images, shapes.render(classes, 20))
    assert images.shape == (500, 20, 20, 1) and images.dtype == np.float32
    assert shapes.generate(0, 20)[0].shape == (0, 20, 20, 1)


def test_render_in_chunks_gives_the_same_images(monkeypatch):
    classes = shapes.generate(300, image_size=16, seed=1)[1]
    whole = shapes.render(classes, 16)
    monkeypatch.setattr(shapes, "_CHUNK_PIXELS", 7 * 16 * 16)  # 7 images per chunk
    np.testing.assert_array_equal(shapes.render(classes, 16), whole)


# ------------------------------------------------------------------------------ rendering


@pytest.mark.parametrize("size", [28, 64])
def test_square_at_orientation_zero_covers_the_pixels_of_its_side(size):
    """Axis-aligned, the square's pixels are (pixel centres within side/2 of the centre in x)
    times (the same in y), and the side is sqrt(2) * scale * size / 4."""
    max_r, span = _geometry(size)
    centres = np.arange(size) + 0.5
    for scale_class in (0, 3, 5):
        for px, py in ((0, 0), (7, 30), (31, 12)):
            image = shapes.render(np.array([[0, scale_class, 0, px, py]]), size)[0, ..., 0]
            side = np.sqrt(2) * (0.5 + 0.1 * scale_class) * max_r
            cx, cy = 1 + max_r + px / 31 * span, 1 + max_r + py / 31 * span
            in_x = np.abs(centres - cx) <= side / 2
            in_y = np.abs(centres - cy) <= side / 2
            np.testing.assert_array_equal(image, np.outer(in_y, in_x))
            assert (side - 1) ** 2 <= image.sum() <= (side + 1) ** 2


def test_symmetries_of_the_shapes():
    rng = np.random.default_rng(0)
    for angle in rng.uniform(0, 2 * np.pi, size=5):
        x, y = rng.uniform(0, 1, size=2)
        # A square turned by a quarter turn is the same square.
        np.testing.assert_array_equal(_one(0, 0.8, angle, x, y), _one(0, 0.8, angle + np.pi / 2, x, y))
        # The ellipse repeats every half turn.
        np.testing.assert_array_equal(_one(1, 0.9, angle, x, y), _one(1, 0.9, angle + np.pi, x, y))
    # On the grid: orientation classes 0 and 39 are 0 and 2 pi; 13 is a third of a turn.
    base = shapes.generate(60, image_size=28, seed=3)[1]
    for shift, kinds in ((39, (0, 1, 2)), (13, (2,))):
        grid = base[np.isin(base[:, 0], kinds)]
        grid[:, 2] = 0
        turned = grid.copy()
        turned[:, 2] = shift
        np.testing.assert_array_equal(shapes.render(grid, 28), shapes.render(turned, 28))
    # Centred (pos 0.5 puts the centre at size/2, between pixels): the upright ellipse and
    # square are mirror symmetric both ways; the triangle (a vertex pointing down) left-right only.
    for kind in (0, 1):
        upright = _one(kind, 1.0, 0.0, 0.5, 0.5)
        np.testing.assert_array_equal(upright, upright[:, ::-1])
        np.testing.assert_array_equal(upright, upright[::-1, :])
    triangle = _one(2, 1.0, 0.0, 0.5, 0.5)
    np.testing.assert_array_equal(triangle, triangle[:, ::-1])
    assert not np.array_equal(triangle, triangle[::-1, :])
    assert triangle[40:].sum() > triangle[:24].sum()  # the vertex points down (y grows downwards)


def test_rotating_the_image_rotates_the_shape():
    """np.rot90 maps the pixel at offset (dx, dy) from the centre to (dy, -dx), a turn of
    -pi/2 of the plane (y down): it equals the shape drawn at orientation - pi/2."""
    for kind in (1, 2):
        for angle in (0.0, 0.4, 2.0):
            turned = _one(kind, 0.9, angle - np.pi / 2, 0.5, 0.5)
            np.testing.assert_array_equal(np.rot90(_one(kind, 0.9, angle, 0.5, 0.5)), turned)
            assert not np.array_equal(turned, _one(kind, 0.9, angle, 0.5, 0.5))


def test_ellipse_area_and_axes():
    """Area pi * r * r/2; the upright ellipse spans 2r across and r down."""
    image = _one(1, 1.0, 0.0, 0.5, 0.5)
    r = 16.0
    assert abs(image.sum() / (np.pi * r * r / 2) - 1) < 0.03
    columns, rows = np.flatnonzero(image.any(axis=0)), np.flatnonzero(image.any(axis=1))
    assert abs(len(columns) - 2 * r) <= 1 and abs(len(rows) - r) <= 1


@pytest.mark.parametrize("kind", [0, 1, 2])
def test_pos_x_moves_the_centroid_linearly(kind):
    size = 64
    max_r, span = _geometry(size)
    classes = np.array([[kind, 4, 7, px, 9] for px in range(32)])
    images = shapes.render(classes, size)[..., 0]
    coords = np.arange(size) + 0.5
    mass = images.sum(axis=(1, 2))
    cx = (images.sum(axis=1) * coords).sum(axis=1) / mass
    cy = (images.sum(axis=2) * coords).sum(axis=1) / mass
    assert np.all(np.diff(cx) > 0)  # each step (0.97 px here) moves it right
    slope, intercept = np.polyfit(np.arange(32), cx, 1)
    assert abs(slope - span / 31) < 0.02 * span / 31
    assert np.abs(cx - (1 + max_r + np.arange(32) / 31 * span)).max() < 0.3
    assert np.ptp(cy) < 0.3  # pos_y did not change


# ------------------------------------------------------------------------------ factor sources


def test_factor_source_of_shapes_samples_with_a_fixed_factor():
    source = data.factor_source("shapes")
    assert source.names == shapes.FACTOR_NAMES and source.sizes == SIZES
    assert source.image_shape == (28, 28, 1)
    rng = np.random.default_rng(0)
    for k, value in ((0, 2), (2, 39), (4, 0)):
        drawn = source.sample(k, value, 3000, rng)
        assert drawn.shape == (3000, 5) and drawn.dtype == np.int64
        assert np.all(drawn[:, k] == value)
        for j in set(range(5)) - {k}:  # every class of the free factors appears
            assert set(drawn[:, j]) == set(range(SIZES[j])), (k, j)
    free = source.sample(None, None, 3000, 5)
    assert all(set(free[:, j]) == set(range(SIZES[j])) for j in range(5))
    np.testing.assert_array_equal(source.sample(None, None, 3000, 5), free)  # seeded
    some = free[:50]
    np.testing.assert_array_equal(source.index(some), np.ravel_multi_index(some.T, SIZES))
    np.testing.assert_array_equal(source.images(some), shapes.render(some, 28))
    np.testing.assert_allclose(source.values(some), shapes.factor_values(some))
    big = data.factor_source("shapes", image_size=40)
    assert big.image_shape == (40, 40, 1) and big.images(some).shape == (50, 40, 40, 1)
    for args, message in (((5, 0, 3, rng), "factor_index 5 out of range"),
                          ((1, 6, 3, rng), "value 6 out of range"),
                          ((1, None, 3, rng), "value must be an integer")):
        with pytest.raises(ValueError, match=message):
            source.sample(*args)
    with pytest.raises(ValueError, match="out of range"):
        source.images(np.array([[3, 0, 0, 0, 0]]))
    with pytest.raises(DataError, match="no known generative factors.*dsprites, shapes, shapes64"):
        data.factor_source("mnist")
    with pytest.raises(DataError, match="no known generative factors"):
        data.load_factors("binarized_mnist", "test")


def test_perfect_codes_score_one_on_the_metrics():
    """The factor values themselves are a perfect code: MIG ~1 (64 bins keep the 40
    orientations apart), FactorVAE score 1; mixing pos_x and pos_y lowers MIG."""
    images, classes = data.load_factors("shapes", "train")
    assert images.shape == (20000, 28, 28, 1) and classes.shape == (20000, 5)
    codes = shapes.factor_values(classes)
    result = mig(classes, codes, num_bins=64)
    assert result["mig"] > 0.97 and result["per_factor"].min() > 0.95
    mixed = codes.copy()
    mixed[:, 3], mixed[:, 4] = codes[:, 3] + codes[:, 4], codes[:, 3] - codes[:, 4]
    assert mig(classes, mixed, num_bins=64)["per_factor"][3:].max() < 0.5
    source = data.factor_source("shapes")
    score = factor_vae_score(sample_fn=source.sample, representation_fn=source.values,
                             batch_size=16, num_train=100, num_eval=50,
                             num_variance_estimate=500)
    assert score["eval_accuracy"] == 1.0


def test_load_factors_of_the_fixed_shapes_splits():
    images, classes = data.load_factors("shapes", "test")
    x, labels = data.load_arrays("shapes", "test")
    assert images.dtype == np.float32 and classes.dtype == np.int64
    np.testing.assert_array_equal(images, x)
    np.testing.assert_array_equal(classes[:, 0], labels)
    np.testing.assert_array_equal(images, shapes.render(classes, 28))
    head, head_classes = data.load_factors("shapes", "test[:100]")
    np.testing.assert_array_equal(head, x[:100])
    np.testing.assert_array_equal(head_classes, classes[:100])
    # max_examples keeps the same rows as the pipeline's max_examples with the same seed.
    sub, sub_classes = data.load_factors("shapes", "test", max_examples=300, seed=2)
    piped = data.load("shapes", "test", max_examples=300, seed=2, shuffle=False, batch_size=300)
    np.testing.assert_array_equal(next(iter(piped)).numpy(), sub)
    np.testing.assert_array_equal(shapes.render(sub_classes, 28), sub)
    with pytest.raises(ValueError, match="max_examples must be None or a positive integer"):
        data.load_factors("shapes", "test", max_examples=0)


def test_shapes64_is_the_generator_at_64_pixels(monkeypatch):
    meta = data.info("shapes64")
    assert meta.shape == (64, 64, 1) and meta.files == {"train": (), "valid": (), "test": ()}
    assert registry.SHAPES64_SPLITS["train"][0] == 20000
    monkeypatch.setitem(registry.SHAPES64_SPLITS, "test", (40, 123))  # small for the test
    x, labels = data.load_arrays("shapes64", "test")
    expected, classes = shapes.generate(40, image_size=64, seed=123)
    np.testing.assert_array_equal(x, expected)
    np.testing.assert_array_equal(labels, classes[:, 0])
    images, got = data.load_factors("shapes64", "test")
    np.testing.assert_array_equal(images, expected)
    np.testing.assert_array_equal(got, classes)
    assert data.factor_source("shapes64").image_shape == (64, 64, 1)


# ------------------------------------------------------------------------------ dSprites


FAKE_SIZES = (3, 2, 4, 3, 3)  # shape, scale, orientation, x, y: a tiny dSprites grid


def _fake_dsprites(directory, sizes=FAKE_SIZES, edit=None):
    """A dSprites-like .npz: the full grid in row-major order, with a pickled metadata entry
    (which must never be read) and images drawn by the shapes renderer."""
    grid = np.stack([g.reshape(-1) for g in np.indices(sizes)], axis=1)
    n = len(grid)
    ours = np.minimum(grid * np.array([1, 5, 10, 15, 15]), np.array(SIZES) - 1)  # on our grid
    arrays = {
        "imgs": shapes.render(ours, 64)[..., 0].astype(np.uint8),
        "latents_classes": np.concatenate([np.zeros((n, 1), np.int64), grid], axis=1),
        "latents_values": np.concatenate([np.ones((n, 1)), grid[:, :1] + 1.0,
                                          shapes.factor_values(ours)[:, 1:]], axis=1),
        "metadata": np.array({"latents_sizes": (1,) + sizes}, dtype=object),
    }
    if edit:
        edit(arrays)
    path = directory / dsprites.DSPRITES_FILE
    np.savez_compressed(path, **arrays)
    return path, arrays


def _row_of(latents_classes, classes):
    """Brute force: the row of the file that lists these classes."""
    return np.array([np.flatnonzero((latents_classes[:, 1:] == c).all(axis=1))[0] for c in classes])


def test_dsprites_from_a_fake_file(tmp_path):
    _, arrays = _fake_dsprites(tmp_path)
    imgs, latents = arrays["imgs"], arrays["latents_classes"]
    n = len(imgs)
    x, labels = data.load_arrays("dsprites", "train", data_dir=tmp_path)
    assert x.shape == (n, 64, 64, 1) and x.dtype == np.float32 and labels.dtype == np.int64
    np.testing.assert_array_equal(x[..., 0], imgs)
    np.testing.assert_array_equal(labels, latents[:, 1])
    # "test": a fixed seeded permutation of the rows (all of them: the file has fewer than 10000).
    test_x, test_labels = data.load_arrays("dsprites", "test", data_dir=tmp_path)
    rows = np.random.default_rng(dsprites.DSPRITES_TEST[1]).permutation(n)
    np.testing.assert_array_equal(test_x[..., 0], imgs[rows])
    np.testing.assert_array_equal(test_labels, latents[rows, 1])
    batch = next(iter(data.load("dsprites", "test[:32]", data_dir=tmp_path, batch_size=32)))
    np.testing.assert_array_equal(batch.numpy(), test_x[:32])

    source = data.factor_source("dsprites", data_dir=tmp_path)
    assert source.sizes == FAKE_SIZES and source.image_shape == (64, 64, 1)
    drawn = source.sample(2, 3, 200, np.random.default_rng(1))
    assert np.all(drawn[:, 2] == 3)
    found = _row_of(latents, drawn)
    np.testing.assert_array_equal(source.index(drawn), found)
    np.testing.assert_array_equal(source.images(drawn)[..., 0], imgs[found])
    np.testing.assert_allclose(source.values(drawn), arrays["latents_values"][found, 1:])
    with pytest.raises(ValueError, match="image_size must be None or 64"):
        data.factor_source("dsprites", data_dir=tmp_path, image_size=28)

    sub, sub_classes = data.load_factors("dsprites", "train", data_dir=tmp_path,
                                         max_examples=20, seed=3)
    keep = np.sort(np.random.default_rng(3).permutation(n)[:20])
    np.testing.assert_array_equal(sub[..., 0], imgs[keep])
    np.testing.assert_array_equal(sub_classes, latents[keep, 1:])
    assert sub.dtype == np.float32 and sub_classes.dtype == np.int64
    tail, tail_classes = data.load_factors("dsprites", "test[-5:]", data_dir=tmp_path)
    np.testing.assert_array_equal(tail[..., 0], imgs[rows[-5:]])
    np.testing.assert_array_equal(tail_classes, latents[rows[-5:], 1:])


def _swap_two_rows(arrays):
    for key in ("imgs", "latents_classes", "latents_values"):
        arrays[key][[0, 1]] = arrays[key][[1, 0]]


def _second_colour(arrays):
    arrays["latents_classes"][5, 0] = 1


def _grey_pixel(arrays):
    arrays["imgs"][3, 10, 10] = 255


def _drop_values(arrays):
    del arrays["latents_values"]


@pytest.mark.parametrize("edit, message", [
    (_swap_two_rows, r"does not list the full grid of sizes \(3, 2, 4, 3, 3\) in row-major order"),
    (_second_colour, "a single colour"),
    (_grey_pixel, "pixels in {0, 1}, found values up to 255"),
    (_drop_values, "missing latents_values"),
])
def test_dsprites_inconsistent_files(tmp_path, edit, message):
    path, _ = _fake_dsprites(tmp_path, edit=edit)
    with pytest.raises(DataError, match=message) as err:
        data.load_arrays("dsprites", "train", data_dir=tmp_path)
    assert str(path) in str(err.value)


def test_dsprites_missing_truncated_or_not_an_npz(tmp_path):
    with pytest.raises(DataError, match=f"missing file.*{dsprites.DSPRITES_FILE}"):
        data.load_arrays("dsprites", "test", data_dir=tmp_path)
    with pytest.raises(DataError, match="download=False"):
        data.factor_source("dsprites", download=False)
    path, _ = _fake_dsprites(tmp_path)
    blob = path.read_bytes()
    middle = len(blob) // 2
    flipped = blob[:middle] + bytes(b ^ 0xFF for b in blob[middle:middle + 64]) + blob[middle + 64:]
    for broken in (blob[:middle], blob[:-30], b"not an npz at all" * 10, flipped):
        path.write_bytes(broken)
        with pytest.raises(DataError, match="truncated or corrupt") as err:
            data.load_factors("dsprites", "train", data_dir=tmp_path)
        assert str(path) in str(err.value)
    np.save(tmp_path / "single.npy", np.zeros(3))
    (tmp_path / "single.npy").rename(path)
    with pytest.raises(DataError, match="expected an .npz archive"):
        data.load_arrays("dsprites", "train", data_dir=tmp_path)
