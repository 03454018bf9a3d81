"""Held-out log-likelihood by importance sampling (paper Sec. 5.1, DESIGN §5).

The official code has no NLL; this follows Rezende et al. (2014) / Burda et al. (2016):
the encoder's q(z|x) is the proposal, and the estimate is a lower bound on log p(x) in
expectation that tightens as the number of samples K grows (exact for any K when q(z|x)
is the true posterior).

Example::

    ll = importance_sampled_log_likelihood(model, x_test, num_samples=1000, seed=0)
    summary = nll_summary(ll, num_dims=28 * 28)   # nats per image, bits per dimension
"""

import math

import keras
import numpy as np
import tensorflow as tf

from tf_dpvae import data as data_lib
from tf_dpvae import estimators, gaussian
from tf_dpvae.metrics.registry import MetricSpec, register


def importance_sampled_log_likelihood(model, x, num_samples=1000, batch_size=10,
                                      sample_chunk=100, seed=0, verbose=False):
    """log p(x) per example by importance sampling with the encoder as proposal.

        log p(x) ≈ log (1/K) Σ_{k=1}^K p(x|z_k) p(z_k) / q(z_k|x),   z_k ~ q(z|x),

    with log p(x|z) = ``model.likelihood.log_prob(x, model.decode(z))``, log p(z) =
    ``model.prior.log_prob(z)`` (log-det included for the decoupled prior) and
    log q(z|x) = :func:`tf_dpvae.estimators.log_posterior` for
    (μ, log σ²) = ``model.encode(x)``. The log-mean-exp over k is a running log-sum-exp
    over chunks of ``sample_chunk`` samples, so at most batch_size × sample_chunk
    decodes are held at once.

    The noise of example i (its index in ``x``) is ε_{i,1..K} =
    ``stateless_normal([K, L], seed=[seed, i])``, so the result does not depend on
    ``batch_size`` or ``sample_chunk``.

    Args:
      model: a DpVAE, or any object with ``encode``, ``decode``, ``likelihood`` and
        ``prior`` of the same meaning.
      x: numpy array [N, ...] of examples (binarized already for a Bernoulli decoder
        when a proper discrete likelihood is wanted; see :func:`fixed_binarization`).
      num_samples: K.
      batch_size: examples per step.
      sample_chunk: importance samples per step.
      seed: integer seed.
      verbose: show a progress bar over the examples.

    Returns:
      numpy float64 array [N] of log p(x) estimates in nats.
    """
    if num_samples < 1 or batch_size < 1 or sample_chunk < 1:
        raise ValueError("num_samples, batch_size and sample_chunk must be positive")
    dtype = tf.as_dtype(getattr(model, "compute_dtype", None) or keras.config.floatx())
    x = np.asarray(x)

    @tf.function(reduce_retracing=True)
    def log_weights(x_batch, mean, log_var, noise):
        """[S, B] log p(x|z) + log p(z) − log q(z|x) for noise [S, B, L]."""
        z = gaussian.reparameterize(mean, log_var, noise)
        num, batch = tf.shape(noise)[0], tf.shape(noise)[1]
        flat_z = tf.reshape(z, [num * batch, tf.shape(noise)[2]])
        x_shape = tf.shape(x_batch)
        x_rep = tf.reshape(tf.broadcast_to(x_batch[None], tf.concat([[num], x_shape], 0)),
                           tf.concat([[num * batch], x_shape[1:]], 0))
        log_px = model.likelihood.log_prob(x_rep, model.decode(flat_z))
        log_pz = model.prior.log_prob(flat_z)
        log_qz = estimators.log_posterior(z, mean, log_var)
        return tf.reshape(log_px + log_pz, [num, batch]) - log_qz

    out = np.empty(len(x), np.float64)
    bar = keras.utils.Progbar(len(x)) if verbose else None
    for start in range(0, len(x), batch_size):
        x_batch = tf.constant(x[start:start + batch_size], dtype)
        mean, log_var = model.encode(x_batch)
        mean = tf.cast(mean, dtype)
        log_var = tf.cast(log_var, dtype)
        latent_dim = int(mean.shape[-1])
        noise = tf.stack([tf.random.stateless_normal([num_samples, latent_dim],
                                                     seed=[int(seed), start + i], dtype=dtype)
                          for i in range(int(mean.shape[0]))], axis=1)   # [K, B, L]
        running = np.full(int(mean.shape[0]), -np.inf)
        for k in range(0, num_samples, sample_chunk):
            lw = log_weights(x_batch, mean, log_var, noise[k:k + sample_chunk])
            running = np.logaddexp(running, tf.reduce_logsumexp(
                tf.cast(lw, tf.float64), axis=0).numpy())
        out[start:start + len(running)] = running - math.log(num_samples)
        if bar:
            bar.update(start + len(running))
    return out


