"""Latent traversals (tfvae.traversal): the decoded images against a numpy forward pass of a
linear VAE at codes built by hand, the default values and base codes against the prior's
closed-form moments, rank_dims against a numpy per-dimension KL (and TFP's total KL), the
PNG's layout, the GIFs' frames (count, loop, size, pixels), errors, and a run directory."""
import os

import numpy as np
import pytest
import yaml
from PIL import Image

from tfvae.models import HVAE2, VAE, MoGPriorVAE
from tfvae.presets import CONFIG_FILE, WEIGHTS_FILE, build_model, load_preset
from tfvae.runs import traverse_run
from tfvae.traversal import (CELL_INCHES, GRID_DPI, SLIDER_PIXELS, image_shape, plan_traversal, rank_dims,
                             save_traversal_grid, save_traversal_gifs, traverse)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LINEAR = {"type": "mlp", "hidden": []}      # encoder and decoder are single Dense layers
X = (np.random.default_rng(0).random((6, 4, 4, 1)) > 0.5).astype("float32")


def sigmoid(a):
    return 1.0 / (1.0 + np.exp(-a))


def softplus(a):
    return np.log1p(np.exp(-np.abs(a))) + np.maximum(a, 0)


def linear_vae(data_shape=(4, 4, 1), latent_dim=3, condition_dim=0, seed=0):
    """A VAE whose q and p are affine in x and z, with random weights (numpy twins below)."""
    model = VAE(data_shape=data_shape, latent_dim=latent_dim, encoder=LINEAR, condition_dim=condition_dim)
    rng = np.random.default_rng(seed)
    for weight in model.encoder_net.weights + model.decoder_net.weights:
        weight.assign(rng.normal(0, 0.7, weight.shape).astype("float32"))
    return model


def numpy_posterior(model, x, condition=None):
    """(mu, sigma) [B, L] of q(z|x) = N(mu, sigma^2): params = [x, c] We + be, sigma = softplus + 1e-4."""
    kernel, bias = (w.numpy().astype(np.float64) for w in model.encoder_net.out.weights)
    h = x.reshape(len(x), -1).astype(np.float64)
    if condition is not None:
        h = np.concatenate([h, condition], axis=1)
    params = h @ kernel + bias
    L = model.latent_dim
    return params[:, :L], softplus(params[:, L:]) + 1e-4


def numpy_decoder_mean(model, z, condition=None):
    """sigmoid([z, c] Wd + bd) for codes z [N, L], reshaped to [N, *data_shape]."""
    kernel, bias = (w.numpy().astype(np.float64) for w in model.decoder_net.out.weights)
    h = np.asarray(z, np.float64)
    if condition is not None:
        h = np.concatenate([h, np.broadcast_to(condition, (len(h), len(condition)))], axis=1)
    return sigmoid(h @ kernel + bias).reshape(len(h), *model.data_shape)


def test_traverse_decodes_the_base_code_with_one_coordinate_replaced():
    model = linear_vae()
    values = [-1.5, 0.0, 0.7, 2.0]
    out = traverse(model, X, dims=[2, 0], values=values, example=3)
    assert out.shape == (2, 4, 4, 4, 1)
    base = numpy_posterior(model, X)[0][3]
    for row, d in enumerate([2, 0]):
        for j, v in enumerate(values):
            z = base.copy()
            z[d] = v
            np.testing.assert_allclose(out[row, j], numpy_decoder_mean(model, z[None])[0], rtol=1e-5, atol=1e-6)
    plan = plan_traversal(model, X, dims=[2, 0], values=values, example=3)
    np.testing.assert_allclose(plan.base, base, rtol=1e-5, atol=1e-6)
    changed = plan.codes != plan.base          # [D, S, L]: only coordinate dims[row] may differ
    assert not changed[0][:, [0, 1]].any() and not changed[1][:, [1, 2]].any()
    # One example without a batch axis gives the same traversal.
    np.testing.assert_allclose(traverse(model, X[3], dims=[2, 0], values=values), out, rtol=1e-6)


