"""Disentanglement metrics on hand-made representations whose answer is known.

Factors: a full 3 x 4 x 5 factorial grid (K = 3), tiled 20 times (N = 1200), so the factors are exactly
independent and uniform in the sample. Representations:
- perfect: one code dimension per factor, permuted, scaled and sign-flipped -> every metric ~1;
- random: independent Gaussian noise -> MIG / SAP ~0, DCI disentanglement small, FactorVAE / beta-VAE ~1/K;
- rotated: the standardised perfect code with factors 0 and 1 mixed by a 45 degree rotation -> lower
  MIG / SAP / DCI disentanglement than the perfect code (DCI disentanglement also checked against its
  closed form).
"""
import math

import numpy as np
import pytest

from tfvae.metrics import (beta_vae_score, dci, discretize, entropy, factor_vae_score, grid_sample_fn, mig,
                           mutual_information, sap)

SIZES = (3, 4, 5)
K = len(SIZES)
PERM = [2, 0, 1]                       # code dimension j holds factor PERM[j]
SCALE = np.array([2.0, -0.5, 3.0])
FAST = dict(num_train=300, num_eval=300, batch_size=32)   # vote / example counts for the sampled scores


def grid_factors(repeats=20):
    grid = np.stack(np.meshgrid(*[np.arange(s) for s in SIZES], indexing="ij"), axis=-1).reshape(-1, K)
    return np.tile(grid, (repeats, 1))


def perfect_code(factors):
    return factors[:, PERM] * SCALE + 1.0


def rotated_code(factors):
    std = (factors - factors.mean(axis=0)) / factors.std(axis=0)
    c, s = math.cos(math.pi / 4), math.sin(math.pi / 4)
    rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    return std @ rot.T


@pytest.fixture(scope="module")
def factors():
    return grid_factors()


@pytest.fixture(scope="module")
def random_code(factors):
    return np.random.default_rng(123).normal(size=(factors.shape[0], K))


# ------------------------------------------------------------------------------------------ perfect code

def test_perfect_code_scores_one(factors):
    z = perfect_code(factors)
    m = mig(factors, z)
    # equal-width bins separate every factor value and the other dimensions are exactly independent
    assert m["mig"] == pytest.approx(1.0, abs=1e-9)
    np.testing.assert_allclose(m["entropy"], np.log(SIZES), rtol=1e-12)
    assert sap(factors, z, rng=0)["sap"] > 0.99
    d = dci(factors, z, rng=0)
    assert d["disentanglement"] > 0.99 and d["completeness"] > 0.99 and d["informativeness"] > 0.99
    # the importance matrix puts factor PERM[j] on dimension j
    np.testing.assert_array_equal(np.argmax(d["importance"], axis=1), PERM)
    assert factor_vae_score(factors, z, rng=0, **FAST)["eval_accuracy"] > 0.95
    assert beta_vae_score(factors, z, rng=0, **FAST)["eval_accuracy"] > 0.95


def test_perfect_code_generative_interface():
    sample_fn = grid_sample_fn(SIZES)
    fv = factor_vae_score(sample_fn=sample_fn, representation_fn=perfect_code, num_variance_estimate=2000,
                          rng=1, **FAST)
    assert fv["eval_accuracy"] > 0.95 and fv["num_active_dims"] == K
    # every training vote for factor k lands on the dimension that holds it
    np.testing.assert_array_equal(np.argmax(fv["votes"], axis=1), PERM)
    bv = beta_vae_score(sample_fn=sample_fn, representation_fn=perfect_code, rng=1, **FAST)
    assert bv["eval_accuracy"] > 0.95


def test_noisy_perfect_code_with_a_nuisance_dimension(factors):
    """Small continuous noise plus a pure-noise fourth dimension: still clearly disentangled."""
    rng = np.random.default_rng(7)
    z = np.concatenate([perfect_code(factors) + 0.05 * rng.normal(size=(len(factors), K)),
                        rng.normal(size=(len(factors), 1))], axis=1)
    assert mig(factors, z)["mig"] > 0.8
    assert sap(factors, z, rng=0)["sap"] > 0.9
    assert dci(factors, z, rng=0)["disentanglement"] > 0.9
    assert factor_vae_score(factors, z, rng=0, **FAST)["eval_accuracy"] > 0.9
    assert beta_vae_score(factors, z, rng=0, **FAST)["eval_accuracy"] > 0.9


# ------------------------------------------------------------------------------------------- random code

