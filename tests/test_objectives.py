"""Tests of tf_dpvae.objectives (and FactorVAE's permute_dims) against hand-computed losses."""

import numpy as np
import pytest
import scipy.special
import scipy.stats
import tensorflow as tf

from tf_dpvae import objectives, priors
from tf_dpvae.config import ModelConfig
from tf_dpvae.objectives.beta_b import BetaVAEB
from tf_dpvae.objectives.beta_h import BetaVAEH
from tf_dpvae.objectives.beta_tc import BetaTCVAE
from tf_dpvae.objectives.factor import FactorVAE, permute_dims
from tf_dpvae.objectives.info import InfoVAE
from tf_dpvae.objectives.vae import VAE

B, L = 6, 3


@pytest.fixture
def inputs():
    """Known per-example terms of a batch (float32, as in training)."""
    rng = np.random.default_rng(0)
    return {
        "reconstruction": rng.uniform(50.0, 80.0, B).astype(np.float32),
        "kl": rng.uniform(2.0, 9.0, B).astype(np.float32),
        "mean": rng.normal(0.0, 0.7, (B, L)).astype(np.float32),
        "log_var": rng.uniform(-1.5, 0.5, (B, L)).astype(np.float32),
        "noise": rng.normal(size=(B, L)).astype(np.float32),
        "prior_z": rng.normal(size=(B, L)).astype(np.float32),
    }


def make_batch(inputs, step=0, kl=None):
    z = inputs["mean"] + np.exp(0.5 * inputs["log_var"]) * inputs["noise"]
    return objectives.Batch(
        reconstruction=tf.constant(inputs["reconstruction"]),
        kl=tf.constant(inputs["kl"] if kl is None else kl),
        z=tf.constant(z), mean=tf.constant(inputs["mean"]),
        log_var=tf.constant(inputs["log_var"]),
        prior=priors.StandardNormalPrior(L), step=tf.constant(step, tf.int64),
        sample_prior=lambda n: tf.constant(inputs["prior_z"])[:n])


def close(a, b, rtol=1e-5):
    np.testing.assert_allclose(float(a), float(b), rtol=rtol)


def test_vae(inputs):
    terms = VAE()(make_batch(inputs))
    rec, kl = inputs["reconstruction"].astype(float), inputs["kl"].astype(float)
    close(terms["loss"], np.mean(rec + kl))
    close(terms["reconstruction"], rec.mean())
    close(terms["kl"], kl.mean())


def test_beta_vae_h(inputs):
    terms = BetaVAEH(beta=3.5)(make_batch(inputs))
    rec, kl = inputs["reconstruction"].astype(float), inputs["kl"].astype(float)
    close(terms["loss"], np.mean(rec + 3.5 * kl))


@pytest.mark.parametrize("step", [0, 10, 20, 50, 300])
def test_beta_vae_b(inputs, step):
    # C(t) = min(25, 25 t / 100): 0, 2.5, 5, 12.5, 25 — the KLs lie in [2, 9], so |KL − C|
    # is taken on both sides of the capacity.
    objective = BetaVAEB(gamma=15.0, capacity_max=25.0, capacity_stop_steps=100)
    terms = objective(make_batch(inputs, step=step))
    rec, kl = inputs["reconstruction"].astype(float), inputs["kl"].astype(float)
    capacity = min(25.0, 25.0 * step / 100)
    # As in the official code (Burgess et al. via 1Konny): |batch-mean KL − C|.
    close(terms["loss"], rec.mean() + 15.0 * abs(kl.mean() - capacity))
    close(terms["capacity"], capacity)


def test_beta_vae_b_capacity_schedule():
    objective = BetaVAEB(capacity_max=25.0, capacity_stop_steps=100_000)
    for step, expected in [(0, 0.0), (50_000, 12.5), (100_000, 25.0), (200_000, 25.0)]:
        close(objective.capacity(tf.constant(step, tf.int64)), expected, rtol=1e-6)
        close(objective.capacity(step), expected, rtol=1e-6)


def test_beta_tc_vae(inputs):
    """Batch = whole dataset (N = B), so MI, TC and DWKL are exact mixture quantities."""
    objective = BetaTCVAE(dataset_size=B, alpha=1.5, beta=4.0, gamma=7.0)
    batch = make_batch(inputs)
    terms = objective(batch)
    mean = inputs["mean"].astype(float)
    var = np.exp(inputs["log_var"].astype(float))
    z = batch.z.numpy().astype(float)
    log_qz_x = np.array([scipy.stats.multivariate_normal(m, np.diag(v)).logpdf(x)
                         for x, m, v in zip(z, mean, var)])
    comps = np.array([[scipy.stats.multivariate_normal(m, np.diag(v)).logpdf(x)
                       for m, v in zip(mean, var)] for x in z])
    log_qz = scipy.special.logsumexp(comps, axis=1) - np.log(B)
    marg = scipy.stats.norm.logpdf(z[:, None, :], mean[None], np.sqrt(var)[None])  # [i, n, l]
    log_marg = (scipy.special.logsumexp(marg, axis=1) - np.log(B)).sum(-1)
    log_pz = scipy.stats.norm.logpdf(z).sum(-1)
    mi, tc, dwkl = (log_qz_x - log_qz).mean(), (log_qz - log_marg).mean(), \
        (log_marg - log_pz).mean()
    rec = inputs["reconstruction"].astype(float).mean()
    close(terms["mutual_information"], mi, rtol=1e-4)
    close(terms["total_correlation"], tc, rtol=1e-4)
    close(terms["dimension_wise_kl"], dwkl, rtol=1e-4)
    close(terms["loss"], rec + 1.5 * mi + 4.0 * tc + 7.0 * dwkl, rtol=1e-5)


