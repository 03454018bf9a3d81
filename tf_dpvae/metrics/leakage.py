"""Leakage score LS(τ) (paper Sec. 5.1, Eq. 6; DESIGN §5).

For z ~ q(z) (the aggregate posterior),

    S_τ(z) = log q(z) − log p(h(z))   if log p(h(z)) < τ,   else 0,
    LS(τ)  = E_{z ~ q(z)} [S_τ(z)],

i.e. the part of KL[q ‖ p] contributed by the region where the prior density is below
τ (the "leakage region"). The expectation runs over *all* samples (samples outside the
region count as 0), as in Eq. 6.

Which density p(h(z)) (``variant``):

* ``"paper"``: the base density N(0, I) at h(z), h = identity for the standard prior and
  h = g for the decoupled prior, *without* the flow's log-det (Eq. 6 as written).
* ``"full"``: the prior density of z itself, log p_η(z) = log N(g(z); 0, I) +
  log|det ∂g/∂z| (a density in the same space as q(z)). For the standard prior both
  variants are the same.

The same density serves for the threshold test and for the difference.

Monotonicity: LS(τ2) − LS(τ1) = E_q[(log q − log p) · 1{τ1 ≤ log p < τ2}] for τ1 < τ2,
so LS is *not* monotone in τ in general; it is non-decreasing in τ over any range of
τ in which log q(z) ≥ log p(z) wherever τ1 ≤ log p(z) < τ2 (typically the far tail of
the prior, where leaks live), and LS(τ) → KL[q ‖ p] as τ → ∞ (variant "full").
"""

import math

import numpy as np

from tf_dpvae.metrics import aggregate as aggregate_lib
from tf_dpvae.metrics.registry import MetricSpec, register

VARIANTS = ("paper", "full")


def default_taus(latent_dim, num=25, max_radius=None):
    """A grid of thresholds spanning the tail to the mode of N(0, I) in L dimensions.

    log N(z; 0, I) at radius r = ‖z‖ is τ(r) = −(L/2) log 2π − r²/2. The grid is
    ``linspace(τ(max_radius), τ(0), num)``, with ``max_radius = √L + 6`` by default
    (six units beyond the typical-set radius √L, far in the tail). Returns a numpy array,
    ascending; τ(0) is the largest value log N(0, I) can take.
    """
    if max_radius is None:
        max_radius = math.sqrt(latent_dim) + 6.0
    top = -0.5 * latent_dim * math.log(2.0 * math.pi)
    return np.linspace(top - 0.5 * max_radius ** 2, top, num)


def leakage_scores(prior, aggregate, taus=None, num_samples=10000, seed=0,
                   variant="paper", verbose=False):
    """LS(τ) = E_{z~q(z)}[S_τ(z)], S_τ(z) = (log q(z) − log p(h(z))) · 1{log p(h(z)) < τ}.

    (Paper Eq. 6.) z_1..z_S ~ q(z) with ``aggregate.sample(num_samples, seed)``;
    log q(z) exact (``aggregate.log_prob``); log p(h(z)) by ``variant`` (module
    docstring): "paper" = log N(h(z); 0, I) with h = g (identity for the standard prior),
    "full" = log p_η(z) with the log-det.

    Args:
      prior, aggregate: the model's prior and an :class:`AggregatePosterior`.
      taus: thresholds (default :func:`default_taus` for the latent dimension).
      num_samples: S.
      seed: integer seed of the q(z) samples.
      variant: ``"paper"`` or ``"full"``.

    Returns:
      dict with numpy arrays over the τ grid: ``taus``, ``scores`` (NaN where no sample
      has log p < τ: the paper leaves such points out, "zero leakage at that
      threshold"), ``standard_errors`` (std of S_τ / √S), ``counts`` (samples with
      log p < τ); ``by_tau`` {τ: score or None}; ``num_samples``, ``variant``, and
      ``kl_qp`` = mean of log q − log p over all samples (the τ → ∞ limit).
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant={variant!r}: expected one of {VARIANTS}")
    if taus is None:
        taus = default_taus(aggregate.latent_dim)
    taus = np.atleast_1d(np.asarray(taus, np.float64))
    z = aggregate.sample(num_samples, seed=int(seed))
    log_q = aggregate.log_prob(z, verbose=verbose).astype(np.float64)
    if variant == "paper":
        _, log_p = aggregate_lib.prior_base_log_prob(prior, z)
    else:
        log_p = aggregate_lib.prior_log_prob(prior, z)
    log_p = log_p.astype(np.float64)
    diff = log_q - log_p
    scores, errors, counts = [], [], []
    for tau in taus:
        inside = log_p < tau
        s = np.where(inside, diff, 0.0)
        count = int(inside.sum())
        counts.append(count)
        scores.append(float(s.mean()) if count else math.nan)
        errors.append(float(s.std(ddof=1) / math.sqrt(len(s))) if count and len(s) > 1
                      else math.nan)
    scores = np.array(scores)
    return {
        "taus": taus,
        "scores": scores,
        "standard_errors": np.array(errors),
        "counts": np.array(counts),
        "by_tau": {float(t): (None if math.isnan(v) else v) for t, v in zip(taus, scores)},
        "num_samples": int(num_samples),
        "variant": variant,
        "kl_qp": float(diff.mean()),
    }


# ---------------------------------------------------------------------- evaluation
def compute(context):
    """LS(τ) under both definitions (paper's and full density), and the curves for the
    figures."""
    options = context.options
    for variant, key in (("paper", "leakage"), ("full", "leakage_full")):
        context.say(f"leakage score ({variant} definition), "
                    f"{options.leakage_samples} samples of q(z)")
        scores = leakage_scores(context.model.prior, context.q,
                                num_samples=options.leakage_samples, seed=options.seed,
                                variant=variant)
        context.results[key] = {f"{t:.4g}": (None if s is None else float(s))
                                for t, s in scores["by_tau"].items()}
        context.curves[variant] = scores["by_tau"]
    context.results["leakage_samples"] = options.leakage_samples


register(MetricSpec("leakage", compute, help="leakage curves LS(τ)"))