def test_random_code_scores_near_zero_or_chance(factors, random_code):
    z = random_code
    assert mig(factors, z)["mig"] < 0.05
    assert sap(factors, z, rng=0)["sap"] < 0.1
    # linear |coefficients| of noise are a random point of the simplex, not uniform: ~0.16 on average for K=3
    d = dci(factors, z, rng=0)
    assert d["disentanglement"] < 0.35
    assert d["informativeness"] < 0.4          # ~ mean of 1/C_k = 0.26 (predicts the middle class)
    chance = 1.0 / K
    assert abs(factor_vae_score(factors, z, rng=0, **FAST)["eval_accuracy"] - chance) < 0.1
    assert abs(beta_vae_score(factors, z, rng=0, **FAST)["eval_accuracy"] - chance) < 0.1


# ------------------------------------------------------------------------------------------ rotated code

def test_rotation_scores_lower_than_perfect(factors):
    perfect, rotated = perfect_code(factors), rotated_code(factors)
    assert mig(factors, rotated)["mig"] < mig(factors, perfect)["mig"] - 0.3
    assert sap(factors, rotated, rng=0)["sap"] < sap(factors, perfect, rng=0)["sap"] - 0.3
    d_rot = dci(factors, rotated, rng=0)
    assert d_rot["disentanglement"] < dci(factors, perfect, rng=0)["disentanglement"] - 0.3
    # a linear model still recovers every factor from the rotated code
    assert d_rot["informativeness"] > 0.99


def test_dci_rotation_closed_form(factors):
    """Rows 0 and 1 of the importance matrix are (1/2, 1/2, 0) after normalising, row 2 is (0, 0, 1); the row
    weights are sqrt(2) : sqrt(2) : 1, so D = (2 sqrt(2) (1 - ln 2 / ln 3) + 1) / (2 sqrt(2) + 1)."""
    d = dci(factors, rotated_code(factors), rng=0)
    r2 = math.sqrt(2.0)
    expected = (2 * r2 * (1 - math.log(2) / math.log(3)) + 1) / (2 * r2 + 1)
    assert d["disentanglement"] == pytest.approx(expected, abs=0.02)
    np.testing.assert_allclose(d["disentanglement_per_code"][:2], 1 - math.log(2) / math.log(3), atol=0.02)


# ------------------------------------------------------------------------------------ MIG by hand (2 x 2)

def test_mutual_information_and_mig_on_a_2x2_table():
    """Factor v and code z0 with counts [[3, 1], [1, 3]] (N = 8); z1 independent of v ([[2, 2], [2, 2]]).
    I(v; z0) = 2 (3/8) ln((3/8) / (1/4)) + 2 (1/8) ln((1/8) / (1/4)) = (3/4) ln 1.5 - (1/4) ln 2,
    I(v; z1) = 0, H(v) = ln 2, so MIG = (3/4) log2(1.5) - 1/4 = 0.18872..."""
    v = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    z0 = np.array([0, 0, 0, 1, 0, 1, 1, 1])
    z1 = np.array([0, 0, 1, 1, 0, 0, 1, 1])
    i0 = 0.75 * math.log(1.5) - 0.25 * math.log(2.0)
    assert mutual_information(v, z0) == pytest.approx(i0, abs=1e-12)
    assert mutual_information(z0, v) == pytest.approx(i0, abs=1e-12)
    assert mutual_information(v, z1) == pytest.approx(0.0, abs=1e-12)
    assert mutual_information(v, v) == pytest.approx(math.log(2.0), abs=1e-12)
    assert entropy(v) == pytest.approx(math.log(2.0), abs=1e-12)
    expected = 0.75 * math.log2(1.5) - 0.25
    assert expected == pytest.approx(0.188722, abs=1e-6)
    codes = np.stack([z0, z1], axis=1)
    for num_bins in (None, 2, 20):              # 0/1 codes fall in the first and last bins
        m = mig(v[:, None], codes, num_bins=num_bins)
        assert m["mig"] == pytest.approx(expected, abs=1e-12)
        np.testing.assert_allclose(m["mutual_information"][:, 0], [i0, 0.0], atol=1e-12)
    # relabelling the values changes nothing
    assert mig(10 * v[:, None] - 3, 5.0 - 2.0 * codes)["mig"] == pytest.approx(expected, abs=1e-12)


def test_discretize_equal_width_bins():
    z = np.array([[0.0, 5.0], [0.5, 5.0], [1.0, 5.0], [0.26, 5.0]])
    np.testing.assert_array_equal(discretize(z, num_bins=4), [[0, 0], [2, 0], [3, 0], [1, 0]])


# -------------------------------------------------------------------------------------------- properties

