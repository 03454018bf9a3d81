"""tf_dpvae.gaussian.log_normal_diag at extreme variances, against float64 numpy.

In float32, exp(−log σ²) overflows below log σ² ≈ −88.7 (DESIGN §8); the log-density
must stay correct wherever its true value is representable, and be −inf (never NaN)
where it is not.
"""

import math

import numpy as np
import pytest
import tensorflow as tf

from tf_dpvae import estimators, gaussian
from tf_dpvae.metrics import aggregate

FLOAT32_MAX = float(np.finfo(np.float32).max)


def reference(x, mean, log_var):
    """−½ (log 2π + log σ² + (x − μ)² e^{−log σ²}) in float64 of the float32 inputs."""
    x, mean, log_var = (np.asarray(v, np.float32).astype(np.float64)
                        for v in (x, mean, log_var))
    value = -0.5 * (math.log(2 * math.pi) + log_var + (x - mean) ** 2 * np.exp(-log_var))
    return np.where(np.abs(value) <= FLOAT32_MAX, value, -np.inf)  # beyond float32: −inf


def log_normal32(x, mean, log_var):
    return gaussian.log_normal_diag(tf.constant(x, tf.float32), tf.constant(mean, tf.float32),
                                    tf.constant(log_var, tf.float32)).numpy()


# (x, μ) pairs: x = μ exactly, residuals from the smallest normal float32 (TensorFlow
# flushes subnormals to zero on CPU) up to beyond the float32 range.
PAIRS = [(0.0, 0.0), (1.5, 1.5), (-3.25, -3.25), (4e-38, 2e-38), (1.5e-38, 0.0),
         (1e-30, 0.0), (0.0, 1e-25), (1e-22, 0.0), (1e-20, -1e-20), (1e-19, 0.0),
         (2e-3, 1e-3), (1e-3, 0.0), (0.1, 0.0), (1.0, 0.0), (1.0, 1.0 + 2 ** -23),
         (1e10, 0.0), (1e20, -1e20)]


@pytest.mark.parametrize("log_var", [-400.0, -150.0, -100.0, -88.0, -30.0, -1.0, 0.0,
                                     2.5, 50.0, 100.0])
def test_log_normal_diag_matches_float64_at_any_variance(log_var):
    x, mean = (np.array(v, np.float32) for v in zip(*PAIRS))
    log_var = np.full_like(x, log_var)
    got = log_normal32(x, mean, log_var)
    expected = reference(x, mean, log_var)
    assert not np.any(np.isnan(got))
    finite = np.isfinite(expected)
    np.testing.assert_array_equal(np.isfinite(got), finite)
    np.testing.assert_array_equal(got[~finite], -np.inf)
    np.testing.assert_allclose(got[finite], expected[finite], rtol=2e-6, atol=1e-6)


def test_log_normal_diag_at_the_mean_of_a_tiny_variance():
    """x = μ: the log-density is −½ (log 2π + log σ²), large and finite, for any σ."""
    log_var = np.array([-100.0, -150.0, -354.0, -400.0, -1e30], np.float32)
    got = log_normal32(np.full(5, 0.7), np.full(5, 0.7), log_var)
    np.testing.assert_allclose(got, -0.5 * (math.log(2 * math.pi) + log_var.astype(float)),
                               rtol=1e-6)


def test_log_normal_diag_broadcasts_and_unchanged_at_ordinary_values():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(7, 1, 3)).astype(np.float32)
    mean = rng.normal(size=(1, 5, 3)).astype(np.float32)
    log_var = rng.uniform(-3.0, 2.0, size=(1, 5, 3)).astype(np.float32)
    got = log_normal32(x, mean, log_var)
    assert got.shape == (7, 5, 3)
    np.testing.assert_allclose(got, reference(x, mean, log_var), rtol=1e-6, atol=1e-6)
    # the earlier float32 expression, (x − μ)² · exp(−log σ²)
    earlier = (-0.5 * (math.log(2 * math.pi) + log_var
                       + np.square(x - mean) * np.exp(-log_var))).astype(np.float32)
    np.testing.assert_allclose(got, earlier, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("log_var, residual", [(-1.3, 0.8), (0.4, -2.0), (2.0, 0.0),
                                               (-100.0, 0.0), (-100.0, 1e-25),
                                               (-150.0, 0.0), (60.0, 3.0)])
def test_log_normal_diag_gradients_are_finite_and_exact(log_var, residual):
    """∂/∂x = −(x − μ)/σ², ∂/∂μ = (x − μ)/σ², ∂/∂log σ² = −½ + ½ (x − μ)²/σ²."""
    mean = tf.Variable(0.25, dtype=tf.float32)
    x = tf.Variable(np.float32(0.25) + np.float32(residual), dtype=tf.float32)
    lv = tf.Variable(log_var, dtype=tf.float32)
    with tf.GradientTape() as tape:
        value = gaussian.log_normal_diag(x, mean, lv)
    grads = [g.numpy() for g in tape.gradient(value, [x, mean, lv])]
    d = float(x.numpy()) - float(mean.numpy())
    inv_var = math.exp(-float(lv.numpy()))
    expected = [-d * inv_var, d * inv_var, -0.5 + 0.5 * d * d * inv_var]
    assert np.all(np.isfinite(grads))
    np.testing.assert_allclose(grads, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("jit", [True, False])
def test_aggregate_posterior_with_a_tiny_variance_is_finite_at_the_means(jit):
    """q(z) = (1/N) Σ N(z; μ_n, e^{−100}): at z = μ_1 the own component dominates,
    log q = −log N − ½ Σ_l (log 2π − 100); elsewhere q underflows to −inf (not NaN)."""
    means = np.array([[0.5, -1.0], [2.0, 0.25], [-1.5, 1.5]], np.float32)
    q = aggregate.AggregatePosterior(means, np.full_like(means, -100.0), jit_compile=jit)
    log_q = q.log_prob(np.concatenate([means, [[0.0, 0.0]]]))
    at_mean = -math.log(3) - (math.log(2 * math.pi) - 100.0)
    np.testing.assert_allclose(log_q[:3], at_mean, rtol=1e-6)
    assert log_q[3] == -np.inf
    direct = estimators.aggregate_log_density(means, means, np.full_like(means, -100.0))
    np.testing.assert_allclose(direct.numpy(), at_mean, rtol=1e-6)
