"""Low-posterior (LP) and high-posterior (HP) samples (paper Sec. 4.1 and 5; DESIGN §5).

* LP samples are prior samples that the aggregate posterior barely supports: latent
  *pockets*. Decoding them shows whether the prior's mass that q(z) misses still
  generates data-like images (FID on LP samples, paper Table 1).
* HP samples are aggregate-posterior samples that the prior barely supports: latent
  *leaks*, regions of the data manifold that sampling from p(z) rarely reaches.

Example::

    lp = low_posterior_samples(model.prior, q, num_candidates=100_000, num_keep=10_000,
                               seed=0)
    images = model.decode_mean(lp["z"])
"""

import numpy as np

from tf_dpvae.metrics import MetricUnavailableError
from tf_dpvae.metrics import aggregate as aggregate_lib


def _check_counts(num_candidates, num_keep):
    if not 1 <= num_keep <= num_candidates:
        raise ValueError(f"num_keep={num_keep} must be between 1 and "
                         f"num_candidates={num_candidates}")


def lowest(values, num_keep, what):
    """Indices of the ``num_keep`` smallest ``values``, ascending (ties by index).

    NaN values are never picked. −inf counts as the lowest value (a density below the
    dtype's range; when more than ``num_keep`` are −inf, the first by index are kept, a
    uniform subset of i.i.d. candidates), but a choice among values that are *all* −inf
    (or NaN) would say nothing, so it raises
    :class:`~tf_dpvae.metrics.MetricUnavailableError`, as it does when fewer than
    ``num_keep`` values are not NaN. ``what`` names the values in the message, e.g.
    ``"log q(z)"``.
    """
    values = np.asarray(values)
    valid = np.flatnonzero(~np.isnan(values))
    nan_note = f" ({len(values) - len(valid)} are NaN)" if len(valid) < len(values) else ""
    if not np.any(values[valid] > -np.inf):
        raise MetricUnavailableError(
            f"{what} is -inf or NaN at all {len(values)} candidates{nan_note}: the "
            "density underflows (or is undefined) at every one, so the lowest cannot be "
            "told apart")
    if len(valid) < num_keep:
        raise MetricUnavailableError(
            f"only {len(valid)} of {len(values)} candidates have a {what} that is not "
            f"NaN; {num_keep} are to be kept")
    return valid[np.argsort(values[valid], kind="stable")[:num_keep]]


def low_posterior_samples(prior, aggregate, num_candidates, num_keep, seed, verbose=False):
    """The ``num_keep`` prior samples with the lowest aggregate-posterior density.

    Draws z_i ~ p(z), i = 1..num_candidates: z0_i ~ N(0, I), z_i = g⁻¹(z0_i) for the
    decoupled prior, z_i = z0_i for the standard one (:func:`aggregate.sample_prior`,
    the draws of ``prior.sample(num_candidates, seed)``), and keeps

        LP = the num_keep z_i with the smallest log q(z_i),
        log q(z) = log (1/N) Σ_n N(z; μ_n, diag σ_n²)   (exact, ``aggregate.log_prob``),

    sorted by log q ascending (ties by candidate index; :func:`lowest`: candidates
    with log q = NaN are never kept, and all −inf raises ``MetricUnavailableError``).

    Returns a dict of numpy arrays: ``z`` [K, L] (representation space, what the decoder
    takes), ``z0`` [K, L] (= g(z), generation space), ``log_q`` [K] (ascending),
    ``log_p`` [K] (prior density, log-det included), ``indices`` [K] (into the
    candidates), ``all_log_q`` [num_candidates].
    """
    _check_counts(num_candidates, num_keep)
    candidates, candidates_z0 = aggregate_lib.sample_prior(prior, num_candidates, seed)
    all_log_q = aggregate.log_prob(candidates, verbose=verbose)
    indices = lowest(all_log_q, num_keep, "log q(z)")
    z = candidates[indices]
    return {
        "z": z,
        "z0": candidates_z0[indices],
        "log_q": all_log_q[indices],
        "log_p": aggregate_lib.prior_log_prob(prior, z),
        "indices": indices,
        "all_log_q": all_log_q,
    }


def high_posterior_samples(prior, aggregate, num_candidates, num_keep, seed, verbose=False):
    """The ``num_keep`` aggregate-posterior samples with the lowest prior density.

    Draws z_i ~ q(z), i = 1..num_candidates (``aggregate.sample(num_candidates, seed)``),
    and keeps

        HP = the num_keep z_i with the smallest log p(z_i),
        log p(z) = log N(g(z); 0, I) + log|det ∂g/∂z|     (decoupled; g = id: N(z; 0, I)),

    sorted by log p ascending (ties by candidate index; NaN and all −inf as in
    :func:`lowest`).

    Returns a dict of numpy arrays: ``z`` [K, L], ``z0`` [K, L] (= g(z)), ``log_p`` [K]
    (ascending), ``log_q`` [K], ``indices`` [K], ``all_log_p`` [num_candidates].
    """
    _check_counts(num_candidates, num_keep)
    candidates = aggregate.sample(num_candidates, seed=int(seed))
    all_log_p = aggregate_lib.prior_log_prob(prior, candidates, verbose=verbose)
    indices = lowest(all_log_p, num_keep, "log p(z)")
    z = candidates[indices]
    return {
        "z": z,
        "z0": aggregate_lib.to_generation(prior, z),
        "log_p": all_log_p[indices],
        "log_q": aggregate.log_prob(z),
        "indices": indices,
        "all_log_p": all_log_p,
    }