def test_seeded_results_are_reproducible_and_permutation_invariant(factors, random_code):
    z = perfect_code(factors) + np.random.default_rng(3).normal(scale=0.5, size=(len(factors), K))
    assert sap(factors, z, rng=5)["sap"] == sap(factors, z, rng=np.random.default_rng(5))["sap"]
    assert factor_vae_score(factors, z, rng=5, **FAST)["eval_accuracy"] == \
        factor_vae_score(factors, z, rng=5, **FAST)["eval_accuracy"]
    perm = [1, 2, 0]
    assert mig(factors, z[:, perm])["mig"] == pytest.approx(mig(factors, z)["mig"], abs=1e-12)
    assert dci(factors, z[:, perm], rng=0)["disentanglement"] == pytest.approx(
        dci(factors, z, rng=0)["disentanglement"], abs=1e-9)


# -------------------------------------------------------------------------------------------- validation

@pytest.mark.parametrize("fn", [mig, sap, dci, factor_vae_score, beta_vae_score])
def test_input_validation(fn, factors):
    z = perfect_code(factors)
    with pytest.raises(ValueError, match="2-D"):
        fn(factors[:, 0], z)
    with pytest.raises(ValueError, match="rows"):
        fn(factors, z[:-1])
    with pytest.raises(ValueError, match="integer"):
        fn(factors + 0.5, z)
    with pytest.raises(ValueError, match="integer"):
        fn(factors.astype(str), z)
    bad = z.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fn(factors, bad)
    constant = factors.copy()
    constant[:, 1] = 7
    with pytest.raises(ValueError, match="single value"):
        fn(constant, z)
    with pytest.raises(ValueError, match="rows"):
        fn(factors[:1], z[:1])
    with pytest.raises(ValueError, match="rng"):
        fn(factors, z, rng=None)


def test_specific_validation(factors):
    z = perfect_code(factors)
    with pytest.raises(ValueError, match="dimensions"):
        mig(factors, z[:, :1])                   # a gap needs two code dimensions
    with pytest.raises(ValueError, match="dimensions"):
        sap(factors, z[:, :1])
    with pytest.raises(ValueError, match="K >= 2"):
        dci(factors[:, :1], z)
    with pytest.raises(ValueError, match="test"):
        sap(factors[::12][:5], z[::12][:5], test_fraction=0.1)   # 5 rows, each factor varies
    with pytest.raises(ValueError, match="not integer-valued"):
        mig(factors, z + 0.1, num_bins=None)
    with pytest.raises(ValueError, match="num_bins"):
        mig(factors, z, num_bins=1)
    # float factors are fine when integral
    assert mig(factors.astype(float), z)["mig"] == pytest.approx(1.0, abs=1e-9)
    sample_fn = grid_sample_fn(SIZES)
    with pytest.raises(ValueError, match="either"):
        factor_vae_score(factors, z, sample_fn=sample_fn, representation_fn=perfect_code)
    with pytest.raises(ValueError, match="either"):
        beta_vae_score()
    with pytest.raises(ValueError, match="did not fix"):
        factor_vae_score(sample_fn=lambda k, v, n, rng: sample_fn(None, None, n, rng),
                         representation_fn=perfect_code, **FAST)
    with pytest.raises(ValueError, match="rows"):
        beta_vae_score(sample_fn=sample_fn, representation_fn=lambda f: perfect_code(f)[:-1], **FAST)
    with pytest.raises(ValueError, match="batch_size"):
        factor_vae_score(factors, z, batch_size=1)


# ------------------------------------------------------------------------- batched votes = vote by vote

MIX = np.random.default_rng(21).normal(size=(K, 4))
GRID_NOISE = np.random.default_rng(22).normal(size=(int(np.prod(SIZES)), 4))


def mixed_code(factors):
    """A fixed linear map of the factors plus noise that depends only on the factor values; elementwise, so
    each row's code is bit-identical however many rows are passed together."""
    f = np.asarray(factors)
    index = (f[:, 0] * SIZES[1] + f[:, 1]) * SIZES[2] + f[:, 2]
    return f[:, 0:1] * MIX[0] + f[:, 1:2] * MIX[1] + f[:, 2:3] * MIX[2] + 0.8 * GRID_NOISE[index]


def per_vote_factor_vae(draw, num_factors, scale, L, num_train, num_eval, rng):
    """The FactorVAE score one vote at a time (the straightforward algorithm): (eval accuracy, training votes).
    ``draw(k, u, n) -> (factors, codes)`` draws n rows given factor k == u (k=None: unconditionally)."""
    active = scale >= 0.05 * scale.max()
    safe = np.where(active, scale, 1.0)

    def vote():
        k = int(rng.integers(num_factors))
        u = draw(None, None, 1)[0][0, k]
        z = draw(k, u, L)[1] / safe
        return int(np.argmin(np.where(active, z.var(axis=0, ddof=1), np.inf))), k

    votes = np.zeros((scale.size, num_factors), dtype=np.int64)
    for _ in range(num_train):
        votes[vote()] += 1
    classifier = np.argmax(votes, axis=1)
    fv = np.mean([classifier[j] == k for j, k in (vote() for _ in range(num_eval))])
    return fv, votes