def nll_summary(log_likelihoods, num_dims):
    """Negative log-likelihood in nats per example and bits per dimension.

        NLL = −(1/N) Σ_i log p(x_i)                  (nats per example),
        bits/dim = NLL / (D · ln 2),                  D = ``num_dims`` per example,

    with standard errors se = std(log p) / √N (sample std, ddof 1).

    Returns a dict: ``nll_nats``, ``nll_nats_se``, ``nll_bits_per_dim``,
    ``nll_bits_per_dim_se``, ``num_images``, ``num_dims``.
    """
    values = np.asarray(log_likelihoods, np.float64).reshape(-1)
    if len(values) == 0:
        raise ValueError("nll_summary: no log-likelihoods")
    n = len(values)
    nll = -float(values.mean())
    se = float(values.std(ddof=1) / math.sqrt(n)) if n > 1 else math.nan
    per_dim = num_dims * math.log(2.0)
    return {"nll_nats": nll, "nll_nats_se": se,
            "nll_bits_per_dim": nll / per_dim, "nll_bits_per_dim_se": se / per_dim,
            "num_images": n, "num_dims": int(num_dims)}


def fixed_binarization(x, seed):
    """One fixed Bernoulli binarization of grey levels x ∈ [0, 1].

        x̃_d = 1[u_d < x_d],  u_d ~ Uniform(0, 1)  ⇒  x̃_d ~ Bernoulli(x_d),

    with u = ``stateless_uniform(x.shape, seed=[seed, 0])``: the same seed gives the same
    binary images (a fixed test set for Bernoulli-decoder likelihoods). Returns a float32
    numpy array of 0s and 1s with the shape of x.
    """
    x = np.asarray(x, np.float32)
    if x.size and (x.min() < 0.0 or x.max() > 1.0):
        raise ValueError("fixed_binarization: x must lie in [0, 1]")
    u = tf.random.stateless_uniform(x.shape, seed=[int(seed), 0], dtype=tf.float32)
    return (u.numpy() < x).astype(np.float32)


# ---------------------------------------------------------------------- evaluation
def compute(context):
    """Importance-sampled NLL of test examples (grey levels binarized once, with a
    fixed seed, for a Bernoulli image model)."""
    options, results, config = context.options, context.results, context.config
    if not getattr(context.model.prior, "exact_log_prob", True):
        context.unavailable("the prior's log p(z) is itself an importance-sampled bound "
                            f"({context.model.prior.title}): log p(x) would be a bound "
                            "of a bound", "nll_nats", "nll_bits_per_dim")
        return
    x = data_lib.as_numpy(context.dataset.test, options.nll_max_examples)
    if config.likelihood == "bernoulli" and not config.is_points:
        x = fixed_binarization(x, seed=options.seed)
        results["nll_data"] = (f"{len(x)} test images, fixed Bernoulli binarization of "
                               f"the grey levels (seed {options.seed})")
    else:
        results["nll_data"] = f"{len(x)} test examples as they are"
    context.say(f"importance-sampled NLL, K={options.nll_samples}, {len(x)} examples")
    log_px = importance_sampled_log_likelihood(context.model, x,
                                               num_samples=options.nll_samples,
                                               seed=options.seed, verbose=options.verbose)
    summary = nll_summary(log_px, int(np.prod(config.input_shape)))
    results.update(nll_nats=float(summary["nll_nats"]),
                   nll_bits_per_dim=float(summary["nll_bits_per_dim"]),
                   nll_importance_samples=options.nll_samples)
    bad = int((~np.isfinite(log_px)).sum())
    if bad:
        context.unavailable(f"the importance-sampled log p(x) is not finite for {bad} of "
                            f"{len(log_px)} examples", "nll_nats", "nll_bits_per_dim")


register(MetricSpec("nll", compute, columns=(("nll_nats", "NLL (nats)"),),
                    extra_keys=("nll_bits_per_dim",),
                    help="importance-sampled negative log-likelihood"))
