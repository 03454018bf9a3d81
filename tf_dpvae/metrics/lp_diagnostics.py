"""Where do the low-posterior samples lie? Diagnostics for a bad FID (LP).

For the prior draws z = g⁻¹(z0), z0 ~ N(0, I) (z = z0 for the standard prior) and for
the LP subset (lowest aggregate posterior q(z), :mod:`selection`), report

* log q(z), the exact aggregate posterior;
* the Mahalanobis distance of z to the moment-matched Gaussian of q(z)
  (mean m = (1/N) Σ μ_n, covariance C = (1/N) Σ (diag σ_n² + μ_n μ_nᵀ) − m mᵀ),
  d(z) = sqrt((z − m)ᵀ C⁻¹ (z − m)): how far outside the encoded data a code is;
* the same distance for z0 under N(0, I), ‖z0‖ (how far into the prior's tail);
* for the decoupled prior, log |det ∂z/∂z0| = −log |det ∂g/∂z| at z (how much g⁻¹
  stretches the tail there) and the round-trip error ‖g(g⁻¹(z0)) − z0‖∞ (numerical
  invertibility where the samples are).
"""

import numpy as np

from tf_dpvae.metrics import aggregate as aggregate_lib
from tf_dpvae.metrics import selection


def moment_matched_gaussian(means, log_vars):
    """Mean and covariance of the mixture (1/N) Σ N(μ_n, diag σ_n²)."""
    means = np.asarray(means, np.float64)
    variances = np.exp(np.asarray(log_vars, np.float64))
    mean = means.mean(axis=0)
    second = (means[:, :, None] * means[:, None, :]).mean(axis=0) + np.diag(
        variances.mean(axis=0))
    return mean, second - np.outer(mean, mean)


def mahalanobis(z, mean, covariance):
    diff = np.asarray(z, np.float64) - mean
    solved = np.linalg.solve(covariance, diff.T).T
    return np.sqrt(np.maximum(np.sum(diff * solved, axis=1), 0.0))


def _summary(values):
    values = np.asarray(values, np.float64)
    return {"median": float(np.median(values)), "p90": float(np.percentile(values, 90)),
            "max": float(np.max(values))}


def lp_diagnostics(prior, means, log_vars, num_candidates, num_keep, seed, classify=None):
    """Statistics of all prior draws and of their LP subset (dict of dicts).

    ``classify``, when given, maps codes z [S, L] to class probabilities of their decoded
    samples [S, K]; then each set also gets :func:`class_statistics` (under
    ``"classes"``), the prior draws' from their first ``num_keep`` so that both sets
    have the same size.
    """
    q = aggregate_lib.AggregatePosterior(means, log_vars)
    lp = selection.low_posterior_samples(prior, q, num_candidates, num_keep, seed)
    candidates, candidates_z0 = aggregate_lib.sample_prior(prior, num_candidates, seed)
    mean, covariance = moment_matched_gaussian(means, log_vars)
    encoded = mahalanobis(means, mean, covariance)
    out = {"encoded_means": {"mahalanobis": _summary(encoded)}}
    for name, z, z0, log_q in (("prior_draws", candidates, candidates_z0, lp["all_log_q"]),
                               ("lp", lp["z"], lp["z0"], lp["log_q"])):
        distance = mahalanobis(z, mean, covariance)
        stats = {"log_q": _summary(-np.asarray(log_q)),  # of −log q: larger = rarer
                 "mahalanobis": _summary(distance),
                 "z0_norm": _summary(np.linalg.norm(z0, axis=1)),
                 "outside_encoded_max": float(np.mean(distance > encoded.max()))}
        if getattr(prior, "is_decoupled", False):
            z0_back, log_det = prior.forward_and_log_det(z.astype(np.float32))
            stats["log_det_dz_dz0"] = _summary(-np.asarray(log_det))
            stats["round_trip_error"] = float(np.max(np.abs(np.asarray(z0_back) - z0)))
        if classify is not None:
            stats["classes"] = class_statistics(classify(z[:num_keep]))
        out[name] = stats
    return out


def class_statistics(probabilities):
    """Quality and diversity of decoded samples as seen by a dataset classifier.

    With p_i the classifier's class probabilities for sample i (rows of
    ``probabilities``, [S, K]):

    * ``confidence`` = (1/S) Σ_i max_k p_ik — high when samples look like some class
      (on the data manifold), whatever the class;
    * ``class_entropy`` = −Σ_k h_k log h_k of the histogram h_k of argmax_k p_ik, in
      nats (log K when the classes are used evenly, 0 when every sample is one class);
    * ``class_histogram`` = h (fractions).

    FID mixes the two; splitting them tells a sharp but one-class LP set from a blurry
    one.
    """
    probabilities = np.asarray(probabilities, np.float64)
    counts = np.bincount(np.argmax(probabilities, axis=1),
                         minlength=probabilities.shape[1])
    histogram = counts / counts.sum()
    used = histogram[histogram > 0]
    return {"confidence": float(np.mean(np.max(probabilities, axis=1))),
            "class_entropy": float(-np.sum(used * np.log(used))) + 0.0,  # not -0.0
            "class_histogram": histogram.tolist()}
