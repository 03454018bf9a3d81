"""Divergences between the prior p(z) and the posteriors.

* :func:`symmetric_kl` — sKL between p(z) and the aggregate posterior q(z) (paper
  Sec. 5.1, 5 000 samples each way, DESIGN §5);
* :func:`rate_decomposition` — the average KL of the encoder to the prior split into
  mutual information and KL[q(z) ‖ p(z)] (Hoffman & Johnson, 2016).

Every log-density is exact; the expectations are Monte Carlo averages.
"""

import math

import numpy as np

from tf_dpvae import gaussian
from tf_dpvae.metrics import aggregate as aggregate_lib
from tf_dpvae.metrics.registry import MetricSpec, register


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
    ``kl_pq_se``, ``kl_qp_se``, ``skl_se``, plus ``num_samples`` and the counts of
    samples whose log p − log q is not finite (a density beyond the dtype's range, e.g.
    log q(z) = −inf), ``nonfinite_pq`` and ``nonfinite_qp``: a non-zero count makes
    that KL non-finite.
    """
    z_p, _ = aggregate_lib.sample_prior(prior, num_samples, seed)
    z_q = aggregate.sample(num_samples, seed=int(seed))
    diff_pq = (aggregate_lib.prior_log_prob(prior, z_p)
               - aggregate.log_prob(z_p, verbose=verbose))
    diff_qp = (aggregate.log_prob(z_q, verbose=verbose)
               - aggregate_lib.prior_log_prob(prior, z_q))
    kl_pq, kl_pq_se = _mean_and_se(diff_pq)
    kl_qp, kl_qp_se = _mean_and_se(diff_qp)
    return {
        "kl_pq": kl_pq, "kl_pq_se": kl_pq_se,
        "kl_qp": kl_qp, "kl_qp_se": kl_qp_se,
        "skl": kl_pq + kl_qp, "skl_se": math.hypot(kl_pq_se, kl_qp_se),
        "num_samples": int(num_samples),
        "nonfinite_pq": int((~np.isfinite(diff_pq)).sum()),
        "nonfinite_qp": int((~np.isfinite(diff_qp)).sum()),
    }


def rate_decomposition(prior, means, log_vars, aggregate=None, seed=0):
    """Split the rate R = (1/N) Σ_n KL[q(z|x_n) ‖ p(z)] into information and mismatch.

        R = I_q(x; z) + KL[q(z) ‖ p(z)],   0 ≤ I_q(x; z) ≤ log N,

    with x uniform over the N encoded examples and q(z) = (1/N) Σ_n q(z|x_n) (Hoffman &
    Johnson, "ELBO surgery", 2016). One draw z_n ~ q(z|x_n) per example gives

        R ≈ (1/N) Σ_n [log q(z_n|x_n) − log p(z_n)],
        I ≈ (1/N) Σ_n [log q(z_n|x_n) − log q(z_n)],
        KL[q(z) ‖ p(z)] ≈ (1/N) Σ_n [log q(z_n) − log p(z_n)] = R − I.

    Consequence: a regularizer that holds R at C nats (β-VAE-B's capacity) forces
    KL[q(z) ‖ p(z)] ≥ C − log N whichever prior p is — a learned prior cannot close
    that gap. Returns floats ``rate``, ``mutual_information``, ``kl_qp`` (each with a
    ``_se``), ``log_n`` and ``num_examples``; ``aggregate`` defaults to the
    :class:`~tf_dpvae.metrics.aggregate.AggregatePosterior` of ``means``, ``log_vars``.
    """
    means = np.asarray(means)
    log_vars = np.asarray(log_vars)
    if aggregate is None:
        aggregate = aggregate_lib.AggregatePosterior(means, log_vars)
    noise = np.random.default_rng(seed).standard_normal(means.shape).astype(means.dtype)
    z = np.asarray(gaussian.reparameterize(means, log_vars, noise))
    log_q_cond = np.sum(np.asarray(gaussian.log_normal_diag(z, means, log_vars),
                                   np.float64), axis=-1)
    log_q = np.asarray(aggregate.log_prob(z), np.float64)
    log_p = np.asarray(aggregate_lib.prior_log_prob(prior, z), np.float64)
    rate, rate_se = _mean_and_se(log_q_cond - log_p)
    information, information_se = _mean_and_se(log_q_cond - log_q)
    kl_qp, kl_qp_se = _mean_and_se(log_q - log_p)
    return {"rate": rate, "rate_se": rate_se,
            "mutual_information": information, "mutual_information_se": information_se,
            "kl_qp": kl_qp, "kl_qp_se": kl_qp_se,
            "log_n": math.log(len(means)), "num_examples": int(len(means))}


# ---------------------------------------------------------------------- evaluation
def compute(context):
    """sKL between the prior and the exact aggregate posterior of the training split."""
    options, results = context.options, context.results
    context.say(f"symmetric KL with {options.skl_samples} samples from each side")
    skl = symmetric_kl(context.model.prior, context.q, options.skl_samples,
                       seed=options.seed)
    results.update(skl=float(skl["skl"]), kl_pq=float(skl["kl_pq"]),
                   kl_qp=float(skl["kl_qp"]), skl_samples=options.skl_samples)
    prior = context.model.prior
    if not getattr(prior, "exact_log_prob", True):
        results["skl_log_prob"] = (f"{prior.title}: log p(z) is an importance-weighted "
                                   f"estimate with K = {prior.log_prob_samples}")
    if not math.isfinite(skl["skl"]):
        reason = (f"log p(z) − log q(z) is not finite at {skl['nonfinite_pq']} of the "
                  f"{options.skl_samples} samples of p(z) and {skl['nonfinite_qp']} of "
                  "those of q(z) (a density beyond the float32 range, e.g. q(z) "
                  "underflowing to 0 far from every encoded point)")
        context.unavailable(reason, *(k for k in ("skl", "kl_pq", "kl_qp")
                                      if not math.isfinite(skl[k])))


register(MetricSpec("skl", compute, columns=(("skl", "sKL"),), extra_keys=("kl_pq", "kl_qp"),
                    help="symmetric KL between p(z) and q(z)"))