def test_factor_vae(inputs):
    weights = np.array([[1.0, -2.0], [0.5, 0.3], [-1.0, 0.7]], np.float32)

    def discriminator(z):
        return tf.matmul(z, tf.constant(weights))  # logits [B, 2]

    batch = make_batch(inputs)
    objective = FactorVAE(gamma=12.0)
    objective.discriminator = discriminator
    terms = objective(batch)
    logits = batch.z.numpy().astype(float) @ weights.astype(float)
    tc = np.mean(logits[:, 0] - logits[:, 1])
    rec, kl = inputs["reconstruction"].astype(float), inputs["kl"].astype(float)
    close(terms["total_correlation"], tc)
    close(terms["loss"], rec.mean() + kl.mean() + 12.0 * tc)


def brute_force_mmd(x, y, h2):
    k = lambda a, b: np.exp(-np.sum((a - b) ** 2) / (2.0 * h2))  # noqa: E731
    return (np.mean([k(a, b) for a in x for b in x]) + np.mean([k(a, b) for a in y for b in y])
            - 2.0 * np.mean([k(a, b) for a in x for b in y]))


@pytest.mark.parametrize("alpha, lam, bandwidth_sq", [(0.0, 10.99, None), (0.3, 5.0, 0.8)])
def test_info_vae(inputs, alpha, lam, bandwidth_sq):
    batch = make_batch(inputs)
    terms = InfoVAE(alpha=alpha, lam=lam, mmd_bandwidth_sq=bandwidth_sq)(batch)
    h2 = float(L) if bandwidth_sq is None else bandwidth_sq
    mmd = brute_force_mmd(batch.z.numpy().astype(float), inputs["prior_z"].astype(float), h2)
    rec, kl = inputs["reconstruction"].astype(float), inputs["kl"].astype(float)
    close(terms["mmd"], mmd, rtol=1e-4)
    close(terms["loss"], rec.mean() + (1 - alpha) * kl.mean() + (alpha + lam - 1) * mmd,
          rtol=1e-5)


# ------------------------------------------------------------------ factory
@pytest.mark.parametrize("overrides, cls, fields", [
    ({"regularizer": "vae"}, VAE, {}),
    ({"regularizer": "beta_h", "beta": 2.5}, BetaVAEH, {"beta": 2.5}),
    ({"regularizer": "beta_b", "capacity_gamma": 7.0, "capacity_max": 11.0,
      "capacity_stop_steps": 123}, BetaVAEB,
     {"gamma": 7.0, "capacity_max": 11.0, "capacity_stop_steps": 123}),
    ({"regularizer": "beta_tc", "num_train": 777, "tc_alpha": 0.5, "tc_beta": 6.0,
      "tc_gamma": 3.0}, BetaTCVAE,
     {"dataset_size": 777, "alpha": 0.5, "beta": 6.0, "gamma": 3.0}),
    ({"regularizer": "factor", "factor_gamma": 42.0}, FactorVAE, {"gamma": 42.0}),
    ({"regularizer": "info", "info_alpha": 0.25, "info_lambda": 5.0, "mmd_bandwidth_sq": 2.0},
     InfoVAE, {"alpha": 0.25, "lam": 5.0, "mmd_bandwidth_sq": 2.0}),
])
def test_make_objective(overrides, cls, fields):
    objective = objectives.make_objective(ModelConfig(**overrides))
    assert type(objective) is cls
    assert objective.name == overrides["regularizer"]
    for key, value in fields.items():
        assert getattr(objective, key) == value, key


def test_make_objective_unknown_name():
    with pytest.raises(ValueError, match="--regularizer"):
        objectives.make_objective(ModelConfig(regularizer="bogus"))


# ------------------------------------------------------------------ FactorVAE's permutation
def test_permute_dims():
    n, dim = 1000, 4
    # Entry (r, j) encodes its source row r and column j.
    z = (np.arange(n)[:, None] + 10_000.0 * np.arange(dim)[None, :]).astype(np.float32)
    out = permute_dims(tf.constant(z), tf.constant([3, 7], tf.int32)).numpy()
    assert out.shape == z.shape
    source = out - 10_000.0 * np.arange(dim)[None, :]
    for j in range(dim):
        # Each column is a permutation of its own input column.
        np.testing.assert_array_equal(np.sort(out[:, j]), z[:, j])
    # Rows moved, and the columns were shuffled independently of each other.
    assert np.mean(source[:, 0] == np.arange(n)) < 0.02
    for j in range(1, dim):
        assert np.mean(source[:, j] == source[:, 0]) < 0.02
    assert np.mean(np.all(out == z, axis=1)) < 0.01
