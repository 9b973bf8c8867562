"""The contract every combination of parts keeps: one harness over the registered priors,
posteriors and objectives (and the parts a new module registers, with no test code of its own),
and over the registered models (config and .keras round trips of each named model).

For every allowed prior x posterior x objective, on a tiny MLP (the default suite runs a
covering subset, `covering`: each pair of priors and posteriors, each objective with the
default pair and with one other; `-m slow` runs the whole grid):
  - its config round-trips (`get_config` -> `from_config` computes the same ELBO);
  - a `.keras` archive reloads with `safe_mode=True` and computes the same ELBO;
  - one compiled `fit` step moves the weights and reports a finite loss;
  - its training gradients are finite;
  - log p(x) by importance sampling with k = 1 equals the ELBO in expectation: the two code paths
    (`importance_sampling`, `elbo_terms`) on independent draws agree within 4 standard errors;
  - the k-sample bound lies above the ELBO, on average over examples, beyond Monte Carlo error.
Export depends on the prior and the posterior only (the objective changes how a model trains,
not what it computes), so prior x posterior pairs are exported and reloaded through plain
TensorFlow: in the default suite a set of pairs that exports every prior and every posterior
(`exported_pairs`), with -m slow every allowed pair. Refused combinations are refused when the
model is built, with a reason (`test_refused_combinations_say_why`).
"""
import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

import tfvae
from tfvae.config import ConfigError
from tfvae.models import VAE
from tfvae.parts import build_part, check_parts, list_parts

DATA_SHAPE = (8, 8, 1)
TINY = dict(data_shape=DATA_SHAPE, latent_dim=2, encoder={"type": "mlp", "hidden": [8]}, likelihood="bernoulli",
            seed=1)
# Settings that keep each part small; a part not listed here runs with its defaults.
SMALL = {("prior", "vamp"): {"pseudo_inputs": 3}, ("prior", "mixture"): {"components": 2},
         ("objective", "iwae"): {"k": 3}, ("objective", "miwae"): {"m": 2, "k": 2},
         ("objective", "piwae"): {"m": 2, "k": 2}, ("objective", "ciwae"): {"k": 3},
         ("objective", "mssim"): {"power_factors": [1.0], "filter_size": 3},
         ("objective", "semi_amortized"): {"refine_steps": 2}, ("objective", "factor"): {"discriminator_hidden": [8]},
         ("prior", "flow"): {"flow_steps": 1, "made_hidden": [8]}, ("posterior", "iaf"): {
             "flow_steps": 1, "made_hidden": [8], "context_dim": 2},
         ("posterior", "categorical"): {"categories": [2]},
         ("posterior", "gaussian_categorical"): {"continuous_dim": 1, "categories": [2]},
         ("posterior", "vector_quantized"): {"num_latents": 2, "codebook_size": 4}}
# The latent size a posterior needs when TINY's does not fit it (its own sizes add up to it).
LATENT_DIM = {"gaussian_categorical": 3}


def spec(kind, name):
    return {"type": name, **SMALL.get((kind, name), {})}


def build(prior, posterior, objective, **overrides):
    return VAE(**{**TINY, "latent_dim": LATENT_DIM.get(posterior, TINY["latent_dim"]), "prior": spec("prior", prior),
                  "posterior": spec("posterior", posterior), "objective": spec("objective", objective),
                  **overrides})


def refusal(prior, posterior, objective) -> str | None:
    """The rules' ConfigError message for the combination, else None: `check_parts` on the parts
    alone, no network built (test_refused_combinations_say_why checks that a model built from
    each refused combination refuses it the same way)."""
    try:
        check_parts(*(build_part(kind, spec(kind, name)) for kind, name in
                      zip(("prior", "posterior", "objective"), (prior, posterior, objective))))
    except ConfigError as e:
        return str(e)
    return None


ALL = list(itertools.product(list_parts("prior"), list_parts("posterior"), list_parts("objective")))
REFUSALS = {combo: message for combo in ALL if (message := refusal(*combo)) is not None}
COMBINATIONS = [combo for combo in ALL if combo not in REFUSALS]
PAIRS = sorted({(prior, posterior) for prior, posterior, _ in COMBINATIONS})
DEFAULT_PAIR = ("standard_normal", "diagonal")


def pair_objective(prior, posterior):
    """The objective a prior x posterior pair is exported with: the ELBO, or the first allowed
    one for a pair that trains under named objectives only (the codebook's vq)."""
    allowed = [objective for p, q, objective in COMBINATIONS if (p, q) == (prior, posterior)]
    return "elbo" if "elbo" in allowed else allowed[0]


