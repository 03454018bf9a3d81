"""Fréchet Inception Distance (FID) and Kernel Inception Distance (KID) on features.

Both compare two sets of feature vectors ``a`` (e.g. of generated images) and ``b``
(e.g. of real test images), each ``[N, F]`` from the *same* extractor
(:mod:`tf_dpvae.metrics.features`). Numbers from different extractors are not comparable
(DESIGN §5): always report the extractor's ``name`` and the sample counts with a score.

FID (Heusel et al. 2017) fits a Gaussian to each set and takes the Fréchet (2-Wasserstein)
distance between the two Gaussians::

    d²((μ1, Σ1), (μ2, Σ2)) = ‖μ1 − μ2‖² + Tr(Σ1 + Σ2 − 2 (Σ1 Σ2)^{1/2}).

The estimate is biased (it depends on N; compare numbers only at equal N). KID (Bińkowski
et al. 2018) is the unbiased estimate of the squared maximum mean discrepancy with the
cubic polynomial kernel ``k(x, y) = (xᵀy / F + 1)³``, averaged over random subsets.

Example::

    from tf_dpvae.metrics import features, fid
    extractor = features.make_extractor("classifier", "fashion_mnist")
    f_gen, f_real = extractor(generated), extractor(test_images)
    score = fid.fid(f_gen, f_real)                     # float
    kid_mean, kid_std = fid.kid(f_gen, f_real, seed=0)
    print(f"FID[{extractor.name}, N={len(f_gen)}] = {score:.2f}")
"""

from __future__ import annotations

import typing
import warnings

import numpy as np
from scipy import linalg

from tf_dpvae.metrics import MetricUnavailableError

# Diagonal offset added to both covariances when Σ1 Σ2 is (near) singular; the value
# of the reference implementations (TTUR, pytorch-fid).
DEFAULT_EPS = 1e-6

# Largest relative residual ‖X X − A‖_F / ‖A‖_F accepted for X = sqrtm(A) before the
# product is treated as near singular and recomputed with the diagonal offset.
_SQRTM_RESIDUAL_TOL = 1e-4

# Largest imaginary part tolerated on the diagonal of sqrtm(Σ1 Σ2) (as in pytorch-fid).
_IMAGINARY_TOL = 1e-3


class KidResult(typing.NamedTuple):
    """KID over subsets: ``mean`` and ``std`` of the per-subset unbiased MMD² values.

    A named pair, so ``mean, std = kid(a, b)`` works.
    """

    mean: float
    std: float


def as_features(features, name="features"):
    """float64 [N, F] array; rejects other ranks and non-finite values."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array [N, F]; got shape {features.shape}.")
    bad = int((~np.isfinite(features).all(axis=1)).sum())
    if bad:
        raise MetricUnavailableError(f"{name}: {bad} of {len(features)} feature vectors "
                                     "contain NaN or infinite values")
    return features


def feature_statistics(features):
    """Mean and covariance of a Gaussian fitted to feature vectors.

    With x_1 … x_N the rows of ``features``::

        μ = (1/N) Σ_n x_n,    Σ = 1/(N − 1) Σ_n (x_n − μ)(x_n − μ)ᵀ

    (the unbiased covariance, as ``np.cov`` and the reference FID code compute it).

    Args:
      features: array-like [N, F] with N ≥ 2.

    Returns:
      ``(mu, sigma)``: float64 arrays [F] and [F, F].
    """
    features = as_features(features)
    if features.shape[0] < 2:
        raise ValueError(
            f"feature_statistics needs at least 2 feature vectors; got {features.shape[0]}.")
    mu = features.mean(axis=0)
    sigma = np.cov(features, rowvar=False)
    return mu, np.atleast_2d(sigma)


def _sqrtm(matrix):
    """scipy's sqrtm and the relative residual ‖X X − A‖_F / ‖A‖_F (inf if not finite)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        root = linalg.sqrtm(matrix)
    root = np.asarray(root)
    if not np.isfinite(root).all():
        return root, np.inf
    norm = np.linalg.norm(matrix)
    residual = np.linalg.norm(root @ root - matrix)
    return root, residual / norm if norm > 0 else residual


