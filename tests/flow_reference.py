"""Independent reference for the decoupled prior: its density from the autodiff Jacobian.

Used by the prior, estimator and metric tests instead of ``prior.log_prob``.
"""

import numpy as np
import tensorflow as tf

from tf_dpvae import gaussian


def autodiff_log_det(prior, z_np):
    """(g(z), log|det ∂g/∂z|) from the autodiff Jacobian and numpy's slogdet; z [B, L].

    Rows of g act on rows of z independently, so row j of every example's Jacobian is
    the gradient of Σ_b g(z)[b, j] (as batch_jacobian, without its slow pfor tracing).
    """
    z = tf.constant(z_np)
    rows = []
    for j in range(z_np.shape[-1]):
        with tf.GradientTape() as tape:
            tape.watch(z)
            y = prior.to_generation(z)
            out = tf.reduce_sum(y[:, j])
        rows.append(tape.gradient(out, z).numpy())
    jac = np.stack(rows, axis=1)  # [B, L_out, L_in]
    sign, log_abs = np.linalg.slogdet(jac)
    assert np.all(sign != 0)
    return y.numpy(), log_abs


def independent_log_prob(prior, z_np):
    """log p(z) = log N(g(z); 0, I) + log|det J|, J by autodiff; z of shape [..., L]."""
    z_np = np.asarray(z_np)
    flat = z_np.reshape(-1, z_np.shape[-1])
    y, log_det = autodiff_log_det(prior, flat)
    log_n = np.sum(-0.5 * (gaussian.LOG_2PI + np.square(y)), axis=-1)
    return (log_n + log_det).reshape(z_np.shape[:-1])