def covering(combinations):
    """The combinations the default suite runs: every allowed prior x posterior pair with the
    ELBO (or the objective it is exported with, `pair_objective`), every objective with N(0, I)
    and the diagonal Gaussian, and every objective once more with another pair (taken in turn),
    so that each part meets parts other than the defaults. The rest of the grid runs with -m slow."""
    chosen = [combo for combo in combinations if combo[2] == pair_objective(*combo[:2]) or combo[:2] == DEFAULT_PAIR]
    others = [pair for pair in PAIRS if pair != DEFAULT_PAIR]
    turn = 0
    for objective in sorted({combo[2] for combo in combinations} - {"elbo"}):
        for attempt in range(len(others)):
            pair = others[(turn + attempt) % len(others)]
            if (*pair, objective) in combinations:
                chosen.append((*pair, objective))
                turn += attempt + 1
                break
    return set(chosen)


def exported_pairs(pairs):
    """The prior x posterior pairs the default suite exports: the default pair, then, greedily,
    the pair that brings the most priors and posteriors not yet exported (ties by name), until
    every prior and every posterior has been exported once. The rest run with -m slow."""
    chosen, seen = [DEFAULT_PAIR], set(DEFAULT_PAIR)
    while True:
        new = {pair: len(set(pair) - seen) for pair in pairs if pair not in chosen}
        best = min(new, key=lambda pair: (-new[pair], pair), default=None)
        if best is None or new[best] == 0:
            return set(chosen)
        chosen.append(best)
        seen |= set(best)


COVERED = covering(COMBINATIONS)
GRID = [combo if combo in COVERED else pytest.param(*combo, marks=pytest.mark.slow) for combo in COMBINATIONS]
EXPORTED = exported_pairs(PAIRS)
EXPORT_GRID = [pair if pair in EXPORTED else pytest.param(*pair, marks=pytest.mark.slow) for pair in PAIRS]
X = (np.random.default_rng(0).uniform(size=(16, *DATA_SHAPE)) > 0.5).astype("float32")


def elbo(model, x=X, seed=(3, 4)):
    return model.elbo_terms(x, 1, seed=seed)["elbo"].numpy()