def test_default_range_and_base_without_x_for_a_standard_normal_prior():
    model = linear_vae()
    plan = plan_traversal(model)
    assert plan.dims == (0, 1, 2) and plan.base_source == "prior mean"
    np.testing.assert_array_equal(plan.base, np.zeros(3))
    np.testing.assert_allclose(plan.values, np.tile(np.linspace(-2.5, 2.5, 9), (3, 1)), atol=1e-6)
    plan = plan_traversal(model, num_steps=3, span=1.0, max_dims=2)
    assert plan.dims == (0, 1)
    np.testing.assert_allclose(plan.values, [[-1, 0, 1], [-1, 0, 1]], atol=1e-6)
    out = traverse(model, num_steps=3, span=1.0, dims=[1])
    codes = np.zeros((3, 3))
    codes[:, 1] = [-1, 0, 1]
    np.testing.assert_allclose(out[0], numpy_decoder_mean(model, codes), rtol=1e-5, atol=1e-6)


def test_mixture_prior_range_is_its_mean_plus_minus_span_stddevs():
    model = MoGPriorVAE(data_shape=(16,), latent_dim=2, components=3, encoder={"type": "mlp", "hidden": [8]})
    model.prior_part.logits.assign([0.5, -1.0, 0.2])
    w = np.exp([0.5, -1.0, 0.2]) / np.exp([0.5, -1.0, 0.2]).sum()
    mu = model.prior_part.locs.numpy().astype(np.float64)                             # [K, L]
    s = softplus(model.prior_part.raw_scales.numpy().astype(np.float64)) + 1e-4
    mean = w @ mu
    std = np.sqrt(w @ (s ** 2 + mu ** 2) - mean ** 2)                              # law of total variance
    plan = plan_traversal(model, num_steps=5, span=2.0)
    np.testing.assert_allclose(plan.base, mean, rtol=1e-5)
    expected = mean[:, None] + 2.0 * std[:, None] * np.linspace(-1, 1, 5)
    np.testing.assert_allclose(plan.values, expected, rtol=1e-5)


def test_prior_without_a_mean_starts_from_a_seeded_draw_and_z2_rows_are_flat():
    model = HVAE2(data_shape=(16,), latent_dims=(2, 2), encoder={"type": "mlp", "hidden": [8]},
                  stochastic_hidden=[8])
    plans = [plan_traversal(model, num_steps=3, seed=seed) for seed in (0, 0, 1)]
    assert plans[0].base_source == "prior sample, seed 0"
    np.testing.assert_array_equal(plans[0].base, plans[1].base)
    assert not np.allclose(plans[0].base, plans[2].base)
    # The decoder reads z1 = z[:2] only: moving z2 (dims 2, 3) leaves the image unchanged,
    # moving z1 does not.
    out = traverse(model, num_steps=3, dims=[0, 3])
    assert np.abs(out[0] - out[0, :1]).max() > 1e-4
    np.testing.assert_allclose(out[1], np.broadcast_to(out[1, :1], out[1].shape), atol=1e-6)


