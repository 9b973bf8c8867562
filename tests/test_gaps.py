"""The inference toolkit against closed forms (linear-Gaussian model) and, on a VAE trained
briefly on binarized MNIST, against the orderings the theory guarantees."""
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

import tfvae
from tfvae.cli import main
from tfvae.inference.gaps import format_gap_table, gap_report
from tfvae.inference.optimize import optimize_posterior
from tfvae.inference.points import laplace_log_likelihood, point_estimate
from tfvae.inference.units import active_units
from tfvae.models import VAE, LinearGaussian
from tfvae.parts.refine import refine_posterior

tfd = tfp.distributions


# ----------------------------------------------------------------- linear-Gaussian: closed forms
@pytest.fixture(scope="module")
def linear():
    """A linear-Gaussian model with a correlated posterior, an untrained (poor) encoder, and
    data drawn from it, with the exact posterior and log-likelihood."""
    rng = np.random.default_rng(0)
    keras.utils.set_random_seed(0)             # the encoder's initial weights: independent of test order
    model = LinearGaussian(data_dim=6, latent_dim=3)
    model.set_generative(rng.normal(size=(6, 3)), rng.normal(size=6), rng.uniform(0.3, 0.8, size=6))
    x = model.exact_marginal().sample(40, seed=[0, 1]).numpy()
    return model, x, model.exact_posterior(x), model.exact_log_likelihood(x).numpy()


def exact_elbo(model, x, q):
    """The ELBO of a Gaussian q on the linear-Gaussian model, averaged over 20,000 draws."""
    return model.elbo_terms(x, 20000, seed=3, posterior=q)["elbo"].numpy()


def test_full_covariance_q_star_reaches_the_exact_log_likelihood(linear):
    model, x, _, exact = linear
    for init in ("encoder", "prior"):
        fit = optimize_posterior(model, x, family="full", init=init, seed=1)
        gap = exact - exact_elbo(model, x, fit.distribution)
        assert fit.converged.mean() >= 0.9
        # The stopping rule judges progress on 64 fixed draws, so an example can stop within
        # that sample's resolution of its optimum: about 0.01 nats on average, 0.15 at worst.
        assert abs(gap.mean()) < 0.02 and gap.max() < 0.15, (init, gap.mean(), gap.max())


def test_diagonal_q_star_is_the_closed_form_optimum(linear):
    # The best diagonal Gaussian to a Gaussian posterior N(m, P^-1) (KL(q || p) minimised)
    # has mean m and precisions diag(P); its approximation gap is that KL.
    model, x, posterior, exact = linear
    precision = np.linalg.inv(posterior.covariance().numpy())
    best = tfd.MultivariateNormalDiag(posterior.mean(), 1 / np.sqrt(np.diagonal(precision, axis1=1, axis2=2)))
    kl = tfd.kl_divergence(best, posterior).numpy()
    assert kl.mean() > 0.2          # the posterior is far from diagonal: the check has teeth
    fit = optimize_posterior(model, x, family="diag", seed=2)
    error = fit.distribution.mean().numpy() - best.mean().numpy()
    # A mean error e lowers this ELBO by exactly e^T P e / 2 nats: bound that cost.
    mean_cost = 0.5 * np.einsum("bi,bij,bj->b", error, precision, error)
    assert mean_cost.mean() < 0.01 and mean_cost.max() < 0.05
    # Scales s_i off the optimum by r_i = s_i / s*_i lower it by sum_i (r_i^2 - 1 - ln r_i^2) / 2.
    ratio2 = (fit.distribution.stddev().numpy() / best.stddev().numpy()) ** 2
    scale_cost = (0.5 * (ratio2 - 1 - np.log(ratio2))).sum(-1)
    assert scale_cost.mean() < 0.01 and scale_cost.max() < 0.05
    np.testing.assert_allclose(fit.distribution.stddev().numpy(), best.stddev().numpy(), rtol=0.15)
    gap = exact - exact_elbo(model, x, fit.distribution)
    assert abs(gap.mean() - kl.mean()) < 0.02 and np.abs(gap - kl).max() < 0.06


def test_the_flow_q_star_reaches_the_exact_log_likelihood(linear):
    model, x, _, exact = linear
    fit = optimize_posterior(model, x, family="flow", init="prior", seed=3)
    z = fit.distribution.sample(20000, seed=[4, 0])
    elbo = (model.decode(z).log_prob(x) + model.prior().log_prob(z) - fit.distribution.log_prob(z)).numpy().mean(0)
    gap = exact - elbo
    assert abs(gap.mean()) < 0.05 and gap.max() < 0.15