def per_example_beta_vae(draw, num_factors, L, num_train, num_eval, steps, lr, l2, rng):
    """The beta-VAE score one example at a time: (eval accuracy, weights, bias)."""
    def example():
        k = int(rng.integers(num_factors))
        f1, z1 = draw(None, None, L)
        z2 = np.empty_like(z1)
        for u in np.unique(f1[:, k]):
            at = np.flatnonzero(f1[:, k] == u)
            z2[at] = draw(k, u, at.size)[1]
        return np.abs(z1 - z2).mean(axis=0), k

    def dataset(size):
        pairs = [example() for _ in range(size)]
        return np.stack([p[0] for p in pairs]), np.array([p[1] for p in pairs])

    (x, y), (xe, ye) = dataset(num_train), dataset(num_eval)
    mean, std = x.mean(axis=0), x.std(axis=0)
    std = np.where(std > 0, std, 1.0)
    x, xe = (x - mean) / std, (xe - mean) / std
    w, b = np.zeros((x.shape[1], num_factors)), np.zeros(num_factors)
    for _ in range(steps):
        logits = x @ w + b
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        grad = (p / p.sum(axis=1, keepdims=True) - np.eye(num_factors)[y]) / len(y)
        w -= lr * (x.T @ grad + l2 * w)
        b -= lr * grad.sum(axis=0)
    return np.mean(np.argmax(xe @ w + b, axis=1) == ye), w, b


@pytest.mark.parametrize("interface", ["generative", "pairs"])
def test_batched_scores_equal_the_vote_by_vote_computation(interface):
    """Both scores draw all the rows of a phase, then code them in one call: the numbers must be exactly those
    of drawing and coding vote by vote with the same seed, with a few representation_fn calls, not one per vote."""
    L, num_train, num_eval, nve, steps, lr, l2 = 16, 120, 80, 500, 200, 0.5, 1e-4
    sample_fn = grid_sample_fn(SIZES)
    pairs_f = grid_factors(4)[np.random.default_rng(8).permutation(240)]
    pairs_z = mixed_code(pairs_f)
    calls = []

    def counted(f):
        calls.append(len(f))
        return mixed_code(f)

    def oracle_draw(rng):
        def draw(k, u, n):
            if interface == "generative":
                f = sample_fn(k, u, n, rng)
                return f, mixed_code(f)
            rows = np.arange(len(pairs_f)) if k is None else np.flatnonzero(pairs_f[:, k] == u)
            idx = rows[rng.integers(0, rows.size, size=n)]
            return pairs_f[idx], pairs_z[idx]
        return draw

    if interface == "generative":
        kw = dict(sample_fn=sample_fn, representation_fn=counted)
    else:
        kw = dict(factors=pairs_f, codes=pairs_z)

    # FactorVAE
    rng = np.random.default_rng(5)
    if interface == "generative":
        sample_fn(None, None, 2, rng)                       # the source's probe draw
        scale = mixed_code(sample_fn(None, None, nve, rng)).std(axis=0)
    else:
        scale = pairs_z.std(axis=0)
    want_fv, want_votes = per_vote_factor_vae(oracle_draw(rng), K, scale, L, num_train, num_eval, rng)
    got = factor_vae_score(**kw, batch_size=L, num_train=num_train, num_eval=num_eval, num_variance_estimate=nve,
                           rng=5)
    assert got["eval_accuracy"] == want_fv
    np.testing.assert_array_equal(got["votes"], want_votes)
    if interface == "generative":
        # variance estimate, training votes, evaluation votes; the draw giving u is never coded
        assert calls == [nve, num_train * L, num_eval * L]

    # beta-VAE
    calls.clear()
    rng = np.random.default_rng(6)
    if interface == "generative":
        sample_fn(None, None, 2, rng)
    want_bv, want_w, want_b = per_example_beta_vae(oracle_draw(rng), K, L, num_train, num_eval, steps, lr, l2, rng)
    got = beta_vae_score(**kw, batch_size=L, num_train=num_train, num_eval=num_eval, steps=steps,
                         learning_rate=lr, l2=l2, rng=6)
    assert got["eval_accuracy"] == want_bv
    np.testing.assert_array_equal(got["weights"], want_w)
    np.testing.assert_array_equal(got["bias"], want_b)
    if interface == "generative":
        assert calls == [2 * num_train * L, 2 * num_eval * L]
    assert 0.45 < want_fv < 0.9 and 0.45 < want_bv < 0.9     # informative but imperfect: a non-trivial check
