"""The two latent densities the metrics compare: the aggregate posterior q(z) and p(z).

* :func:`encode_dataset` turns a dataset into the posterior parameters (μ_n, log σ_n²).
* :class:`AggregatePosterior` is the exact Gaussian mixture
  ``q(z) = (1/N) Σ_n N(z; μ_n, diag σ_n²)`` over those N points (DESIGN §5), with
  log-densities streamed over components and queries so memory does not grow with N × M.
* :func:`sample_prior`, :func:`prior_log_prob`, :func:`prior_base_log_prob` and
  :func:`to_generation` sample and evaluate the prior in batches.

Example::

    means, log_vars = encode_dataset(model, dataset.train, verbose=True)
    q = AggregatePosterior(means, log_vars)
    z = q.sample(5000, seed=0)          # z ~ q(z)
    log_q = q.log_prob(z)               # exact log q(z), numpy [5000]
"""

import math

import keras
import numpy as np
import tensorflow as tf

from tf_dpvae import data as data_lib
from tf_dpvae import estimators, gaussian

# Offsets of the random streams of AggregatePosterior.sample (priors use offset 0).
_STREAM_COMPONENT, _STREAM_NOISE = 1, 2


def _progbar(target, verbose):
    return keras.utils.Progbar(target, verbose=1) if verbose else None


def encode_dataset(model, data, batch_size=500, max_examples=None, verbose=False):
    """Posterior parameters of every example: (μ_n, log σ_n²) with q(z|x_n) = N(μ_n, diag σ_n²).

    Args:
      model: anything with ``encode(x) -> (mean, log_var)`` (a DpVAE).
      data: a numpy array [N, ...] or an *unbatched* ``tf.data.Dataset`` whose elements
        are x or (x, label, ...).
      batch_size: examples per encoder call.
      max_examples: encode only the first ``max_examples``.
      verbose: show a progress bar.

    Returns:
      (means, log_vars), numpy arrays of shape [N, L].
    """
    if isinstance(data, tf.data.Dataset):
        if max_examples is not None:
            data = data.take(max_examples)
        cardinality = int(data.cardinality())
        target = cardinality if cardinality >= 0 else None
        batches = (data_lib.example_image(b) for b in data.batch(batch_size))
    else:
        data = np.asarray(data)
        if max_examples is not None:
            data = data[:max_examples]
        target = len(data)
        batches = (data[i:i + batch_size] for i in range(0, len(data), batch_size))
    bar = _progbar(target, verbose)
    means, log_vars, done = [], [], 0
    for x in batches:
        mean, log_var = model.encode(x)
        means.append(np.asarray(mean))
        log_vars.append(np.asarray(log_var))
        done += len(means[-1])
        if bar:
            bar.update(done)
    if not means:
        raise ValueError("encode_dataset: the data holds no examples")
    return np.concatenate(means), np.concatenate(log_vars)


def _chunk_log_density(z, means, log_vars):
    """log of one chunk's own mixture, log (1/C) Σ_{n ∈ chunk} N(z; μ_n, diag σ_n²)."""
    return estimators.aggregate_log_density(z, means, log_vars,
                                            chunk_size=int(means.shape[0]))


# Shared by all AggregatePosterior instances (traced once per shape and dtype). XLA fuses
# the element-wise work of a chunk: ~10× faster on CPU than the unfused graph.
_CHUNK_LOG_DENSITY = {True: tf.function(_chunk_log_density, jit_compile=True),
                      False: tf.function(_chunk_log_density)}