def test_each_example_is_optimised_independently_of_its_batch(linear):
    # Adam is elementwise and the objective a sum of per-example terms: one example fitted
    # alone lands where it lands inside the batch (up to the Monte Carlo noise).
    model, x, posterior, _ = linear
    together = optimize_posterior(model, x[:8], family="full", seed=5).distribution.mean().numpy()
    alone = optimize_posterior(model, x[3:4], family="full", seed=6).distribution.mean().numpy()
    np.testing.assert_allclose(alone[0], together[3], atol=0.05)
    np.testing.assert_allclose(alone[0], posterior.mean().numpy()[3], atol=0.05)


def test_point_estimates_match_their_closed_forms(linear):
    model, x, posterior, exact = linear
    W, b, sigma = (t.numpy() for t in model.loading())
    map_z = point_estimate(model, x, kind="map")
    # The posterior is Gaussian: its mode is its mean.
    np.testing.assert_allclose(map_z.z, posterior.mean().numpy(), atol=0.01)
    best_joint = sum(t.numpy() for t in (model.decode(posterior.mean()).log_prob(x),
                                         model.prior().log_prob(posterior.mean())))
    np.testing.assert_allclose(map_z.log_joint, best_joint, atol=1e-3)
    # ML: weighted least squares, (W^T Psi^-1 W)^-1 W^T Psi^-1 (x - b).
    weighted = W / sigma[:, None] ** 2
    ml_expected = np.linalg.solve(W.T @ weighted, weighted.T @ (x - b).T).T
    ml_z = point_estimate(model, x, kind="ml", steps=4000)
    np.testing.assert_allclose(ml_z.z, ml_expected, atol=0.03)
    np.testing.assert_allclose(ml_z.log_px_z, model.decode(ml_expected).log_prob(x).numpy(), atol=1e-3)
    assert ml_z.converged.all() and map_z.converged.all()
    # Laplace is exact for a Gaussian joint; the ML reconstruction bounds log p(x) above.
    np.testing.assert_allclose(laplace_log_likelihood(model, x, map_z.z), exact, atol=2e-3)
    assert np.all(ml_z.log_px_z >= exact)
    assert np.all(ml_z.log_px_z >= map_z.log_px_z - 1e-4) and np.all(ml_z.log_pz <= map_z.log_pz + 1e-4)


def test_semi_amortized_refinement_raises_the_elbo_and_is_differentiable(linear):
    model, x, _, _ = linear
    refined = refine_posterior(model, x, steps=30, learning_rate=0.05, samples=8, seed=0)
    elbo_before = exact_elbo(model, x, model.encode(x))
    assert exact_elbo(model, x, refined.distribution).mean() > elbo_before.mean() + 1.0
    assert refine_posterior(model, x, steps=0, seed=0).params.numpy() == pytest.approx(
        model.posterior_params(x).numpy())

    # Backpropagation through the steps against central finite differences along a random
    # direction in the encoder's weights (the seed fixes the draws: a smooth function).
    kernel = model.encoder_net.out.kernel
    direction = tf.random.stateless_normal(kernel.shape, [7, 0])

    def refined_elbo():
        r = refine_posterior(model, x[:10], steps=3, learning_rate=0.05, seed=1)
        return tf.reduce_mean(model.elbo_terms(x[:10], 4, seed=2, posterior=r.distribution)["elbo"])

    with tf.GradientTape() as tape:
        value = refined_elbo()
    analytic = float(tf.reduce_sum(tape.gradient(value, kernel) * direction))
    original = kernel.numpy()
    eps = 1e-2
    kernel.assign(original + eps * direction)
    plus = float(refined_elbo())
    kernel.assign(original - eps * direction)
    minus = float(refined_elbo())
    kernel.assign(original)
    assert analytic == pytest.approx((plus - minus) / (2 * eps), rel=0.02)


