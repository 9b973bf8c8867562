"""Disentanglement metrics on numpy arrays: MIG, SAP, DCI, the FactorVAE score and the beta-VAE score.

Conventions shared by every function here:

- ``factors``: integer array ``[N, K]`` of discrete ground-truth factor values (e.g. shape, scale,
  orientation, x, y of dSprites). Any integers are allowed (they need not be ``0..C-1``); a float array is
  accepted only when every entry is an integral number. Each factor must take at least two values.
- ``codes``: float array ``[N, D]``, the representation of the same ``N`` examples (e.g. encoder means).
- ``rng``: an ``int`` seed or a ``numpy.random.Generator``; every function takes it explicitly, defaulting
  to the seed ``0`` so that results are reproducible. Deterministic metrics (MIG) use it only to subsample.
- Results are dicts: the headline score(s) plus the intermediate quantities (matrices, per-factor values).
- Invalid inputs raise ``ValueError`` with a message saying what is wrong.

MIG, SAP and DCI work from ``(factors, codes)`` pairs. The FactorVAE and beta-VAE scores need samples in
which one factor is held fixed; they accept either ``(factors, codes)`` pairs, in which case conditional
samples are drawn (with replacement) from the rows that share the fixed value, or a generative interface::

    sample_fn(factor_index, value, n, rng) -> int array [n, K]
        n i.i.d. draws of the ground-truth factors conditioned on factors[:, factor_index] == value;
        with factor_index=None and value=None, n unconditional draws. ``rng`` is a numpy Generator.
    representation_fn(factors) -> float array [n, D]
        the codes of the observations generated from those factors (e.g. render the images, encode them,
        return the posterior means). Row i of the codes must depend on row i of the factors only. The scores
        call it once per phase on all the rows of that phase (votes x batch_size rows for the FactorVAE score,
        2 x examples x batch_size for the beta-VAE score: 1,280,000 with its defaults), so it should work
        through a large n in chunks.

`tfvae.data.factors.grid_sample_fn(factor_sizes)` (also `tfvae.metrics.grid_sample_fn`) builds ``sample_fn`` for a full factorial grid with independent uniform factors
(the dSprites / 3D Shapes design).

All estimators are written here in numpy (no scikit-learn); the choices are stated in each docstring.
"""
from __future__ import annotations

import numbers

import numpy as np

__all__ = ["beta_vae_score", "dci", "discretize", "entropy", "factor_vae_score", "mig",
           "mutual_information", "sap"]


# --------------------------------------------------------------------------------------------- validation

def _as_rng(rng):
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, numbers.Integral) and not isinstance(rng, bool):
        if rng < 0:
            raise ValueError(f"rng seed must be non-negative, got {rng}")
        return np.random.default_rng(int(rng))
    raise ValueError(f"rng must be an int seed or a numpy.random.Generator, got {type(rng).__name__}")


def _as_factors(factors, name="factors", min_rows=2):
    arr = np.asarray(factors)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array [N, K], got shape {arr.shape}")
    n, k = arr.shape
    if k < 1:
        raise ValueError(f"{name} must have at least one factor column, got shape {arr.shape}")
    if n < min_rows:
        raise ValueError(f"{name} has {n} rows; this metric needs at least {min_rows}")
    if arr.dtype == bool or np.issubdtype(arr.dtype, np.integer):
        return arr.astype(np.int64)
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)):
            raise ValueError(f"{name} contains NaN or infinite values")
        if not np.all(arr == np.round(arr)):
            raise ValueError(f"{name} must be integer-valued (discrete factors); found non-integer values")
        return arr.astype(np.int64)
    raise ValueError(f"{name} must be an integer array, got dtype {arr.dtype}")