class AggregatePosterior:
    """Exact aggregate posterior q(z) = (1/N) Σ_{n=1}^N N(z; μ_n, diag σ_n²).

    ``log_prob`` computes

        log q(z) = logsumexp_n [Σ_l log N(z_l; μ_{n,l}, σ_{n,l}²)] − log N
                 = logsumexp_c [log q_c(z) + log(N_c / N)],

    where the N components are split into chunks c of (at most) ``chunk_size`` and
    q_c(z) = (1/N_c) Σ_{n ∈ c} N(z; μ_n, σ_n²) is each chunk's mixture, computed by
    :func:`tf_dpvae.estimators.aggregate_log_density`; the log-sum-exp over chunks runs
    as a running ``logaddexp``. Queries go ``query_batch`` at a time, so peak memory is
    O(query_batch × chunk_size × L) whatever N and the number of queries M are.

    Args:
      means, log_vars: [N, L] posterior parameters of the N encoded training points.
      chunk_size: mixture components per step (the N components are split into
        ⌈N / chunk_size⌉ chunks of near-equal size, so at most two shapes get traced).
      query_batch: query points per step (the last batch is zero-padded to this size).
      dtype: computation dtype (default: Keras floatx).
      jit_compile: compile the per-chunk density with XLA (same result to rounding;
        a first call compiles for a second or two).
    """

    def __init__(self, means, log_vars, chunk_size=4096, query_batch=1024, dtype=None,
                 jit_compile=True):
        means, log_vars = np.asarray(means), np.asarray(log_vars)
        if means.ndim != 2 or means.shape != log_vars.shape or len(means) == 0:
            raise ValueError(f"AggregatePosterior: means {means.shape} and log_vars "
                             f"{log_vars.shape} must both be [N, L] with N ≥ 1")
        if chunk_size < 1 or query_batch < 1:
            raise ValueError("chunk_size and query_batch must be positive")
        self.dtype = tf.as_dtype(dtype or keras.config.floatx())
        self.means = tf.constant(means, self.dtype)
        self.log_vars = tf.constant(log_vars, self.dtype)
        self.chunk_size = int(chunk_size)
        self.query_batch = int(query_batch)
        self._log_density = _CHUNK_LOG_DENSITY[bool(jit_compile)]
        num_chunks = -(-len(means) // self.chunk_size)
        bounds = np.linspace(0, len(means), num_chunks + 1).round().astype(int)
        self._chunks = [(self.means[a:b], self.log_vars[a:b], math.log((b - a) / len(means)))
                        for a, b in zip(bounds[:-1], bounds[1:])]

    @property
    def num_components(self):
        return int(self.means.shape[0])

    @property
    def latent_dim(self):
        return int(self.means.shape[1])

    def log_prob(self, z, verbose=False):
        """log q(z) for z of shape [..., L]; numpy array of shape [...].

        ``log q(z) = log (1/N) Σ_n N(z; μ_n, diag σ_n²)``, exact (no sampling).
        """
        z = np.asarray(z)
        if z.shape[-1] != self.latent_dim:
            raise ValueError(f"log_prob: z has {z.shape[-1]} latent dimensions, the "
                             f"aggregate posterior {self.latent_dim}")
        flat = z.reshape(-1, self.latent_dim)
        out = np.empty(len(flat), self.dtype.as_numpy_dtype)
        batch = max(1, min(self.query_batch, len(flat)))
        bar = _progbar(len(flat), verbose)
        for start in range(0, len(flat), batch):
            part = flat[start:start + batch]
            count = len(part)
            if count < batch:  # pad: one traced shape for every batch
                part = np.concatenate([part, np.zeros((batch - count, self.latent_dim),
                                                      part.dtype)])
            part = tf.constant(part, self.dtype)
            running = np.full(batch, -np.inf, self.dtype.as_numpy_dtype)
            for means, log_vars, log_weight in self._chunks:
                running = np.logaddexp(
                    running, self._log_density(part, means, log_vars).numpy() + log_weight)
            out[start:start + count] = running[:count]
            if bar:
                bar.update(start + count)
        return out.reshape(z.shape[:-1])

    def sample(self, num_samples, seed, return_components=False):
        """z ~ q(z): n ~ Uniform{1..N}, then z = μ_n + σ_n ⊙ ε, ε ~ N(0, I).

        Stateless: the component indices use seed ``[seed, 1]``, the noise ``[seed, 2]``.
        Returns a numpy [num_samples, L] array (and the component indices when
        ``return_components``).
        """
        index = tf.random.stateless_uniform(
            [num_samples], seed=[int(seed), _STREAM_COMPONENT], minval=0,
            maxval=self.num_components, dtype=tf.int64)
        noise = tf.random.stateless_normal([num_samples, self.latent_dim],
                                           seed=[int(seed), _STREAM_NOISE], dtype=self.dtype)
        z = gaussian.reparameterize(tf.gather(self.means, index),
                                    tf.gather(self.log_vars, index), noise).numpy()
        return (z, index.numpy()) if return_components else z


def _prior_dtype(prior):
    return tf.as_dtype(getattr(prior, "compute_dtype", None) or keras.config.floatx())


def _batched(fn, z, batch_size, verbose):
    z = np.asarray(z)
    flat = z.reshape(-1, z.shape[-1])
    outs = []
    bar = _progbar(len(flat), verbose)
    for start in range(0, len(flat), batch_size):
        outs.append(fn(flat[start:start + batch_size]))
        if bar:
            bar.update(min(start + batch_size, len(flat)))
    return [np.concatenate(parts).reshape(z.shape[:-1] + parts[0].shape[1:])
            for parts in zip(*outs)] if outs else None


def prior_log_prob(prior, z, batch_size=16384, verbose=False):
    """log p(z) of the model's prior, in batches; numpy array of shape z.shape[:-1].

    Standard normal: ``log N(z; 0, I)``. Decoupled: ``log p_η(z) = log N(g(z); 0, I) +
    log|det ∂g/∂z|`` (``prior.log_prob``, log-det included).
    """
    dtype = _prior_dtype(prior)
    (log_p,) = _batched(lambda b: (prior.log_prob(tf.constant(b, dtype)).numpy(),),
                        z, batch_size, verbose)
    return log_p


def prior_base_log_prob(prior, z, batch_size=16384, verbose=False):
    """(z0, log N(z0; 0, I)) with z0 = g(z) (identity for the standard prior), in batches.

    The base density at the generation-space point, **without** the flow's log-det:
    ``log N(g(z); 0, I) = Σ_l −½ (log 2π + g(z)_l²)``. This is the density p(h(z)) of
    the paper's leakage score (Eq. 6). Returns numpy arrays [..., L] and [...].
    """
    dtype = _prior_dtype(prior)

    def fn(b):
        z0 = prior.to_generation(tf.constant(b, dtype))
        return (z0.numpy(),
                tf.reduce_sum(gaussian.log_standard_normal(z0), axis=-1).numpy())

    z0, log_base = _batched(fn, z, batch_size, verbose)
    return z0, log_base


def sample_prior(prior, num_samples, seed, batch_size=16384):
    """(z, z0) with z0 ~ N(0, I) and z = g⁻¹(z0) (z = z0 for the standard prior).

    z0 = ``stateless_normal([num_samples, L], seed=[seed, 0])`` in the prior's dtype: the
    same draws as ``prior.sample(num_samples, seed)``, with g⁻¹ applied in batches and
    z0 returned too. Returns numpy arrays [num_samples, L]; z0 is exact (no round trip
    g(g⁻¹)). A post-hoc prior's base space may differ: the two-stage VAE's z0 is its u
    (``prior.base_dim`` wide, z = D(u)); a mixture (``samples_through_base`` False)
    samples with its own ``draw`` and z0 = z.
    """
    if not getattr(prior, "samples_through_base", True):   # a mixture: its own draw
        z, z0 = prior.draw(int(num_samples), seed=int(seed))
        return np.asarray(z), np.asarray(z0)
    dtype = _prior_dtype(prior)
    base_dim = int(getattr(prior, "base_dim", prior.latent_dim))
    z0 = tf.random.stateless_normal([int(num_samples), base_dim],
                                    seed=[int(seed), 0], dtype=dtype).numpy()
    (z,) = _batched(lambda b: (prior.to_representation(tf.constant(b, dtype)).numpy(),),
                    z0, batch_size, False)
    return z, z0


def to_generation(prior, z, batch_size=16384):
    """g(z) in batches (identity for the standard prior); numpy [..., L]."""
    dtype = _prior_dtype(prior)
    (z0,) = _batched(lambda b: (prior.to_generation(tf.constant(b, dtype)).numpy(),),
                     z, batch_size, False)
    return z0


__all__ = ["encode_dataset", "AggregatePosterior", "prior_log_prob", "prior_base_log_prob",
           "sample_prior", "to_generation"]