def test_active_units_count_the_units_whose_mean_moves_with_x():
    # A linear encoder: E_q[z] = x A + c. Unit i's activity is Var(x A_i), known in closed form.
    model = LinearGaussian(data_dim=4, latent_dim=3)
    A = np.zeros((4, 6), "float32")
    A[:, 0] = [1.0, 0.5, 0, 0]          # unit 0: active
    A[:, 1] = [0.01, 0, 0, 0.02]        # unit 1: moves, but by less than the threshold
    model.encoder_net.out.kernel.assign(A)                         # unit 2: ignores x
    x = np.random.default_rng(0).normal(size=(500, 4)).astype("float32")
    out = active_units(model, x, batch_size=128)
    expected = np.var(x @ A[:, :3], axis=0, ddof=1)
    np.testing.assert_allclose(out["activity"], expected, rtol=1e-4, atol=1e-9)
    assert out["active"] == 1 and out["latent_dim"] == 3


def test_bad_arguments_raise_clear_errors(linear):
    model, x, _, _ = linear
    with pytest.raises(ValueError, match="unknown posterior family 'gaussian'"):
        optimize_posterior(model, x, family="gaussian")
    with pytest.raises(ValueError, match="init must be one of"):
        optimize_posterior(model, x, init="zeros")
    with pytest.raises(ValueError, match="steps must be a positive integer"):
        optimize_posterior(model, x, steps=0)
    with pytest.raises(ValueError, match="initial_params has keys"):
        optimize_posterior(model, x, family="diag", initial_params={"raw_tril": np.zeros((40, 6))})
    with pytest.raises(ValueError, match="kind must be one of"):
        point_estimate(model, x, kind="mode")
    with pytest.raises(ValueError, match=r"x must have shape \(batch, 6\)"):
        optimize_posterior(model, x[0])
    with pytest.raises(ValueError, match="diverged"):
        optimize_posterior(model, x * 1e20, family="diag", steps=5)


# ----------------------------------------------------------------- a VAE trained on binarized MNIST
@pytest.fixture(scope="module")
def bmnist_vae(shared_data):
    """A small VAE trained 2 epochs on 5,000 binarized MNIST images, and 30 test images."""
    keras.utils.set_random_seed(0)
    train, test = tfvae.data.load("binarized_mnist", split=("train", "test"), data_dir=shared_data,
                                  batch_size=100, max_examples=5000)
    model = VAE(data_shape=(28, 28, 1), latent_dim=10, encoder={"type": "mlp", "hidden": [200], "activation": "tanh"})
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    model.fit(train, epochs=2, verbose=0)
    x = np.concatenate([b.numpy() for b in test.take(1)])[:30]
    return model, train, x


@pytest.fixture(scope="module")
def bmnist_report(bmnist_vae):
    model, _, x = bmnist_vae
    return gap_report(model, x, families=("diag", "full"), k=1000, eval_k=500, steps=300, refine_steps=10,
                      verbose=False)


def _within(lower, upper, n_se=2.0):
    """lower <= upper up to n_se standard errors (of the larger)."""
    return lower["mean"] <= upper["mean"] + n_se * max(lower["se"], upper["se"])


def test_the_gaps_are_ordered_as_the_theory_says(bmnist_report):
    r = bmnist_report
    for family in ("diag", "full"):
        # log p(x) >= ELBO[q*] >= ELBO[q]; the two gaps add up to the total.
        assert _within(r["paths"][family]["elbo"], r["log_px"])
        assert r["gaps"][family]["amortization"]["mean"] > 0
        assert r["gaps"][family]["approximation"]["mean"] > -2 * r["gaps"][family]["approximation"]["se"]
        total = r["gaps"][family]["approximation"]["mean"] + r["gaps"][family]["amortization"]["mean"]
        assert total == pytest.approx(r["gaps"]["total"]["mean"], abs=1e-3)
    assert r["paths"]["full"]["elbo"]["mean"] > r["paths"]["diag"]["elbo"]["mean"] - 0.1
    assert r["paths"]["semi_amortized"]["elbo"]["mean"] > r["paths"]["encoder"]["elbo"]["mean"]
    # Point estimates: both beat the encoder mean at reconstruction; ML pays for it in log p(z)
    # and its reconstruction term bounds log p(x) from above.
    points = r["points"]
    assert points["map"]["log_px_z"]["mean"] > points["encoder_mean"]["log_px_z"]["mean"]
    assert points["ml"]["log_px_z"]["mean"] > points["map"]["log_px_z"]["mean"]
    assert points["ml"]["log_pz"]["mean"] < points["map"]["log_pz"]["mean"]
    assert points["ml"]["log_px_z"]["mean"] > r["log_px"]["mean"]
    assert abs(points["map"]["laplace_log_px"]["mean"] - r["log_px"]["mean"]) < 5
    table = format_gap_table(r)
    assert "amort. gap" in table and f"{r['log_px']['mean']:.2f}" in table
    json.dumps(r)                                                      # JSON-ready


