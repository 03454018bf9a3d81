"""Shared estimators: KL to the prior, minibatch-stratified log q(z), MMD, aggregate posterior.

Each estimator is written once here and imported by the objectives and the metrics.
"""

import math

import tensorflow as tf

from tf_dpvae import gaussian


def log_posterior(z, mean, log_var):
    """log q(z|x) = Σ_l log N(z_l; μ_l, σ_l²) for matching rows of z, μ, log σ²."""
    return tf.reduce_sum(gaussian.log_normal_diag(z, mean, log_var), axis=-1)


def kl_to_prior(mean, log_var, prior, z_samples=None):
    """KL[q(z|x) ‖ p(z)] per example, constants kept (DESIGN §2).

    With ``z_samples=None`` the prior must be the standard normal and the analytic
    ``½ Σ (μ² + σ² − 1 − log σ²)`` is returned. Otherwise ``z_samples`` has shape
    [S, B, L] (reparameterised draws from q(z|x)) and

        KL ≈ −H[q] − (1/S) Σ_s log p(z_s),      H[q] = L/2 (1 + log 2π) + ½ Σ log σ²,

    where for the decoupled prior log p(z) = log N(g(z); 0, I) + log|det ∂g/∂z|.
    """
    if z_samples is None:
        kl = prior.analytic_kl(mean, log_var)
        if kl is None:
            raise ValueError("the analytic KL needs the standard normal prior")
        return kl
    log_p = tf.reduce_mean(prior.log_prob(z_samples), axis=0)
    return -gaussian.entropy_diag(log_var) - log_p


def pairwise_log_posterior(z, mean, log_var):
    """[M, N, L] array of log N(z_{i,l}; μ_{j,l}, σ_{j,l}²) for z [M, L], μ/σ² [N, L]."""
    return gaussian.log_normal_diag(z[:, None, :], mean[None, :, :], log_var[None, :, :])


def stratified_log_weights(batch_size, dataset_size, dtype=tf.float32):
    """log of the minibatch stratified sampling weights (Chen et al. 2018, App. C).

    For a batch of B distinct training points drawn uniformly from N, the estimate of
    the aggregate posterior at z_i ~ q(z|x_i) is

        q̂(z_i) = (1/N) q(z_i|x_i) + (N − 1) / (N (B − 1)) Σ_{j≠i} q(z_i|x_j),

    unbiased for q(z_i) = (1/N) Σ_n q(z_i|x_n) (the other B − 1 points are a uniform
    sample of the other N − 1), and exact when B = N. Returns the [B, B] matrix of
    log weights (diagonal: own posterior).
    """
    batch = tf.cast(batch_size, dtype)
    n = tf.cast(dataset_size, dtype)
    off = tf.math.log(n - 1.0) - tf.math.log(n) - tf.math.log(tf.maximum(batch - 1.0, 1.0))
    diag = -tf.math.log(n)
    eye = tf.eye(batch_size, dtype=dtype)
    return eye * diag + (1.0 - eye) * off


def stratified_log_densities(z, mean, log_var, dataset_size):
    """Minibatch estimates of log q(z_i) and log Π_l q(z_{i,l}) for each row of z.

    ``z``, ``mean``, ``log_var`` are [B, L], row i drawn from q(z|x_i). Uses the
    weights of :func:`stratified_log_weights` inside a log-sum-exp:

        log q̂(z_i)   = logsumexp_j (log w_ij + Σ_l log q(z_il|x_j)),
        log Π q̂(z_il) = Σ_l logsumexp_j (log w_ij + log q(z_il|x_j)).
    """
    pairwise = pairwise_log_posterior(z, mean, log_var)  # [B, B, L]
    log_w = stratified_log_weights(tf.shape(z)[0], dataset_size, z.dtype)
    log_qz = tf.reduce_logsumexp(log_w + tf.reduce_sum(pairwise, axis=-1), axis=1)
    log_q_marginals = tf.reduce_sum(
        tf.reduce_logsumexp(log_w[:, :, None] + pairwise, axis=1), axis=-1)
    return log_qz, log_q_marginals


def tc_decomposition(z, mean, log_var, prior, dataset_size):
    """β-TCVAE decomposition of the KL term (Chen et al. 2018, Eq. 2), per example.

    MI   = log q(z|x) − log q(z)
    TC   = log q(z) − log Π_l q(z_l)
    DWKL = log Π_l q(z_l) − log p(z)          (log p includes the flow's log-det)

    The three sum to log q(z|x) − log p(z), the single-sample KL estimate. Returns a
    dict of [B] tensors.
    """
    log_qz_x = log_posterior(z, mean, log_var)
    log_qz, log_q_marginals = stratified_log_densities(z, mean, log_var, dataset_size)
    log_pz = prior.log_prob(z)
    return {
        "mutual_information": log_qz_x - log_qz,
        "total_correlation": log_qz - log_q_marginals,
        "dimension_wise_kl": log_q_marginals - log_pz,
    }


def rbf_kernel(a, b, bandwidth_sq):
    """k(a, b) = exp(−‖a − b‖² / (2 h²)) for all pairs of rows: [N, M]."""
    sq_dist = (tf.reduce_sum(tf.square(a), -1)[:, None]
               + tf.reduce_sum(tf.square(b), -1)[None, :]
               - 2.0 * tf.matmul(a, b, transpose_b=True))
    return tf.exp(-tf.maximum(sq_dist, 0.0) / (2.0 * bandwidth_sq))


def mmd(x, y, bandwidth_sq=None):
    """Squared maximum mean discrepancy, biased (V-statistic) estimate, RBF kernel.

    ``MMD² = mean k(x, x') + mean k(y, y') − 2 mean k(x, y)`` (Gretton et al. 2007), as
    in InfoVAE. The default bandwidth h² = L (kernel exp(−‖a−b‖²/(2L))) scales with the
    latent dimension, the usual choice for a unit-variance prior. Zero for identical
    sample sets; grows as they separate.
    """
    if bandwidth_sq is None:
        bandwidth_sq = tf.cast(tf.shape(x)[-1], x.dtype)
    return (tf.reduce_mean(rbf_kernel(x, x, bandwidth_sq))
            + tf.reduce_mean(rbf_kernel(y, y, bandwidth_sq))
            - 2.0 * tf.reduce_mean(rbf_kernel(x, y, bandwidth_sq)))


def aggregate_log_density(z, means, log_vars, chunk_size=4096):
    """log q(z) for the exact aggregate posterior q(z) = (1/N) Σ_n N(z; μ_n, σ_n²).

    ``z`` is [M, L]; ``means``/``log_vars`` are [N, L] from N encoded training points.
    The log-sum-exp over n is streamed over chunks of ``chunk_size`` components, keeping
    a running (max, sum) pair, so memory is O(M · chunk_size · L) whatever N is.
    """
    z = tf.convert_to_tensor(z)
    means = tf.convert_to_tensor(means, z.dtype)
    log_vars = tf.convert_to_tensor(log_vars, z.dtype)
    num_components = int(means.shape[0])
    running = tf.fill([tf.shape(z)[0]], tf.constant(-math.inf, z.dtype))
    for start in range(0, num_components, chunk_size):
        chunk = tf.reduce_sum(pairwise_log_posterior(
            z, means[start:start + chunk_size], log_vars[start:start + chunk_size]), -1)
        running = tf.reduce_logsumexp(tf.stack([running, tf.reduce_logsumexp(chunk, 1)]), 0)
    return running - math.log(num_components)
