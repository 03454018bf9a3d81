"""Diagonal-Gaussian densities, entropies and KL divergences, written once.

Every other module imports these; nothing else in the package writes the Gaussian
log-density by hand.
"""

import math

import tensorflow as tf

LOG_2PI = math.log(2.0 * math.pi)


def log_normal_diag(x, mean, log_var):
    """Element-wise log N(x; mean, exp(log_var)).

    ``log N = -0.5 * (log 2π + log σ² + (x - μ)² / σ²)``, no reduction: callers sum
    over the axes that form the event.

    Finite wherever the true value is representable, for any σ > 0 (DESIGN §8): the
    standardised residual (x − μ)/σ = ((x − μ)·k)·k, k = exp(−¼ log σ²), is formed
    before squaring, since exp(−log σ²) alone overflows float32 below log σ² ≈ −88.7
    (and inf · 0 = NaN at x = μ). ``multiply_no_nan`` gives x = μ a zero residual even
    where k itself overflows (log σ² < −355 in float32), so a tiny σ gives the large
    finite log-density −½ (log 2π + log σ²) at the mean; a residual too large for the
    dtype gives −inf, never NaN. Gradients are finite wherever k is.
    """
    x = tf.convert_to_tensor(x)
    root = tf.exp(-0.25 * log_var)  # σ^(-1/2)
    standardized = tf.math.multiply_no_nan(root, tf.math.multiply_no_nan(root, x - mean))
    return -0.5 * (LOG_2PI + log_var + tf.square(standardized))


def log_standard_normal(x):
    """Element-wise log N(x; 0, 1) = -0.5 * (log 2π + x²)."""
    x = tf.convert_to_tensor(x)
    return -0.5 * (LOG_2PI + tf.square(x))


def entropy_diag(log_var):
    """Differential entropy of N(μ, diag σ²), summed over the last axis.

    ``H = L/2 · (1 + log 2π) + ½ Σ_l log σ_l²``  (paper Eq. 16).
    """
    latent_dim = tf.cast(tf.shape(log_var)[-1], log_var.dtype)
    return 0.5 * latent_dim * (1.0 + LOG_2PI) + 0.5 * tf.reduce_sum(log_var, axis=-1)


def kl_diag_to_standard(mean, log_var):
    """Analytic KL[N(μ, diag σ²) ‖ N(0, I)], summed over the last axis.

    ``KL = ½ Σ_l (μ_l² + σ_l² − 1 − log σ_l²)``.
    """
    return 0.5 * tf.reduce_sum(tf.square(mean) + tf.exp(log_var) - 1.0 - log_var, axis=-1)


def reparameterize(mean, log_var, noise):
    """z = μ + σ ⊙ ε with ε ~ N(0, I) supplied by the caller (so seeds stay explicit)."""
    return mean + tf.exp(0.5 * log_var) * noise