def test_training_the_encoder_longer_shrinks_the_amortization_gap(bmnist_vae, bmnist_report):
    # With the decoder frozen, log p(x) and q* stay as they are; only the encoder learns.
    model, train, x = bmnist_vae
    clone = VAE.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    clone.decoder_net.trainable = False
    clone.compile(optimizer=keras.optimizers.Adam(1e-3))
    clone.fit(train, epochs=3, verbose=0)
    again = gap_report(clone, x, families=("diag",), k=1000, eval_k=500, steps=300, refine_steps=0, points=False,
                       verbose=False)
    before = bmnist_report["gaps"]["diag"]["amortization"]["mean"]
    after = again["gaps"]["diag"]["amortization"]["mean"]
    assert after < before - 0.3, (before, after)
    assert again["paths"]["diag"]["elbo"]["mean"] == pytest.approx(
        bmnist_report["paths"]["diag"]["elbo"]["mean"], abs=0.3)


def test_tfvae_gaps_command_writes_the_table_json_and_plot(tmp_path, capsys):
    run = str(tmp_path / "shapes")
    assert main(["train", "--epochs", "1", "--steps-per-epoch", "20", "--no-eval", "--no-jit-compile", "--out", run,
                 "--set", "latent_dim=3"]) == 0
    # One family and no point estimates: the command's path, not the optimisers (tested above),
    # whose tracing dominates its time.
    assert main(["gaps", run, "--examples", "12", "--k", "50", "--eval-k", "50", "--steps", "60",
                 "--family", "diag", "--no-points", "--refine-steps", "2"]) == 0
    printed = capsys.readouterr().out
    report = json.load(open(os.path.join(run, "gaps.json")))
    assert set(report["gaps"]) == {"total", "diag"} and report["examples"] == 12 and not report.get("points")
    assert format_gap_table(report) in printed
    assert open(os.path.join(run, "gaps.png"), "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(SystemExit):                   # argparse: invalid choice
        main(["gaps", run, "--family", "gauss"])
    assert main(["gaps", str(tmp_path / "missing")]) == 2


def test_per_example_inference_refuses_a_latent_off_euclidean_space():
    from tfvae.models.svae import SVAE
    model = SVAE(data_shape=(16,), latent_dim=3, encoder={"type": "mlp", "hidden": [8]})
    x = (np.random.default_rng(0).random((2, 16)) > 0.5).astype("float32")
    for run in (lambda: optimize_posterior(model, x, steps=2), lambda: point_estimate(model, x, steps=2),
                lambda: gap_report(model, x, k=2, steps=2)):
        with pytest.raises(ValueError, match="not Euclidean"):
            run()


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_the_comparison_table_puts_the_reference_first_and_takes_each_models_best_family():
    from tfvae.inference.gaps import gap_comparison_table
    with open(os.path.join(REPO, "docs", "gaps_vae_bmnist", "gaps.json")) as f:
        reference = json.load(f)
    other = json.loads(json.dumps(reference))                   # a second model: its diagonal q* is the best
    other["paths"]["diag"]["elbo"]["mean"] = -80.0
    del other["paths"]["semi_amortized"]
    table = gap_comparison_table({"zz_model": other, "aa_model": other, "vae_bmnist": reference})
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    assert [row.split("`")[1] for row in rows] == ["vae_bmnist", "aa_model", "zz_model"] * 2
    best = {name: max(("diag", "full", "flow"), key=lambda f: report["paths"][f]["elbo"]["mean"])
            for name, report in (("vae_bmnist", reference), ("aa_model", other))}
    assert best == {"vae_bmnist": "flow", "aa_model": "diag"}
    for row, name, report in ((rows[3], "vae_bmnist", reference), (rows[4], "aa_model", other)):
        cells = [cell.strip() for cell in row.strip("|").split("|")]
        gaps = report["gaps"][best[name]]
        assert cells[2:5] == [f"{gaps['amortization']['mean']:.2f} ± {gaps['amortization']['se']:.2f}",
                              f"{gaps['approximation']['mean']:.2f} ± {gaps['approximation']['se']:.2f}", best[name]]
    assert rows[1].split("|")[3].strip() == "–"                 # no semi-amortized path in that report


def test_the_readme_shows_the_gap_reports_as_measured():
    from tfvae.inference.gaps import read_gap_reports, replace_gap_table
    with open(os.path.join(REPO, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    reports = read_gap_reports(os.path.join(REPO, "docs"))
    assert "vae_bmnist" in reports
    assert replace_gap_table(readme, reports) == readme, \
        "the README's gap tables are stale: run python scripts/gaps_table.py --write"


def test_the_report_runs_whole_on_a_model_whose_q_has_no_closed_form_moments():
    # An IAF posterior's mean is estimated from draws: the point estimates start from it with the
    # report's int seed, which once crashed the report of iaf_bmnist after all its q* fits.
    model = VAE(data_shape=(6,), latent_dim=2, encoder={"type": "mlp", "hidden": [8]}, seed=1,
                posterior={"type": "iaf", "flow_steps": 1, "made_hidden": [8], "context_dim": 2})
    x = (np.random.default_rng(0).uniform(size=(6, 6)) > 0.5).astype("float32")
    report = gap_report(model, x, families=("diag",), k=8, eval_k=8, steps=5, refine_steps=1, seed=0,
                        verbose=False)
    assert set(report["points"]) >= {"map", "ml", "encoder_mean"} and np.isfinite(report["log_px"]["mean"])


def test_a_report_cut_short_keeps_what_it_measured(tmp_path, monkeypatch):
    import tfvae.inference.gaps as gaps_module
    model = VAE(data_shape=(6,), latent_dim=2, encoder={"type": "mlp", "hidden": [8]}, seed=1)
    x = (np.random.default_rng(0).uniform(size=(6, 6)) > 0.5).astype("float32")
    options = dict(families=("diag",), k=8, eval_k=8, steps=5, refine_steps=1, seed=0, verbose=False)
    out = str(tmp_path / "gaps.json")

    def crash(*args, **kwargs):
        raise RuntimeError("killed")

    monkeypatch.setattr(gaps_module, "point_estimate", crash)
    with pytest.raises(RuntimeError):
        gap_report(model, x, out_path=out, **options)
    assert not os.path.exists(out)
    with open(tmp_path / "gaps.partial.json") as f:
        partial = json.load(f)
    assert partial["unfinished"] == "point estimates" and set(partial["paths"]) == {"encoder", "semi_amortized", "diag"}
    assert "diag" in partial["gaps"] and partial["log_px"]["mean"] <= 0
    monkeypatch.undo()
    report = gap_report(model, x, out_path=out, **options)
    assert not os.path.exists(tmp_path / "gaps.partial.json")
    assert report["paths"]["diag"]["elbo"] == partial["paths"]["diag"]["elbo"]      # same seed, same numbers


def test_the_semi_amortized_path_of_an_sa_vae_is_its_own_refinement():
    """Without settings, the report refines an SA-VAE's q as the model does (its K, step size and
    clipping): the same numbers as the report given those settings, and other numbers than the
    default refinement of a model that has none."""
    from tfvae.models.sa_vae import SAVAE
    model = SAVAE(data_shape=(6,), latent_dim=2, encoder={"type": "mlp", "hidden": [8]}, seed=1,
                  refine_steps=3, refine_learning_rate=0.3, max_grad_norm=2.0)
    x = (np.random.default_rng(0).uniform(size=(6, 6)) > 0.5).astype("float32")
    options = dict(families=(), k=8, eval_k=8, points=False, seed=0, verbose=False)
    own = gap_report(model, x, **options)
    assert {key: own["settings"][key] for key in ("refine_steps", "refine_learning_rate", "refine_max_grad_norm")} \
        == {"refine_steps": 3, "refine_learning_rate": 0.3, "refine_max_grad_norm": 2.0}
    explicit = refine_posterior(model, x, steps=3, learning_rate=0.3, max_grad_norm=2.0, seed=0, differentiable=False)
    by_model = model.refine(x, seed=0)
    np.testing.assert_allclose(explicit.params.numpy(), by_model.params.numpy(), rtol=1e-5, atol=1e-6)
    given = gap_report(model, x, refine_steps=3, refine_learning_rate=0.3, **options)
    assert own["paths"]["semi_amortized"]["elbo"] == given["paths"]["semi_amortized"]["elbo"]
    default = gap_report(model, x, refine_steps=20, refine_learning_rate=0.02, **options)
    assert default["paths"]["semi_amortized"]["elbo"] != own["paths"]["semi_amortized"]["elbo"]
