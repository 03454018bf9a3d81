"""LP diagnostics: mixture moments, Mahalanobis distance, and the report on a flow."""

import numpy as np
import pytest
from scipy.spatial import distance

from tf_dpvae import priors
from tf_dpvae.metrics import lp_diagnostics


def test_moment_matched_gaussian_is_the_mixtures_mean_and_covariance():
    rng = np.random.default_rng(0)
    means = rng.normal(size=(5, 2)) * 2
    log_vars = rng.normal(size=(5, 2)) * 0.5
    mean, covariance = lp_diagnostics.moment_matched_gaussian(means, log_vars)
    component = rng.integers(0, 5, size=400_000)
    samples = means[component] + np.exp(0.5 * log_vars[component]) * rng.normal(
        size=(400_000, 2))
    np.testing.assert_allclose(mean, samples.mean(axis=0), atol=0.02)
    np.testing.assert_allclose(covariance, np.cov(samples.T), atol=0.05)


def test_mahalanobis_matches_scipy():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(3, 3))
    covariance = a @ a.T + np.eye(3)
    mean = rng.normal(size=3)
    z = rng.normal(size=(7, 3)) * 3
    expected = [distance.mahalanobis(v, mean, np.linalg.inv(covariance)) for v in z]
    np.testing.assert_allclose(lp_diagnostics.mahalanobis(z, mean, covariance), expected,
                               rtol=1e-10)


def test_diagnostics_of_an_identity_flow():
    prior = priors.make_prior("decoupled", 2)     # zero-initialised: g = identity
    rng = np.random.default_rng(2)
    means = rng.normal(size=(300, 2)).astype(np.float32)
    log_vars = np.full((300, 2), -2.0, np.float32)
    stats = lp_diagnostics.lp_diagnostics(prior, means, log_vars, 2000, 200, seed=3)
    lp, draws = stats["lp"], stats["prior_draws"]
    assert abs(lp["log_det_dz_dz0"]["max"]) < 1e-5 and lp["round_trip_error"] < 1e-5
    assert lp["log_q"]["median"] > draws["log_q"]["p90"] - 1e-6   # LP = the rarest fifth
    assert lp["mahalanobis"]["median"] > draws["mahalanobis"]["median"]
    assert 0.0 <= lp["outside_encoded_max"] <= 1.0

    def by_quadrant(z):                                    # a "classifier" of codes
        return np.eye(4)[(z[:, 0] > 0).astype(int) * 2 + (z[:, 1] > 0).astype(int)]
    stats = lp_diagnostics.lp_diagnostics(prior, means, log_vars, 2000, 200, seed=3,
                                          classify=by_quadrant)
    assert stats["prior_draws"]["classes"]["confidence"] == 1.0
    assert stats["prior_draws"]["classes"]["class_entropy"] > np.log(4) - 0.05
    assert sum(stats["lp"]["classes"]["class_histogram"]) == pytest.approx(1.0)


def test_class_statistics():
    even = np.eye(4)[np.arange(400) % 4]                   # one-hot, classes used evenly
    stats = lp_diagnostics.class_statistics(even)
    assert stats["confidence"] == 1.0
    assert stats["class_entropy"] == pytest.approx(np.log(4))
    assert stats["class_histogram"] == [0.25] * 4
    one_class = np.tile([0.7, 0.1, 0.1, 0.1], (50, 1))
    stats = lp_diagnostics.class_statistics(one_class)
    assert stats["confidence"] == pytest.approx(0.7)
    assert str(stats["class_entropy"]) == "0.0"   # one class: 0, printed without a sign
    halves = np.concatenate([np.tile([0.6, 0.4], (30, 1)), np.tile([0.2, 0.8], (10, 1))])
    stats = lp_diagnostics.class_statistics(halves)
    h = np.array([0.75, 0.25])
    assert stats["class_entropy"] == pytest.approx(-np.sum(h * np.log(h)))
    assert stats["confidence"] == pytest.approx((30 * 0.6 + 10 * 0.8) / 40)