@pytest.mark.parametrize("prior, posterior, objective", GRID)
def test_the_combination_keeps_the_contract(prior, posterior, objective, tmp_path):
    model = build(prior, posterior, objective)
    clone = type(model).from_config(model.get_config())
    clone.set_weights(model.get_weights())
    np.testing.assert_allclose(elbo(clone), elbo(model), rtol=1e-6, atol=1e-6)

    path = str(tmp_path / "model.keras")
    model.save(path)
    reloaded = keras.models.load_model(path, safe_mode=True)
    np.testing.assert_allclose(elbo(reloaded), elbo(model), rtol=1e-6, atol=1e-6)

    result, gradients = model.gradients(X, seed=[5, 6])
    assert np.isfinite(result.value.numpy())
    assert all(g is None or np.all(np.isfinite(tf.convert_to_tensor(g).numpy())) for g in gradients)

    replicas = np.tile(X, (32,) + (1,) * len(DATA_SHAPE))
    single = tfvae.importance_sampling(model, replicas, k=1, seed=[7, 8], compiled=False)["log_px"].numpy()
    difference = single - model.elbo_terms(replicas, 1, seed=[7, 9])["elbo"].numpy()
    assert abs(difference.mean()) < 4 * difference.std(ddof=1) / np.sqrt(len(difference)) + 1e-3

    bound = tfvae.importance_sampling(model, X, k=64, seed=[9, 9], compiled=False)["log_px"].numpy()
    draws = elbo(model, np.tile(X, (8,) + (1,) * len(DATA_SHAPE)), seed=(1, 1)).reshape(8, len(X)).mean(0)
    difference = bound - draws
    assert difference.mean() >= -3 * difference.std(ddof=1) / np.sqrt(len(difference))   # equal for a point-mass q

    before = [w.copy() for w in model.get_weights()]
    model.compile(optimizer=keras.optimizers.Adam(1e-2), jit_compile=False)
    history = model.fit(X, batch_size=len(X), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


# How each registered model is built small: the models whose latent_dim is derived from their own
# sizes leave it out; linear_gaussian takes no networks.
MODEL_SETTINGS = {
    "gumbel_vae": {"num_latents": 2, "categories": 3, "latent_dim": None},
    "joint_vae": {"continuous_dim": 2, "categories": [3], "latent_dim": None},
    "hvae2": {"latent_dims": [2, 2], "stochastic_hidden": [8], "latent_dim": None},
    "ladder": {"latent_dims": [2, 2], "bottom_up": [8, 8], "top_down": [8], "latent_dim": None},
    "vqvae": {"num_latents": 2, "embedding_dim": 2, "codebook_size": 4, "latent_dim": None},
    "mssim_vae": {"power_factors": [1.0], "filter_size": 3},
    "vamp": {"pseudo_inputs": 3}, "mog_prior": {"components": 2},
    "iaf": {"flow_steps": 1, "made_hidden": [8], "context_dim": 2},
    "linear_gaussian": None,
}


def build_registered(name):
    settings = MODEL_SETTINGS.get(name, {})
    if settings is None:
        return tfvae.get_model_class(name)(data_dim=3, latent_dim=2, seed=1), np.ones((4, 3), "float32")
    return tfvae.get_model_class(name)(**{key: value for key, value in {**TINY, **settings}.items()
                                          if value is not None}), X


@pytest.mark.parametrize("name", tfvae.list_models())
def test_every_registered_model_round_trips_its_config_and_keras_archive(name, tmp_path):
    # A named model is a preset of parts with arguments of its own (or a family of its own):
    # get_config -> from_config and a .keras archive (safe_mode) rebuild the same model.
    model, x = build_registered(name)
    for variable in model.trainable_variables:      # away from the initial values, which a rebuild recreates
        variable.assign(variable + np.random.default_rng(2).normal(0, 0.1, variable.shape).astype("float32"))
    config = model.get_config()
    clone = type(model).from_config(config)
    assert clone.get_config() == config and tfvae.get_model_class(name) is type(model)
    clone.set_weights(model.get_weights())
    path = str(tmp_path / "model.keras")
    model.save(path)
    reloaded = keras.models.load_model(path, safe_mode=True)
    assert type(reloaded) is type(model) and reloaded.get_config() == config
    for other in (clone, reloaded):
        np.testing.assert_allclose(elbo(other, x), elbo(model, x), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("prior, posterior", EXPORT_GRID)
def test_the_prior_and_posterior_export_and_reload_through_plain_tensorflow(prior, posterior, tmp_path):
    model = build(prior, posterior, pair_objective(prior, posterior))
    tfvae.export(model, str(tmp_path / "served"), k=4, verbose=False)
    served = tf.saved_model.load(str(tmp_path / "served"))
    encoded = served.encode(tf.constant(X))
    assert encoded["mean"].shape == (len(X), model.latent_dim)
    np.testing.assert_allclose(served.elbo(tf.constant(X))["elbo"].numpy(),
                               model.elbo_terms(X, 1, seed=[0, 0])["elbo"].numpy(), rtol=1e-4, atol=1e-4)
    assert served.sample(n=tf.constant(3), seed=tf.constant([1, 2]))["x"].shape == (3, *DATA_SHAPE)


def test_every_registered_part_takes_part_in_some_allowed_combination():
    for kind, index in (("prior", 0), ("posterior", 1), ("objective", 2)):
        assert {combo[index] for combo in COMBINATIONS} == set(list_parts(kind)), kind


def test_the_default_suite_exports_every_prior_and_every_posterior():
    assert {prior for prior, _ in EXPORTED} == {prior for prior, _ in PAIRS}
    assert {posterior for _, posterior in EXPORTED} == {posterior for _, posterior in PAIRS}
    assert len(EXPORTED) < len(PAIRS)


def test_the_default_suite_covers_every_part_and_every_prior_posterior_pair():
    assert {(p, q) for p, q, _ in COVERED} == set(PAIRS)
    for kind, index in (("prior", 0), ("posterior", 1), ("objective", 2)):
        assert {combo[index] for combo in COVERED} == {combo[index] for combo in COMBINATIONS}, kind
    outside_default = {combo[2] for combo in COVERED if combo[:2] != DEFAULT_PAIR}
    assert outside_default == {combo[2] for combo in COMBINATIONS if combo[:2] != DEFAULT_PAIR}


def test_refused_combinations_say_why():
    # Every refusal names a part. A model built from a refused combination refuses it with the
    # same message: checked on one refused combination per prior x posterior pair and per
    # objective (the rules read the parts alone, so the rest refuse the same way).
    assert REFUSALS     # the rules refuse some combinations (a ConfigError at build time)
    sampled = {}
    for combo, message in REFUSALS.items():
        assert any(name in message for name in combo), (combo, message)
        sampled.setdefault(combo[:2], combo)
        sampled.setdefault(combo[2], combo)
    for combo in set(sampled.values()):
        with pytest.raises(ConfigError) as refused:
            build(*combo)
        assert str(refused.value) == REFUSALS[combo], combo
