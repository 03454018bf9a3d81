"""DIP-VAE-I and -II against an independent numpy computation of their penalties, and
end to end through the registry (config fields, flags, search space, both priors)."""

import numpy as np
import pytest
import tensorflow as tf

from tf_dpvae import objectives, priors, search_space
from tf_dpvae.config import ModelConfig
from tf_dpvae.objectives.dip import DIPVAEI, DIPVAEII
from tf_dpvae.training import build_model

B, L = 7, 3


@pytest.fixture
def batch_numbers():
    rng = np.random.default_rng(3)
    # Correlated means: a visible off-diagonal covariance.
    base = rng.normal(size=(B, 1))
    mean = np.concatenate([base, 0.8 * base + 0.3 * rng.normal(size=(B, 1)),
                           rng.normal(0.5, 2.0, (B, 1))], 1).astype(np.float32)
    return {"mean": mean,
            "log_var": rng.uniform(-2.0, 0.5, (B, L)).astype(np.float32),
            "reconstruction": rng.uniform(40.0, 60.0, B).astype(np.float32),
            "kl": rng.uniform(1.0, 5.0, B).astype(np.float32)}


def make_batch(n):
    return objectives.Batch(
        reconstruction=tf.constant(n["reconstruction"]), kl=tf.constant(n["kl"]),
        z=tf.constant(n["mean"]), mean=tf.constant(n["mean"]),
        log_var=tf.constant(n["log_var"]), prior=priors.StandardNormalPrior(L),
        step=tf.constant(0, tf.int64), sample_prior=None)


def numpy_penalties(covariance):
    """Loops over the entries, float64."""
    off = sum(covariance[i, j] ** 2 for i in range(L) for j in range(L) if i != j)
    diag = sum((covariance[i, i] - 1.0) ** 2 for i in range(L))
    return off, diag


def numpy_cov_means(mean):
    mean = mean.astype(float)
    return np.cov(mean, rowvar=False, bias=True)   # 1/B, as E[μμᵀ] − E[μ]E[μ]ᵀ


@pytest.mark.parametrize("cls, lambda_od, lambda_d", [(DIPVAEI, 3.0, 30.0),
                                                      (DIPVAEII, 5.0, 2.0)])
def test_loss_against_numpy(batch_numbers, cls, lambda_od, lambda_d):
    n = batch_numbers
    covariance = numpy_cov_means(n["mean"])
    if cls is DIPVAEII:
        # Cov of the mixture (1/B) Σ_b N(μ_b, diag σ_b²), by the law of total covariance.
        covariance = covariance + np.diag(np.exp(n["log_var"].astype(float)).mean(0))
    off, diag = numpy_penalties(covariance)
    terms = cls(lambda_od=lambda_od, lambda_d=lambda_d)(make_batch(n))
    np.testing.assert_allclose(float(terms["dip_off_diagonal"]), off, rtol=1e-4)
    np.testing.assert_allclose(float(terms["dip_diagonal"]), diag, rtol=1e-4)
    expected = (n["reconstruction"].astype(float).mean() + n["kl"].astype(float).mean()
                + lambda_od * off + lambda_d * diag)
    np.testing.assert_allclose(float(terms["loss"]), expected, rtol=1e-5)
    assert set(terms) == set(cls.TERMS)


def test_dip_ii_covariance_matches_samples_of_the_mixture(batch_numbers):
    """The aggregate covariance equals the covariance of many samples of q(z)."""
    from tf_dpvae.objectives.dip import aggregate_covariance
    n = batch_numbers
    rng = np.random.default_rng(0)
    which = rng.integers(0, B, 400_000)
    z = n["mean"][which] + np.exp(0.5 * n["log_var"][which]) * rng.normal(size=(400_000, L))
    ours = aggregate_covariance(tf.constant(n["mean"]), tf.constant(n["log_var"])).numpy()
    np.testing.assert_allclose(ours, np.cov(z, rowvar=False), atol=0.03)


def test_penalty_is_zero_at_whitened_codes():
    """Means with identity covariance: DIP-VAE-I's penalty vanishes."""
    rng = np.random.default_rng(1)
    mean = rng.normal(size=(500, L))
    mean = (mean - mean.mean(0)) @ np.linalg.inv(np.linalg.cholesky(
        np.cov(mean, rowvar=False, bias=True))).T
    n = {"mean": mean.astype(np.float32), "log_var": np.zeros((500, L), np.float32),
         "reconstruction": np.zeros(500, np.float32), "kl": np.zeros(500, np.float32)}
    terms = DIPVAEI(lambda_od=1.0, lambda_d=1.0)(make_batch(n))
    assert float(terms["loss"]) == pytest.approx(0.0, abs=1e-4)


def test_registered_everywhere():
    assert {"dip_i", "dip_ii"} <= set(objectives.REGULARIZERS)
    config = ModelConfig(regularizer="dip_ii", dip_ii_lambda_od=4.0, dip_ii_lambda_d=8.0)
    objective = objectives.make_objective(config)
    assert isinstance(objective, DIPVAEII)
    assert (objective.lambda_od, objective.lambda_d) == (4.0, 8.0)
    assert ModelConfig().dip_i_lambda_d == 100.0            # λ_d = 10 λ_od for DIP-VAE-I
    assert [p.name for p in search_space.build_space("dip_i", "normal")][:2] == [
        "dip_i_lambda_od", "dip_i_lambda_d"]
    assert objectives.display_name("dip_i", True) == "DIP-dpVAE-I"


@pytest.mark.parametrize("regularizer", ["dip_i", "dip_ii"])
@pytest.mark.parametrize("prior", ["normal", "decoupled"])
def test_trains_with_both_priors(regularizer, prior):
    """A few Keras fit steps on random points: finite loss, every term tracked."""
    config = ModelConfig(regularizer=regularizer, prior=prior, learning_rate=1e-3)
    model = build_model(config)
    x = np.random.default_rng(0).normal(size=(400, 2)).astype(np.float32)
    history = model.fit(tf.data.Dataset.from_tensor_slices(x).batch(100), epochs=2,
                        verbose=0)
    for name in DIPVAEI.TERMS + ("elbo",):
        assert np.all(np.isfinite(history.history[name])), name


def test_flags_come_from_the_declaration(monkeypatch):
    from tests.helpers import REPO
    from trainers import common
    monkeypatch.chdir(REPO)
    config, _ = common.configs_from_args([
        "--flagfile=trainers/configs/moons/base.flags", "--regularizer=dip_i",
        "--prior=decoupled", "--dip_i_lambda_od=3", "--model_dir=unused"])
    assert (config.regularizer, config.dip_i_lambda_od, config.dip_i_lambda_d) == \
        ("dip_i", 3.0, 100.0)
    with pytest.raises(Exception, match="dip_ii_lambda_d"):
        common.configs_from_args(["--regularizer=dip_ii", "--dip_ii_lambda_d=-1",
                                  "--model_dir=unused"])