def test_rank_dims_matches_numpy_kl_with_active_units_first():
    model = linear_vae(latent_dim=4, seed=3)
    kernel, bias = model.encoder_net.out.weights
    k, b = kernel.numpy(), bias.numpy()
    k[:, 1] = 0.0; b[1] = 3.0          # z1: the same mean 3 for every x: large KL, inactive
    k[:, 3] = 0.0; b[3] = 0.0          # z3: mean 0 and sigma ~ 1 for every x: a dead unit
    k[:, 7] = 0.0; b[7] = 0.5413
    kernel.assign(k); bias.assign(b)
    x = (np.random.default_rng(5).random((40, 4, 4, 1)) > 0.5).astype("float32")
    ranking = rank_dims(model, x)
    mu, s = numpy_posterior(model, x)
    kl = 0.5 * (mu ** 2 + s ** 2 - 1 - np.log(s ** 2)).mean(0)
    np.testing.assert_allclose(ranking.kl, kl, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(ranking.activity, mu.var(0), rtol=1e-4, atol=1e-8)
    active = mu.var(0) > 0.01
    expected = sorted(range(4), key=lambda d: (not active[d], -kl[d]))
    assert list(ranking.order) == expected
    assert expected[-2:] == [1, 3] and kl[1] > kl[[0, 2]].max()   # "active first" decides here
    # The per-dimension KLs sum to TFP's closed-form KL(q || N(0, I)).
    np.testing.assert_allclose(ranking.kl.sum(), model.elbo_terms(x)["kl"].numpy().mean(), rtol=1e-4)
    # With a batch, the default rows are the top of the ranking.
    assert plan_traversal(model, x, max_dims=2, num_steps=3).dims == tuple(expected[:2])


def test_image_shape_of_data_shapes():
    assert image_shape((4, 4, 1)) == (4, 4, 1) and image_shape((3, 5, 3)) == (3, 5, 3)
    assert image_shape((784,)) == (28, 28, 1) and image_shape((5, 6)) == (5, 6, 1)
    for shape in ((15,), (4, 4, 2), (2, 2, 2, 1)):
        with pytest.raises(ValueError, match="cannot show data"):
            image_shape(shape)


@pytest.fixture
def grids(tmp_path):
    model = linear_vae()
    sizes = {}
    for rows, steps in ((3, 5), (1, 5), (3, 7)):
        path = str(tmp_path / f"grid_{rows}x{steps}.png")
        assert save_traversal_grid(model, path, X, dims=list(range(rows)), num_steps=steps) == path
        with Image.open(path) as image:
            sizes[rows, steps] = image.size
            pixels = np.asarray(image.convert("L"), np.float64)
        assert pixels.std() > 10                   # not a blank page
    return model, sizes


def test_grid_grows_by_one_cell_per_row_and_column(grids, tmp_path):
    model, sizes = grids
    cell = CELL_INCHES * GRID_DPI                 # 4x4 images: the minimum cell, 80 px
    (w35, h35), (w15, h15), (w37, h37) = sizes[3, 5], sizes[1, 5], sizes[3, 7]
    assert w35 == w15 and h35 - h15 == pytest.approx(2 * cell, abs=1)
    assert h35 == h37 and w37 - w35 == pytest.approx(2 * cell, abs=1)
    # A flat (16,) model is shown as 4x4 images: the same picture size as the (4, 4, 1) model.
    flat = linear_vae(data_shape=(16,))
    path = save_traversal_grid(flat, str(tmp_path / "flat.png"), X.reshape(6, 16), dims=[0, 1, 2], num_steps=5)
    with Image.open(path) as image:
        assert image.size == sizes[3, 5]
    odd = linear_vae(data_shape=(15,))
    assert traverse(odd, dims=[0], num_steps=3).shape == (1, 3, 15)    # raw arrays still work
    with pytest.raises(ValueError, match="perfect-square"):
        save_traversal_grid(odd, str(tmp_path / "odd.png"))
    assert not os.path.exists(tmp_path / "odd.png")


def test_gifs_ping_pong_frames_loop_and_pixels(tmp_path):
    model = linear_vae()
    steps = 4
    paths = save_traversal_gifs(model, str(tmp_path / "gifs"), X, dims=[2, 0], num_steps=steps, duration_ms=90)
    assert paths == [str(tmp_path / "gifs" / "z2.gif"), str(tmp_path / "gifs" / "z0.gif")]
    images = np.clip(traverse(model, X, dims=[2, 0], num_steps=steps), 0, 1)
    order = [0, 1, 2, 3, 2, 1]                     # forward then back: 2 * steps - 2 frames
    factor = 32                                    # 4 px -> 128 px, nearest neighbour
    for row, path in enumerate(paths):
        with Image.open(path) as gif:
            assert gif.n_frames == 2 * steps - 2 and gif.info["loop"] == 0
            assert gif.size == (4 * factor, 4 * factor + SLIDER_PIXELS)
            for k, j in enumerate(order):
                gif.seek(k)
                frame = np.asarray(gif.convert("L"))
                assert gif.info["duration"] == 90
                np.testing.assert_array_equal(frame[:4 * factor:factor, ::factor],
                                              np.round(images[row, j, ..., 0] * 255).astype(np.uint8))
                block = frame[:4 * factor, :4 * factor].reshape(4, factor, 4, factor)
                assert (block == block[:, :1, :, :1]).all()          # every pixel is a solid block
    # A dimension the decoder ignores still has all its frames (the slider moves).
    dead = linear_vae()
    dead.decoder_net.out.kernel.assign(np.zeros((3, 16), "float32"))
    (path,) = save_traversal_gifs(dead, str(tmp_path / "dead"), dims=[1], num_steps=3)
    with Image.open(path) as gif:
        assert gif.n_frames == 4


def test_rgb_gif(tmp_path):
    model = linear_vae(data_shape=(3, 3, 3))
    (path,) = save_traversal_gifs(model, str(tmp_path), dims=[0], num_steps=2, min_size=30)
    images = np.clip(traverse(model, dims=[0], num_steps=2), 0, 1)
    with Image.open(path) as gif:
        assert gif.n_frames == 2 and gif.size == (30, 30 + SLIDER_PIXELS)
        gif.seek(1)
        frame = np.asarray(gif.convert("RGB"), np.float64)
    np.testing.assert_allclose(frame[:30:10, ::10] / 255, images[0, 1], atol=0.04)


def test_conditional_model_decodes_with_the_example_condition():
    model = linear_vae(condition_dim=2)
    condition = np.eye(2, dtype="float32")[[0, 1, 1, 0, 1, 0]]
    out = traverse(model, X, dims=[1], values=[-1.0, 1.0], condition=condition, example=1)
    base = numpy_posterior(model, X, condition)[0][1]
    codes = np.stack([base, base])
    codes[:, 1] = [-1.0, 1.0]
    np.testing.assert_allclose(out[0], numpy_decoder_mean(model, codes, condition[1]), rtol=1e-5, atol=1e-6)
    out = traverse(model, dims=[0], num_steps=2, condition=[0.0, 1.0])
    codes = np.array([[-2.5, 0, 0], [2.5, 0, 0]])
    np.testing.assert_allclose(out[0], numpy_decoder_mean(model, codes, np.array([0.0, 1.0])), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="conditional"):
        traverse(model, X)


MODEL = linear_vae()


@pytest.mark.parametrize("kwargs, message", [
    (dict(dims=[3]), "out of range"),
    (dict(dims=[-1]), "out of range"),
    (dict(dims=[0, 0]), "repeated"),
    (dict(dims=[]), "empty"),
    (dict(num_steps=1), "num_steps"),
    (dict(values=[0.5]), "at least 2"),
    (dict(values=[[0.0, 1.0]]), "1-D"),
    (dict(values=[0.0, 1.0], num_steps=3), "num_steps=3"),
    (dict(values=[0.0, 1.0], span=2.0), "either values"),
    (dict(span=-1.0), "span"),
    (dict(max_dims=0), "max_dims"),
    (dict(x=np.zeros((2, 5, 5, 1))), r"shape \(batch, 4, 4, 1\)"),
    (dict(x=X, example=6), "example"),
    (dict(condition=np.zeros((1, 2))), "not conditional"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        traverse(MODEL, **kwargs)



def test_traverse_run_on_a_flat_mnist_model(tmp_path, shared_data):
    """A run directory of a (784,) model on MNIST: the 28x28 test images are flattened for
    it, and the pictures show them as 28x28 again."""
    # The YAML by path: a zoo name needs the installed tfvae.zoo_configs package.
    preset = load_preset(os.path.join(REPO, "zoo_configs", "vae_mnist.yaml")).to_dict()
    preset["model"].update(data_shape=[784], latent_dim=3, encoder={"type": "mlp", "hidden": [8]})
    preset["evaluation"]["examples"] = 10
    run = tmp_path / "run"
    run.mkdir()
    (run / CONFIG_FILE).write_text(yaml.safe_dump(preset))
    model = build_model(preset["model"])
    model.save_weights(str(run / WEIGHTS_FILE))
    out = traverse_run(str(run), data_dir=shared_data, examples=12, num_steps=3, max_dims=2)
    assert out["grid"] == str(run / "traversals" / "traversals.png") and os.path.isfile(out["grid"])
    assert out["gifs"] == [str(run / "traversals" / f"z{d}.gif") for d in out["dims"]]
    with Image.open(out["gifs"][0]) as gif:
        assert gif.n_frames == 4 and gif.size == (28 * 5, 28 * 5 + SLIDER_PIXELS)
    # The rows are the top two of the ranking on the same examples (the loader's seeded draw).
    from tfvae.training.run import load_eval_data
    (x,) = list(load_eval_data(load_preset(str(run)), shared_data, examples=12, batch_size=12))
    ranking = rank_dims(model, np.reshape(x, (-1, 784)))
    assert out["dims"] == list(ranking.order[:2])
    np.testing.assert_allclose([out["kl"][d] for d in out["dims"]], ranking.kl[ranking.order[:2]], rtol=1e-5)