def frechet_distance(mu1, sigma1, mu2, sigma2, eps=DEFAULT_EPS):
    """Fréchet distance between N(μ1, Σ1) and N(μ2, Σ2)::

        d² = ‖μ1 − μ2‖² + Tr(Σ1) + Tr(Σ2) − 2 Tr((Σ1 Σ2)^{1/2}).

    (Σ1 Σ2)^{1/2} is computed with ``scipy.linalg.sqrtm`` as in the reference
    implementations (TTUR, pytorch-fid): if the product is singular or near singular
    (``sqrtm`` returns non-finite values, or its result X has a relative residual
    ‖X X − Σ1 Σ2‖_F / ‖Σ1 Σ2‖_F above 1e-4), ``eps`` is added to the diagonals of both
    covariances and the root recomputed, ((Σ1 + εI)(Σ2 + εI))^{1/2}. A complex result
    with a negligible imaginary part (≤ 1e-3 on the diagonal) is replaced by its real
    part; a larger one raises ``ValueError``.

    The value is not clipped at 0: for (nearly) identical statistics it can be a tiny
    negative number from round-off.

    Args:
      mu1, mu2: means [F].
      sigma1, sigma2: covariances [F, F] (symmetric positive semi-definite).
      eps: diagonal offset for the (near-)singular case.

    Returns:
      The squared Fréchet distance, a Python float.
    """
    mu1 = np.atleast_1d(np.asarray(mu1, dtype=np.float64))
    mu2 = np.atleast_1d(np.asarray(mu2, dtype=np.float64))
    sigma1 = np.atleast_2d(np.asarray(sigma1, dtype=np.float64))
    sigma2 = np.atleast_2d(np.asarray(sigma2, dtype=np.float64))
    if mu1.shape != mu2.shape or mu1.ndim != 1:
        raise ValueError(f"Means have different or bad shapes: {mu1.shape} vs {mu2.shape}.")
    dim = mu1.shape[0]
    for name, sigma in (("sigma1", sigma1), ("sigma2", sigma2)):
        if sigma.shape != (dim, dim):
            raise ValueError(f"{name} has shape {sigma.shape}; expected ({dim}, {dim}) "
                             "to match the means.")

    diff = mu1 - mu2
    covmean, residual = _sqrtm(sigma1 @ sigma2)
    if residual > _SQRTM_RESIDUAL_TOL:
        warnings.warn(
            f"FID: Σ1 Σ2 is (near) singular (sqrtm relative residual {residual:.2g}); "
            f"adding {eps} to the diagonal of both covariances.", RuntimeWarning,
            stacklevel=2)
        offset = np.eye(dim) * eps
        covmean, residual = _sqrtm((sigma1 + offset) @ (sigma2 + offset))
        if not np.isfinite(residual):
            raise ValueError("FID: sqrtm of the covariance product is not finite even "
                             f"with {eps} added to the diagonals.")
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=_IMAGINARY_TOL):
            raise ValueError("FID: sqrtm(Σ1 Σ2) has an imaginary component of "
                             f"{np.max(np.abs(covmean.imag)):.3g}.")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2)
                 - 2.0 * np.trace(covmean))