def _as_codes(codes, n=None, name="codes", min_dims=1):
    try:
        arr = np.asarray(codes, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{name} must be a numeric array [N, D]: {err}") from None
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array [N, D], got shape {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} rows but factors has {n}; they must describe the same examples")
    if arr.shape[1] < min_dims:
        raise ValueError(f"{name} has {arr.shape[1]} dimensions; this metric needs at least {min_dims}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def _labels(column):
    """Maps one factor column to class indices 0..C-1 (in sorted order of the values) and returns (labels, C)."""
    values, labels = np.unique(column, return_inverse=True)
    return labels.reshape(-1), len(values)


def _check_varying(factors):
    for k in range(factors.shape[1]):
        if np.unique(factors[:, k]).size < 2:
            raise ValueError(f"factor {k} takes a single value in the data; every factor must vary")


def _positive_int(value, name, minimum=1):
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _split(n, test_fraction, rng):
    """Random train/test split of n rows; both parts must hold at least 2 rows."""
    if not (isinstance(test_fraction, numbers.Real) and 0.0 < test_fraction < 1.0):
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    n_test = int(round(n * test_fraction))
    if n_test < 2 or n - n_test < 2:
        raise ValueError(f"{n} examples with test_fraction={test_fraction} leave {n - n_test} train and {n_test} "
                         "test rows; both need at least 2 (pass more examples)")
    perm = rng.permutation(n)
    return perm[n_test:], perm[:n_test]


def _standardize(train, *others):
    mean = train.mean(axis=0)
    std = train.std(axis=0)
    std = np.where(std > 0, std, 1.0)   # a constant column becomes all zeros
    return [(x - mean) / std for x in (train,) + others]


# ------------------------------------------------------------------------------------------ information

def entropy(labels):
    """Plug-in (maximum-likelihood) entropy, in nats, of a discrete variable: H(v) = -sum_v p(v) log p(v),
    with p the empirical frequencies of ``labels`` (1-D array of any hashable integers)."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0:
        raise ValueError(f"labels must be a non-empty 1-D array, got shape {labels.shape}")
    _, counts = np.unique(labels, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum())


def mutual_information(a, b):
    """Plug-in mutual information, in nats, of two discrete variables observed jointly:

        I(a; b) = sum_{i,j} p(i, j) log[ p(i, j) / (p(i) p(j)) ],

    with p the empirical joint frequencies (the contingency table of ``a`` and ``b`` divided by N). The plug-in
    estimate is biased upward by about (|a| - 1)(|b| - 1) / (2N) nats for independent variables.
    """
    a = np.asarray(a)
    b = np.asarray(b)
    if a.ndim != 1 or b.ndim != 1 or a.size != b.size or a.size == 0:
        raise ValueError(f"a and b must be non-empty 1-D arrays of the same length, got {a.shape} and {b.shape}")
    ia, na = _labels(a)
    ib, nb = _labels(b)
    joint = np.zeros((na, nb))
    np.add.at(joint, (ia, ib), 1.0)
    joint /= a.size
    pa = joint.sum(axis=1, keepdims=True)
    pb = joint.sum(axis=0, keepdims=True)
    nz = joint > 0
    return float((joint[nz] * np.log(joint[nz] / (pa @ pb)[nz])).sum())


def discretize(codes, num_bins=20):
    """Discretises each column of ``codes`` [N, D] into ``num_bins`` equal-width bins spanning that column's
    [min, max] (the histogram discretisation used for MIG by Chen et al. 2018). Returns int array [N, D] with
    values in 0..num_bins-1; a constant column maps to all zeros."""
    codes = _as_codes(codes)
    num_bins = _positive_int(num_bins, "num_bins", 2)
    lo = codes.min(axis=0)
    span = codes.max(axis=0) - lo
    span = np.where(span > 0, span, 1.0)
    pos = (codes - lo) / span                            # in [0, 1]
    return np.clip(np.floor(pos * num_bins), 0, num_bins - 1).astype(np.int64)


# --------------------------------------------------------------------------------------------------- MIG

def mig(factors, codes, *, num_bins=20, max_samples=None, rng=0):
    """Mutual Information Gap (Chen, Li, Grosse & Duvenaud 2018, "Isolating Sources of Disentanglement in
    Variational Autoencoders", NeurIPS).

    Each code dimension z_j is discretised into ``num_bins`` equal-width bins (see `discretize`); with
    ``num_bins=None`` the codes are taken as already discrete and must be integer-valued. With the plug-in
    estimates I(v_k; z_j) (`mutual_information`) and H(v_k) (`entropy`),

        MIG = (1/K) sum_k [ I(v_k; z_{j(1)}) - I(v_k; z_{j(2)}) ] / H(v_k),

    where j(1), j(2) are the dimensions with the largest and second-largest mutual information with factor k.
    MIG is in [0, 1]: 1 when each factor is captured fully by one dimension and not at all by the others.
    (The paper estimates I(v_k; z_j) from the encoder's q(z|x); the histogram estimate on codes is the
    common practical substitute.)

    Args:
        factors: int [N, K]; each factor must vary. codes: float [N, D], D >= 2.
        num_bins: bins per code dimension, or None for already-discrete codes.
        max_samples: if given and < N, the metric is computed on that many rows drawn without replacement.
        rng: seed or Generator; used only for ``max_samples`` subsampling.

    Returns:
        dict: ``mig`` (float), ``per_factor`` [K] normalised gaps, ``mutual_information`` [D, K] in nats,
        ``entropy`` [K] factor entropies in nats.
    """
    factors = _as_factors(factors, min_rows=2)
    n, num_factors = factors.shape
    codes = _as_codes(codes, n, min_dims=2)
    rng = _as_rng(rng)
    if max_samples is not None:
        max_samples = _positive_int(max_samples, "max_samples", 2)
        if max_samples < n:
            idx = rng.choice(n, size=max_samples, replace=False)
            factors, codes = factors[idx], codes[idx]
    _check_varying(factors)
    if num_bins is None:
        if not np.all(codes == np.round(codes)):
            raise ValueError("num_bins=None means the codes are already discrete, but they are not integer-valued")
        discrete = codes.astype(np.int64)
    else:
        discrete = discretize(codes, num_bins)
    num_dims = discrete.shape[1]
    mi = np.array([[mutual_information(discrete[:, j], factors[:, k]) for k in range(num_factors)]
                   for j in range(num_dims)])
    ent = np.array([entropy(factors[:, k]) for k in range(num_factors)])
    top = np.sort(mi, axis=0)[::-1]
    per_factor = (top[0] - top[1]) / ent
    return {"mig": float(per_factor.mean()), "per_factor": per_factor, "mutual_information": mi, "entropy": ent}


# --------------------------------------------------------------------------------------------------- SAP

def _nearest_centroid_predict(x_train, y_train, num_classes, x_test):
    """1-D nearest-centroid classifier: class centroids are the train means of x; predicts the class of the
    closest centroid (equivalently, thresholds at the midpoints between sorted centroids). Classes absent from
    the training set are never predicted."""
    present = np.flatnonzero(np.bincount(y_train, minlength=num_classes) > 0)
    centroids = np.array([x_train[y_train == c].mean() for c in present])
    return present[np.argmin(np.abs(x_test[:, None] - centroids[None, :]), axis=1)]


def _balanced_accuracy(y_true, y_pred):
    classes = np.unique(y_true)
    return float(np.mean([np.mean(y_pred[y_true == c] == c) for c in classes]))


def sap(factors, codes, *, test_fraction=0.5, chance_corrected=True, rng=0):
    """Separated Attribute Predictability (Kumar, Sattigeri & Balakrishnan 2018, "Variational Inference of
    Disentangled Latent Concepts from Unlabeled Observations", ICLR).

    For every code dimension j and factor k, a classifier that sees only z_j is fit on a random train split
    and scored on the held-out split, giving the score matrix S[j, k]; then

        SAP = (1/K) sum_k ( S[j(1), k] - S[j(2), k] ),

    the mean gap between the best and second-best single-dimension predictors of each factor.

    Estimator choices (discrete factors): the classifier is a 1-D nearest-centroid rule (class means of z_j,
    i.e. thresholds at midpoints between sorted centroids). The score is the test balanced accuracy
    (mean per-class recall), whose chance level is exactly 1/C_k for C_k classes. With ``chance_corrected``
    (default) it is rescaled to ``max(0, (bacc - 1/C_k) / (1 - 1/C_k))`` so that an uninformative dimension
    scores ~0 and a perfect one 1, which makes SAP ~1 for a perfect code whatever the number of classes; with
    ``chance_corrected=False`` the raw balanced accuracy is used (as in the paper's accuracy-based variant),
    and a perfect code then scores about 1 - 1/C.

    Args:
        factors: int [N, K]; each factor must vary. codes: float [N, D], D >= 2.
        test_fraction: share of the rows held out for scoring; both splits need >= 2 rows.
        rng: seed or Generator for the split.

    Returns:
        dict: ``sap`` (float), ``per_factor`` [K] gaps, ``scores`` [D, K] the matrix S.
    """
    factors = _as_factors(factors, min_rows=4)
    n, num_factors = factors.shape
    codes = _as_codes(codes, n, min_dims=2)
    _check_varying(factors)
    rng = _as_rng(rng)
    train, test = _split(n, test_fraction, rng)
    num_dims = codes.shape[1]
    scores = np.zeros((num_dims, num_factors))
    for k in range(num_factors):
        y, num_classes = _labels(factors[:, k])
        for j in range(num_dims):
            pred = _nearest_centroid_predict(codes[train, j], y[train], num_classes, codes[test, j])
            bacc = _balanced_accuracy(y[test], pred)
            if chance_corrected:
                bacc = max(0.0, (bacc - 1.0 / num_classes) / (1.0 - 1.0 / num_classes))
            scores[j, k] = bacc
    top = np.sort(scores, axis=0)[::-1]
    per_factor = top[0] - top[1]
    return {"sap": float(per_factor.mean()), "per_factor": per_factor, "scores": scores}


# --------------------------------------------------------------------------------------------------- DCI

def _normalised_entropy(p, axis):
    """Entropy of distributions along ``axis`` (rows of p sum to 1), in base = size of that axis."""
    base = p.shape[axis]
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, p * np.log(p), 0.0)
    return -terms.sum(axis=axis) / np.log(base)


def dci(factors, codes, *, test_fraction=0.5, ridge=1e-6, rng=0):
    """Disentanglement, Completeness and Informativeness (Eastwood & Williams 2018, "A Framework for the
    Quantitative Evaluation of Disentangled Representations", ICLR).

    One regressor per factor predicts v_k from all of z; its feature importances form column k of the
    importance matrix R [D, K] (R[j, k] >= 0). With P[j, k] = R[j, k] / sum_k R[j, k] and
    Q[j, k] = R[j, k] / sum_j R[j, k]:

        D_j = 1 - H_K(P[j, :])       (entropy in base K)     disentanglement of code dimension j
        C_k = 1 - H_D(Q[:, k])       (entropy in base D)     completeness of factor k
        disentanglement = sum_j rho_j D_j,   rho_j = sum_k R[j, k] / sum R
        completeness    = sum_k w_k C_k,     w_k   = sum_j R[j, k] / sum R

    Estimator choice (no scikit-learn; the paper used Lasso and random forests): per factor, ridge-stabilised
    least squares (``ridge`` times N on the diagonal, default almost plain least squares) of the standardised
    factor value on the standardised codes, both standardised with train-split statistics; R[j, k] = |w_jk|.
    The factor value is its class index in sorted order, i.e. the factor is treated as ordinal. A linear model
    cannot see non-monotone or categorical dependence, and for a code with no information the |w| of noise are
    a random point of the simplex rather than uniform, so a random code scores ~0.14-0.17 in disentanglement
    for K = 3-5 (not 0).

    Informativeness (higher is better here): test-split accuracy of predicting the factor class by rounding the
    linear prediction to the nearest class index, averaged over factors. ``nrmse`` gives Eastwood & Williams'
    error form: test RMSE of the prediction divided by the standard deviation of the factor's class index.

    Args:
        factors: int [N, K], K >= 2, each factor varying. codes: float [N, D], D >= 2.
        test_fraction: share of rows held out for informativeness; both splits need >= 2 rows.
        ridge: L2 penalty (per example) of the least-squares fits, >= 0.
        rng: seed or Generator for the split.

    Returns:
        dict: ``disentanglement``, ``completeness``, ``informativeness`` (floats), ``importance`` [D, K],
        ``disentanglement_per_code`` [D], ``completeness_per_factor`` [K], ``informativeness_per_factor`` [K]
        (test accuracy), ``train_accuracy`` [K], ``nrmse`` [K].
    """
    factors = _as_factors(factors, min_rows=4)
    n, num_factors = factors.shape
    if num_factors < 2:
        raise ValueError("DCI needs K >= 2 factors (disentanglement is an entropy in base K)")
    codes = _as_codes(codes, n, min_dims=2)
    _check_varying(factors)
    if not (isinstance(ridge, numbers.Real) and ridge >= 0):
        raise ValueError(f"ridge must be a non-negative number, got {ridge!r}")
    rng = _as_rng(rng)
    train, test = _split(n, test_fraction, rng)
    x_train, x_test = _standardize(codes[train], codes[test])
    num_dims = codes.shape[1]
    gram = x_train.T @ x_train + ridge * len(train) * np.eye(num_dims)
    importance = np.zeros((num_dims, num_factors))
    test_acc = np.zeros(num_factors)
    train_acc = np.zeros(num_factors)
    nrmse = np.zeros(num_factors)
    for k in range(num_factors):
        y, num_classes = _labels(factors[:, k])
        y = y.astype(np.float64)
        mean, std = y[train].mean(), y[train].std()
        if std == 0:
            raise ValueError(f"factor {k} is constant on the training split; pass more examples")
        target = (y[train] - mean) / std
        w = np.linalg.lstsq(gram, x_train.T @ target, rcond=None)[0]
        importance[:, k] = np.abs(w)

        def predict(x):
            return np.clip(np.round(x @ w * std + mean), 0, num_classes - 1)
        train_acc[k] = np.mean(predict(x_train) == y[train])
        test_acc[k] = np.mean(predict(x_test) == y[test])
        nrmse[k] = np.sqrt(np.mean((x_test @ w * std + mean - y[test]) ** 2)) / std
    total = importance.sum()
    if total <= 0:
        raise ValueError("the importance matrix is all zero (constant codes?); DCI is undefined")
    row = importance.sum(axis=1)
    col = importance.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(row[:, None] > 0, importance / row[:, None], 0.0)
        q = np.where(col[None, :] > 0, importance / col[None, :], 0.0)
    d_per = np.where(row > 0, 1.0 - _normalised_entropy(p, axis=1), 0.0)
    c_per = np.where(col > 0, 1.0 - _normalised_entropy(q, axis=0), 0.0)
    return {
        "disentanglement": float((d_per * row / total).sum()),
        "completeness": float((c_per * col / total).sum()),
        "informativeness": float(test_acc.mean()),
        "importance": importance,
        "disentanglement_per_code": d_per,
        "completeness_per_factor": c_per,
        "informativeness_per_factor": test_acc,
        "train_accuracy": train_acc,
        "nrmse": nrmse,
    }


# ------------------------------------------------------------------------------- samplers for fixed factors

class _PairSource:
    """Draws from a finite set of (factors, codes) pairs, with replacement; conditional draws use the rows whose
    factor equals the value. A drawn batch of rows is an int array of row indices [n]; `factors_of` and
    `codes_of` look their factors and codes up (one lookup for any number of rows)."""

    def __init__(self, factors, codes):
        self.factors = _as_factors(factors, min_rows=2)
        self.codes = _as_codes(codes, self.factors.shape[0])
        _check_varying(self.factors)
        self.num_factors = self.factors.shape[1]
        self._rows = [{v: np.flatnonzero(self.factors[:, k] == v) for v in np.unique(self.factors[:, k])}
                      for k in range(self.num_factors)]

    def draw(self, n, rng):
        return rng.integers(0, self.factors.shape[0], size=n)

    def draw_given(self, k, value, n, rng):
        rows = self._rows[k][value]
        return rows[rng.integers(0, rows.size, size=n)]

    def draw_matching(self, k, values, rng):
        """One row per entry of ``values``: row l drawn given factor k == values[l]."""
        idx = np.empty(len(values), dtype=np.int64)
        for u in np.unique(values):
            at = np.flatnonzero(values == u)
            rows = self._rows[k][u]
            idx[at] = rows[rng.integers(0, rows.size, size=at.size)]
        return idx

    def factors_of(self, rows):
        return self.factors[rows]

    def codes_of(self, rows):
        return self.codes[rows]


class _GenerativeSource:
    """Draws factors from ``sample_fn`` and maps them to codes with ``representation_fn``, checking both. A drawn
    batch of rows is its factor array [n, K]; `codes_of` calls ``representation_fn`` once on the rows it is
    given (the scores pass all the rows of a phase at once)."""

    def __init__(self, sample_fn, representation_fn, rng):
        if not callable(sample_fn) or not callable(representation_fn):
            raise ValueError("sample_fn and representation_fn must both be callables")
        self.sample_fn = sample_fn
        self.representation_fn = representation_fn
        probe = self._factors(None, None, 2, rng)
        self.num_factors = probe.shape[1]
        self.num_dims = None

    def _factors(self, k, value, n, rng):
        f = _as_factors(self.sample_fn(k, value, n, rng), name="sample_fn output", min_rows=1)
        if f.shape[0] != n:
            raise ValueError(f"sample_fn returned {f.shape[0]} rows, {n} were requested")
        if hasattr(self, "num_factors") and f.shape[1] != self.num_factors:
            raise ValueError(f"sample_fn returned {f.shape[1]} factors, earlier {self.num_factors}")
        if k is not None and not np.all(f[:, k] == value):
            raise ValueError(f"sample_fn(factor_index={k}, value={value}, ...) did not fix that factor")
        return f

    def draw(self, n, rng):
        return self._factors(None, None, n, rng)

    def draw_given(self, k, value, n, rng):
        return self._factors(k, value, n, rng)

    def draw_matching(self, k, values, rng):
        """One row per entry of ``values``: row l drawn given factor k == values[l], value by value."""
        f = np.empty((len(values), self.num_factors), dtype=np.int64)
        for u in np.unique(values):
            at = np.flatnonzero(values == u)
            f[at] = self._factors(k, u, at.size, rng)
        return f

    def factors_of(self, rows):
        return rows

    def codes_of(self, rows):
        z = _as_codes(self.representation_fn(rows), rows.shape[0], name="representation_fn output")
        if self.num_dims is None:
            self.num_dims = z.shape[1]
        elif z.shape[1] != self.num_dims:
            raise ValueError(f"representation_fn returned {z.shape[1]} dimensions, earlier {self.num_dims}")
        return z


def _source(factors, codes, sample_fn, representation_fn, rng):
    pairs = factors is not None or codes is not None
    generative = sample_fn is not None or representation_fn is not None
    if pairs == generative:
        raise ValueError("pass either (factors, codes) or (sample_fn=..., representation_fn=...), not both/neither")
    if pairs:
        if factors is None or codes is None:
            raise ValueError("factors and codes must be given together")
        return _PairSource(factors, codes)
    return _GenerativeSource(sample_fn, representation_fn, rng)


# ----------------------------------------------------------------------------------------- FactorVAE score

def factor_vae_score(factors=None, codes=None, *, sample_fn=None, representation_fn=None, batch_size=64,
                     num_train=10000, num_eval=5000, num_variance_estimate=10000, prune_threshold=0.05, rng=0):
    """FactorVAE disentanglement score (Kim & Mnih 2018, "Disentangling by Factorising", ICML).

    1. Global scale: s_j = std of z_j over unconditional samples (all given codes when (factors, codes) are
       passed; else ``num_variance_estimate`` draws). Dimensions with s_j < ``prune_threshold`` * max_j s_j are
       treated as collapsed and never chosen.
    2. A vote: pick a factor k uniformly, a value u from its marginal (the k-th factor of one unconditional
       draw), then ``batch_size`` samples with v_k = u; the vote is (argmin_j Var_batch(z_j / s_j), k) over the
       active dimensions (unbiased variance).
    3. Majority-vote classifier: dimension j predicts the factor most often voted with j in ``num_train``
       training votes (ties go to the lower factor index; a dimension never voted predicts factor 0).
       The score is its accuracy on ``num_eval`` fresh votes. Chance level is ~1/K.

    Samples come either from (factors, codes) pairs (conditional draws are rows with v_k = u, with
    replacement) or from ``sample_fn(factor_index, value, n, rng) -> int [n, K]`` and
    ``representation_fn(factors [n, K]) -> float [n, D]`` (see the module docstring). The factors of all the
    votes of a phase are drawn first, in the order above, and coded in one ``representation_fn`` call per phase
    (variance estimate, training, evaluation); the draw giving u is never coded.

    Returns:
        dict: ``eval_accuracy`` (the score), ``train_accuracy``, ``num_active_dims``, ``votes`` [D, K] counts of
        the training votes.
    """
    rng = _as_rng(rng)
    source = _source(factors, codes, sample_fn, representation_fn, rng)
    batch_size = _positive_int(batch_size, "batch_size", 2)
    num_train = _positive_int(num_train, "num_train")
    num_eval = _positive_int(num_eval, "num_eval")
    num_variance_estimate = _positive_int(num_variance_estimate, "num_variance_estimate", 2)
    if not (isinstance(prune_threshold, numbers.Real) and 0 <= prune_threshold < 1):
        raise ValueError(f"prune_threshold must be in [0, 1), got {prune_threshold!r}")
    if isinstance(source, _PairSource):
        global_codes = source.codes
    else:
        global_codes = source.codes_of(source.draw(num_variance_estimate, rng))
    scale = global_codes.std(axis=0)
    if scale.max() <= 0:
        raise ValueError("all code dimensions are constant; the FactorVAE score is undefined")
    active = scale >= prune_threshold * scale.max()
    num_dims = scale.size
    safe_scale = np.where(active, scale, 1.0)

    def votes_of(num_votes):
        """(argmin dimension, factor) of ``num_votes`` votes, as int arrays. The rows of every vote are drawn
        first (the same draws, in the same order, as vote by vote), then coded in one `codes_of` call; the
        row giving u is only read for its factor k, never coded."""
        ks = np.empty(num_votes, dtype=np.int64)
        rows = []
        for i in range(num_votes):
            k = int(rng.integers(source.num_factors))
            u = source.factors_of(source.draw(1, rng))[0, k]
            rows.append(source.draw_given(k, u, batch_size, rng))
            ks[i] = k
        codes = source.codes_of(np.concatenate(rows))
        js = np.empty(num_votes, dtype=np.int64)
        for i in range(num_votes):
            z = codes[i * batch_size:(i + 1) * batch_size] / safe_scale
            js[i] = np.argmin(np.where(active, z.var(axis=0, ddof=1), np.inf))
        return js, ks

    votes = np.zeros((num_dims, source.num_factors), dtype=np.int64)
    np.add.at(votes, votes_of(num_train), 1)
    classifier = np.argmax(votes, axis=1)
    train_accuracy = votes[np.arange(num_dims), classifier].sum() / num_train
    js, ks = votes_of(num_eval)
    correct = int(np.sum(classifier[js] == ks))
    return {"eval_accuracy": float(correct / num_eval), "train_accuracy": float(train_accuracy),
            "num_active_dims": int(active.sum()), "votes": votes}


# ------------------------------------------------------------------------------------------ beta-VAE score

def _softmax_regression(x, y, num_classes, steps, learning_rate, l2):
    """Multinomial logistic regression by full-batch gradient descent on the mean cross-entropy plus
    l2/2 ||W||^2, from zero weights (deterministic). Returns (W [D, C], b [C])."""
    n, d = x.shape
    w = np.zeros((d, num_classes))
    b = np.zeros(num_classes)
    onehot = np.eye(num_classes)[y]
    for _ in range(steps):
        logits = x @ w + b
        logits -= logits.max(axis=1, keepdims=True)
        prob = np.exp(logits)
        prob /= prob.sum(axis=1, keepdims=True)
        grad = (prob - onehot) / n
        w -= learning_rate * (x.T @ grad + l2 * w)
        b -= learning_rate * grad.sum(axis=0)
    return w, b


def beta_vae_score(factors=None, codes=None, *, sample_fn=None, representation_fn=None, batch_size=64,
                   num_train=10000, num_eval=5000, steps=500, learning_rate=0.5, l2=1e-4, rng=0):
    """beta-VAE disentanglement score (Higgins et al. 2017, "beta-VAE: Learning Basic Visual Concepts with a
    Constrained Variational Framework", ICLR).

    One example: pick a factor k uniformly; draw ``batch_size`` pairs (v1_l, v2_l) with v1_l unconditional and
    v2_l drawn conditionally on v2_{l,k} = v1_{l,k} (for independent factors this is "same k-th factor, all
    others resampled"); with z = codes of each,

        x = (1/L) sum_l |z(v1_l) - z(v2_l)|   (per dimension),   label = k.

    A linear classifier predicts k from x; the score is its accuracy on ``num_eval`` fresh examples (chance
    ~1/K). Classifier choice: multinomial logistic regression on x standardised with training statistics,
    ``steps`` of full-batch gradient descent (``learning_rate``, L2 penalty ``l2``) from zero weights.

    Samples come either from (factors, codes) pairs (conditional draws are rows sharing the value, with
    replacement) or from ``sample_fn(factor_index, value, n, rng) -> int [n, K]`` and
    ``representation_fn(factors [n, K]) -> float [n, D]`` (see the module docstring). The factors of all the
    examples of a phase (training, evaluation) are drawn first, in the order above, and coded in one
    ``representation_fn`` call per phase (2 x ``batch_size`` rows per example).

    Returns:
        dict: ``eval_accuracy`` (the score), ``train_accuracy``, ``weights`` [D, K], ``bias`` [K].
    """
    rng = _as_rng(rng)
    source = _source(factors, codes, sample_fn, representation_fn, rng)
    batch_size = _positive_int(batch_size, "batch_size", 1)
    num_train = _positive_int(num_train, "num_train", 2)
    num_eval = _positive_int(num_eval, "num_eval")
    steps = _positive_int(steps, "steps")
    if not (isinstance(learning_rate, numbers.Real) and learning_rate > 0):
        raise ValueError(f"learning_rate must be positive, got {learning_rate!r}")
    if not (isinstance(l2, numbers.Real) and l2 >= 0):
        raise ValueError(f"l2 must be non-negative, got {l2!r}")

    def dataset(size):
        """(x [size, D], labels [size]) of ``size`` examples. The rows of every example (its v1 batch, then its
        v2 batch) are drawn first, in the same order as example by example, then coded in one `codes_of` call."""
        labels = np.empty(size, dtype=np.int64)
        rows = []
        for i in range(size):
            k = int(rng.integers(source.num_factors))
            rows1 = source.draw(batch_size, rng)
            rows.append(rows1)
            rows.append(source.draw_matching(k, source.factors_of(rows1)[:, k], rng))
            labels[i] = k
        codes = source.codes_of(np.concatenate(rows))
        x = []
        for i in range(size):
            z1 = codes[2 * i * batch_size:(2 * i + 1) * batch_size]
            z2 = codes[(2 * i + 1) * batch_size:(2 * i + 2) * batch_size]
            x.append(np.abs(z1 - z2).mean(axis=0))
        return np.stack(x), labels

    x_train, y_train = dataset(num_train)
    x_eval, y_eval = dataset(num_eval)
    x_train, x_eval = _standardize(x_train, x_eval)
    w, b = _softmax_regression(x_train, y_train, source.num_factors, steps, learning_rate, l2)
    train_accuracy = np.mean(np.argmax(x_train @ w + b, axis=1) == y_train)
    eval_accuracy = np.mean(np.argmax(x_eval @ w + b, axis=1) == y_eval)
    return {"eval_accuracy": float(eval_accuracy), "train_accuracy": float(train_accuracy), "weights": w, "bias": b}
