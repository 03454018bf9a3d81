"""Symmetric KL divergence between the prior p(z) and the aggregate posterior q(z).

Paper Sec. 5.1 (sKL, 5 000 samples each way), DESIGN §5: both log-densities are exact,
the expectations are Monte Carlo averages.
"""

import math

import numpy as np

from tf_dpvae.metrics import aggregate as aggregate_lib


def _mean_and_se(values):
    values = np.asarray(values, np.float64)
    se = values.std(ddof=1) / math.sqrt(len(values)) if len(values) > 1 else math.nan
    return float(values.mean()), float(se)


def symmetric_kl(prior, aggregate, num_samples=5000, seed=0, verbose=False):
    """sKL = KL[p ‖ q] + KL[q ‖ p] by sampling, with exact log-densities.

        KL[p ‖ q] ≈ (1/S) Σ_s [log p(z_s) − log q(z_s)],   z_s ~ p(z) (``sample_prior``),
        KL[q ‖ p] ≈ (1/S) Σ_s [log q(z'_s) − log p(z'_s)], z'_s ~ q(z) (``aggregate.sample``),

    with log p(z) = ``prior.log_prob`` (for the decoupled prior log N(g(z); 0, I) +
    log|det ∂g/∂z|) and log q(z) = log (1/N) Σ_n N(z; μ_n, diag σ_n²) (exact mixture).
    The two sample sets are independent (different stateless streams of ``seed``), so
    the standard error of the sum is the root of the summed squared errors.

    Returns a dict of floats: ``kl_pq``, ``kl_qp``, ``skl`` and their standard errors
    ``kl_pq_se``, ``kl_qp_se``, ``skl_se``, plus ``num_samples``.
    """
    z_p, _ = aggregate_lib.sample_prior(prior, num_samples, seed)
    z_q = aggregate.sample(num_samples, seed=int(seed))
    kl_pq, kl_pq_se = _mean_and_se(
        aggregate_lib.prior_log_prob(prior, z_p) - aggregate.log_prob(z_p, verbose=verbose))
    kl_qp, kl_qp_se = _mean_and_se(
        aggregate.log_prob(z_q, verbose=verbose) - aggregate_lib.prior_log_prob(prior, z_q))
    return {
        "kl_pq": kl_pq, "kl_pq_se": kl_pq_se,
        "kl_qp": kl_qp, "kl_qp_se": kl_qp_se,
        "skl": kl_pq + kl_qp, "skl_se": math.hypot(kl_pq_se, kl_qp_se),
        "num_samples": int(num_samples),
    }