def fid(features_a, features_b, eps=DEFAULT_EPS):
    """FID between two feature sets: ``frechet_distance`` of their Gaussian fits.

    ``FID = ‖μ_a − μ_b‖² + Tr(Σ_a + Σ_b − 2 (Σ_a Σ_b)^{1/2})`` with (μ, Σ) from
    :func:`feature_statistics`. Both sets must come from the same extractor.

    Args:
      features_a, features_b: arrays [N_a, F] and [N_b, F].
      eps: see :func:`frechet_distance`.

    Returns:
      A Python float.
    """
    a = as_features(features_a, "features_a")
    b = as_features(features_b, "features_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"Feature sizes differ: {a.shape[1]} vs {b.shape[1]}.")
    return frechet_distance(*feature_statistics(a), *feature_statistics(b), eps=eps)


def polynomial_kernel(x, y):
    """Cubic polynomial kernel matrix ``K_ij = (x_iᵀ y_j / F + 1)³`` (F = feature size)."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x, y):
    """Unbiased MMD² between samples x [m, F] and y [m, F] with the cubic kernel::

        MMD²_u = 1/(m(m−1)) Σ_{i≠j} k(x_i, x_j) + 1/(m(m−1)) Σ_{i≠j} k(y_i, y_j)
                 − 2/m² Σ_{i,j} k(x_i, y_j)

    (the estimator of Bińkowski et al.'s reference code, ``mmd_est='unbiased'``).
    """
    m = x.shape[0]
    if y.shape[0] != m or m < 2:
        raise ValueError(f"mmd2_unbiased needs two sets of equal size ≥ 2; got "
                         f"{x.shape[0]} and {y.shape[0]}.")
    k_xx = polynomial_kernel(x, x)
    k_yy = polynomial_kernel(y, y)
    k_xy = polynomial_kernel(x, y)
    sum_xx = k_xx.sum() - np.trace(k_xx)
    sum_yy = k_yy.sum() - np.trace(k_yy)
    return float((sum_xx + sum_yy) / (m * (m - 1)) - 2.0 * k_xy.sum() / (m * m))


def kid(features_a, features_b, num_subsets=100, subset_size=1000, seed=0):
    """Kernel Inception Distance: unbiased MMD² with ``k(x, y) = (xᵀy / F + 1)³``.

    For s = 1 … S, draw m rows of each set without replacement (independently per
    subset) and compute :func:`mmd2_unbiased`; return the mean and standard deviation of
    the S values. ``m = min(subset_size, N_a, N_b)``. The expected value is 0 when both
    sets come from the same distribution (the estimate can then be negative).

    Args:
      features_a, features_b: arrays [N_a, F] and [N_b, F] from the same extractor.
      num_subsets: S (100 in the reference code).
      subset_size: m (1000 in the reference code; smaller if a set is smaller).
      seed: seed of ``np.random.default_rng`` choosing the subsets.

    Returns:
      :class:`KidResult` ``(mean, std)`` (population std of the S subset values).
    """
    a = as_features(features_a, "features_a")
    b = as_features(features_b, "features_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"Feature sizes differ: {a.shape[1]} vs {b.shape[1]}.")
    if num_subsets < 1:
        raise ValueError(f"num_subsets must be positive; got {num_subsets}.")
    m = min(int(subset_size), a.shape[0], b.shape[0])
    if m < 2:
        raise ValueError(f"KID needs subsets of at least 2 rows; got {m} (subset_size="
                         f"{subset_size}, N_a={a.shape[0]}, N_b={b.shape[0]}).")
    rng = np.random.default_rng(seed)
    values = np.empty(num_subsets)
    for s in range(num_subsets):
        x = a[rng.choice(a.shape[0], m, replace=False)]
        y = b[rng.choice(b.shape[0], m, replace=False)]
        values[s] = mmd2_unbiased(x, y)
    return KidResult(float(values.mean()), float(values.std()))


# ---------------------------------------------------------------------- evaluation
def _fid_and_kid(context, key, kid_key, features):
    """FID and KID of ``features`` against the real ones, or both unavailable."""
    try:
        context.results[key] = float(fid(features, context.real_features))
        context.results[kid_key] = _kid(features, context.real_features,
                                        context.options.seed)
    except MetricUnavailableError as error:
        context.unavailable(str(error), key, kid_key)
    context.results["num_samples"] = context.options.num_samples


def _kid(a, b, seed):
    size = min(1000, len(a), len(b))
    if size < 2:
        return None
    value = kid(a, b, num_subsets=50, subset_size=size, seed=seed)
    return {"mean": float(value.mean), "std": float(value.std)}


def compute_fid(context):
    """FID (and KID) of ``num_samples`` decoded prior samples against the test split."""
    _fid_and_kid(context, "fid", "kid", context.generated_features)


def compute_fid_lp(context):
    """FID (and KID) of the low-posterior samples (paper §5.1) against the test split."""
    features = context.low_posterior_features
    if features is None:
        context.results["feature_extractor"] = context.extractor.name
        context.results["num_samples"] = context.options.num_samples
        context.unavailable(context.lp_error, "fid_lp", "kid_lp")
        return
    _fid_and_kid(context, "fid_lp", "kid_lp", features)


def _register():
    from tf_dpvae.metrics.registry import MetricSpec, register
    register(MetricSpec("fid", compute_fid, columns=(("fid", "FID"),),
                        needs_features=True, help="FID of random samples"))
    register(MetricSpec("fid_lp", compute_fid_lp, columns=(("fid_lp", "FID (LP)"),),
                        needs_features=True, help="FID of low-posterior samples"))


_register()
