"""Tests of tf_dpvae.metrics, each against an independent answer (numpy/scipy/closed form)."""

import math
import threading
import time

import numpy as np
import psutil
import pytest
import scipy.special
import scipy.stats
import tensorflow as tf

from tf_dpvae import likelihoods, priors
from tf_dpvae.metrics import MetricUnavailableError
from tf_dpvae.metrics import aggregate, divergence, leakage, likelihood, selection
from flow_reference import independent_log_prob as flow_log_prob  # noqa: E402


# ------------------------------------------------------------------ independent helpers
def mixture_log_prob(z, means, log_vars):
    """Brute-force log (1/N) Σ_n N(z; μ_n, diag σ_n²) with scipy, no chunking."""
    per_component = np.stack([
        scipy.stats.multivariate_normal(m, np.diag(np.exp(lv))).logpdf(z).reshape(len(z))
        for m, lv in zip(means, log_vars)], axis=1)
    return scipy.special.logsumexp(per_component, axis=1) - math.log(len(means))


def standard_normal_log_prob(z):
    return scipy.stats.multivariate_normal(np.zeros(z.shape[-1])).logpdf(z).reshape(len(z))


def random_flow(latent_dim, seed, scale=0.3):
    prior = priors.DecoupledPrior(latent_dim)
    prior.build()
    rng = np.random.default_rng(seed)
    for v in prior.trainable_variables:
        v.assign(rng.normal(0.0, scale, v.shape).astype(v.dtype))
    return prior


class MemoryPeak:
    """Peak growth of this process's resident memory while the block runs (sampled)."""

    def __enter__(self):
        self.process = psutil.Process()
        self.base = self.peak = self.process.memory_info().rss
        self.running = True
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()
        return self

    def _watch(self):
        while self.running:
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.002)

    def __exit__(self, *exc):
        self.running = False
        self.thread.join()
        self.extra_bytes = self.peak - self.base


# ------------------------------------------------------------------ aggregate posterior
def random_posterior(rng, n, dim):
    return rng.normal(0.0, 1.5, (n, dim)), rng.uniform(-2.0, 0.5, (n, dim))


def test_aggregate_log_prob_matches_scipy_mixture(float64):
    rng = np.random.default_rng(0)
    means, log_vars = random_posterior(rng, 37, 3)
    z = rng.normal(0.0, 2.0, (23, 3))
    q = aggregate.AggregatePosterior(means, log_vars)
    expected = mixture_log_prob(z, means, log_vars)
    np.testing.assert_allclose(q.log_prob(z), expected, rtol=1e-12, atol=1e-12)
    # Leading axes are kept: [..., L] -> [...].
    np.testing.assert_allclose(q.log_prob(z[:22].reshape(2, 11, 3)),
                               expected[:22].reshape(2, 11), rtol=1e-12)
    assert q.num_components == 37 and q.latent_dim == 3


@pytest.mark.parametrize("chunk_size,query_batch,jit", [
    (1, 1, True), (5, 7, True), (36, 23, True), (37, 100, False), (1000, 4, False)])
def test_aggregate_chunking_does_not_change_result(float64, chunk_size, query_batch, jit):
    rng = np.random.default_rng(1)
    means, log_vars = random_posterior(rng, 37, 2)
    z = rng.normal(0.0, 2.0, (23, 2))
    expected = mixture_log_prob(z, means, log_vars)
    q = aggregate.AggregatePosterior(means, log_vars, chunk_size=chunk_size,
                                     query_batch=query_batch, jit_compile=jit)
    np.testing.assert_allclose(q.log_prob(z), expected, rtol=1e-12, atol=1e-12)


def test_aggregate_sample_draws_from_the_mixture(float64):
    """Uniform components, Gaussian noise around the chosen component; same seed, same z."""
    means = np.array([[-10.0, 0.0], [0.0, 10.0], [10.0, 0.0]])
    log_vars = np.log(np.array([[0.25, 1.0], [1.0, 4.0], [0.01, 0.01]]))
    q = aggregate.AggregatePosterior(means, log_vars)
    z, comp = q.sample(30000, seed=3, return_components=True)
    np.testing.assert_array_equal(z, q.sample(30000, seed=3))
    assert not np.allclose(z, q.sample(30000, seed=4))
    counts = np.bincount(comp, minlength=3) / len(comp)
    np.testing.assert_allclose(counts, 1 / 3, atol=0.015)          # ~5 binomial s.e.
    # The component is recoverable from z (they are 10 apart) and the standardized
    # residuals are N(0, 1).
    np.testing.assert_array_equal(np.argmin(((z[:, None] - means) ** 2).sum(-1), 1), comp)
    eps = (z - means[comp]) / np.exp(0.5 * log_vars[comp])
    np.testing.assert_allclose(eps.mean(0), 0.0, atol=0.03)
    np.testing.assert_allclose(eps.std(0), 1.0, atol=0.02)


def test_aggregate_full_training_set_scale_runs_in_bounded_memory():
    """N = 60 000 components (MNIST training set), M = 5 000 queries, L = 2, float32.

    A dense [M, N, L] evaluation would need 2.4 GB per intermediate; the streamed one
    stays far below 1 GB extra. Spot-checks 50 queries against scipy in float64.
    """
    rng = np.random.default_rng(2)
    means = rng.normal(0.0, 1.0, (60000, 2)).astype(np.float32)
    log_vars = rng.uniform(-3.0, 0.0, (60000, 2)).astype(np.float32)
    q = aggregate.AggregatePosterior(means, log_vars, dtype="float32")
    z = q.sample(5000, seed=0)
    started = time.time()
    with MemoryPeak() as memory:
        log_q = q.log_prob(z)
    elapsed = time.time() - started
    print(f"\n60000 x 5000 aggregate log q: {elapsed:.1f} s, "
          f"{memory.extra_bytes / 2**20:.0f} MiB extra")
    assert log_q.shape == (5000,) and np.all(np.isfinite(log_q))
    assert memory.extra_bytes < 2**30
    assert elapsed < 60
    pick = rng.choice(5000, 50, replace=False)
    d = z[pick].astype(np.float64)[:, None, :] - means[None].astype(np.float64)
    var = np.exp(log_vars.astype(np.float64))[None]
    log_n = -0.5 * (np.log(2 * np.pi * var) + d ** 2 / var).sum(-1)
    expected = scipy.special.logsumexp(log_n, axis=1) - math.log(60000)
    np.testing.assert_allclose(log_q[pick], expected, rtol=1e-5, atol=1e-5)


class LinearEncoder:
    """encode(x) = (x A, x B): enough of a model for encode_dataset."""

    def __init__(self, rng):
        self.a = rng.normal(size=(3, 2))
        self.b = rng.normal(size=(3, 2))

    def encode(self, x):
        x = np.asarray(x, np.float64)
        return x @ self.a, 0.1 * x @ self.b


def test_encode_dataset_numpy_and_dataset_agree():
    rng = np.random.default_rng(4)
    model = LinearEncoder(rng)
    x = rng.normal(size=(1234, 3))
    means, log_vars = aggregate.encode_dataset(model, x, batch_size=100)
    np.testing.assert_allclose(means, x @ model.a)
    np.testing.assert_allclose(log_vars, 0.1 * x @ model.b)
    labelled = tf.data.Dataset.from_tensor_slices((x, np.arange(1234)))
    m2, lv2 = aggregate.encode_dataset(model, labelled, batch_size=500)
    np.testing.assert_allclose(m2, means)
    np.testing.assert_allclose(lv2, log_vars)
    m3, _ = aggregate.encode_dataset(model, tf.data.Dataset.from_tensor_slices(x),
                                     batch_size=64, max_examples=100)
    np.testing.assert_allclose(m3, means[:100])


def test_sample_prior_matches_prior_sample_in_float32():
    """sample_prior draws what prior.sample draws; z0 is the draw, z = g⁻¹(z0)."""
    for prior in (priors.StandardNormalPrior(2), random_flow(2, seed=5)):
        z, z0 = aggregate.sample_prior(prior, 500, seed=7)
        np.testing.assert_allclose(z, prior.sample(500, seed=7).numpy(), rtol=1e-6,
                                   atol=1e-6)
        # g(g⁻¹(z0)) in float32: round-off only.
        np.testing.assert_allclose(prior.to_generation(z).numpy(), z0, atol=1e-3)


# ------------------------------------------------------------------ selection
@pytest.mark.parametrize("kind", ["normal", "decoupled"])
def test_low_posterior_samples_are_the_lowest_log_q(float64, kind):
    prior = priors.StandardNormalPrior(2) if kind == "normal" else random_flow(2, seed=6)
    rng = np.random.default_rng(7)
    means, log_vars = random_posterior(rng, 40, 2)
    q = aggregate.AggregatePosterior(means, log_vars, chunk_size=16)
    lp = selection.low_posterior_samples(prior, q, num_candidates=3000, num_keep=50, seed=8)
    # The same candidates, independently: z0 = the seed's stateless draws, z = g⁻¹(z0).
    z0_all = tf.random.stateless_normal([3000, 2], seed=[8, 0], dtype=tf.float64).numpy()
    z_all = prior.to_representation(tf.constant(z0_all)).numpy()
    log_q_all = mixture_log_prob(z_all, means, log_vars)
    order = np.argsort(log_q_all)[:50]
    np.testing.assert_allclose(lp["log_q"], log_q_all[order], rtol=1e-10)
    np.testing.assert_allclose(lp["z"], z_all[order], rtol=1e-10)
    np.testing.assert_allclose(lp["z0"], z0_all[order], rtol=1e-12)
    np.testing.assert_allclose(lp["all_log_q"], log_q_all, rtol=1e-10)
    assert np.all(np.diff(lp["log_q"]) >= 0)
    assert lp["log_q"][-1] <= np.partition(log_q_all, 50)[50]
    expected_log_p = (standard_normal_log_prob(lp["z"]) if kind == "normal"
                      else flow_log_prob(prior, lp["z"]))
    np.testing.assert_allclose(lp["log_p"], expected_log_p, rtol=1e-8, atol=1e-8)


@pytest.mark.parametrize("kind", ["normal", "decoupled"])
def test_high_posterior_samples_are_the_lowest_log_p(float64, kind):
    prior = priors.StandardNormalPrior(2) if kind == "normal" else random_flow(2, seed=9)
    rng = np.random.default_rng(10)
    means, log_vars = random_posterior(rng, 40, 2)
    q = aggregate.AggregatePosterior(means, log_vars)
    hp = selection.high_posterior_samples(prior, q, num_candidates=2000, num_keep=40, seed=11)
    z_all = q.sample(2000, seed=11)
    log_p_all = (standard_normal_log_prob(z_all) if kind == "normal"
                 else flow_log_prob(prior, z_all))
    order = np.argsort(log_p_all)[:40]
    np.testing.assert_allclose(hp["log_p"], log_p_all[order], rtol=1e-8, atol=1e-8)
    np.testing.assert_allclose(hp["z"], z_all[order], rtol=1e-12)
    np.testing.assert_allclose(hp["log_q"], mixture_log_prob(hp["z"], means, log_vars),
                               rtol=1e-10)
    np.testing.assert_allclose(hp["z0"], prior.to_generation(tf.constant(hp["z"])).numpy(),
                               rtol=1e-12)
    assert np.all(np.diff(hp["log_p"]) >= 0)


def test_lowest_skips_nan_keeps_neg_inf_first_and_refuses_all_neg_inf():
    values = np.array([3.0, np.nan, -np.inf, 1.0, np.nan, -2.0, -np.inf, 0.5])
    # −inf lowest (ties by index), then ascending; NaN never picked.
    np.testing.assert_array_equal(selection.lowest(values, 5, "log q(z)"), [2, 6, 5, 7, 3])
    np.testing.assert_array_equal(selection.lowest(values, 6, "log q(z)"),
                                  [2, 6, 5, 7, 3, 0])
    with pytest.raises(MetricUnavailableError, match=r"only 6 of 8 .* not NaN; 7"):
        selection.lowest(values, 7, "log q(z)")
    for hopeless in ([-np.inf] * 4, [np.nan] * 4, [-np.inf, np.nan, -np.inf, np.nan]):
        with pytest.raises(MetricUnavailableError,
                           match=r"log q\(z\) is -inf or NaN at all 4 candidates"):
            selection.lowest(np.array(hopeless), 1, "log q(z)")


def test_low_posterior_samples_refuse_when_q_underflows_everywhere():
    """σ² = e^{−150} around means far from the prior's mass: log q(z) = −inf at every
    prior draw (float32), so there is nothing to rank; HP samples are still defined."""
    means = np.array([[40.0, 40.0], [41.0, 39.0]], np.float32)
    q = aggregate.AggregatePosterior(means, np.full_like(means, -150.0))
    prior = priors.StandardNormalPrior(2)
    with pytest.raises(MetricUnavailableError, match="-inf or NaN at all 300 candidates"):
        selection.low_posterior_samples(prior, q, num_candidates=300, num_keep=10, seed=0)
    hp = selection.high_posterior_samples(prior, q, num_candidates=300, num_keep=10, seed=0)
    assert np.all(np.isfinite(hp["log_p"])) and np.all(np.isfinite(hp["log_q"]))


# ------------------------------------------------------------------ symmetric KL
def test_symmetric_kl_matches_closed_form_for_one_gaussian(float64):
    """p = N(0, I), q = N(μ, diag σ²): both KLs in closed form.

    KL[q‖p] = ½ Σ (μ² + σ² − 1 − log σ²),  KL[p‖q] = ½ Σ ((1 + μ²)/σ² − 1 + log σ²).
    """
    mu, var = np.array([1.0, -0.5]), np.array([0.5, 2.0])
    q = aggregate.AggregatePosterior(mu[None], np.log(var)[None])
    prior = priors.StandardNormalPrior(2)
    result = divergence.symmetric_kl(prior, q, num_samples=5000, seed=0)
    kl_qp = 0.5 * np.sum(mu ** 2 + var - 1 - np.log(var))
    kl_pq = 0.5 * np.sum((1 + mu ** 2) / var - 1 + np.log(var))
    assert abs(result["kl_qp"] - kl_qp) < 4 * result["kl_qp_se"]
    assert abs(result["kl_pq"] - kl_pq) < 4 * result["kl_pq_se"]
    assert abs(result["skl"] - (kl_pq + kl_qp)) < 4 * result["skl_se"]
    assert 0 < result["kl_qp_se"] < 0.05 and 0 < result["kl_pq_se"] < 0.05
    assert result == divergence.symmetric_kl(prior, q, num_samples=5000, seed=0)


def test_symmetric_kl_is_zero_when_q_equals_p(float64):
    q = aggregate.AggregatePosterior(np.zeros((1, 3)), np.zeros((1, 3)))
    result = divergence.symmetric_kl(priors.StandardNormalPrior(3), q, num_samples=500)
    assert abs(result["skl"]) < 1e-12 and abs(result["skl_se"]) < 1e-12


# ------------------------------------------------------------------ importance-sampled NLL
class ProbabilisticPCA:
    """Linear-Gaussian model: z ~ N(0, I), x = W z + b + ε, ε ~ N(0, s² I).

    W has orthogonal columns, so the exact posterior is diagonal:
    p(z|x) = N(m, diag v), v = 1 / (1 + c²/s²), m = v ⊙ Wᵀ(x − b) / s², c_l = ‖W_l‖.
    ``encode`` returns it, shifted by ``mean_shift`` posterior sds and ``log_var_shift``.
    Duck-types the DpVAE interface used by the IS estimator.
    """

    def __init__(self, dim=5, latent_dim=2, noise_sd=0.5, mean_shift=0.0, log_var_shift=0.0,
                 seed=0):
        rng = np.random.default_rng(seed)
        basis, _ = np.linalg.qr(rng.normal(size=(dim, dim)))
        self.c = np.array([2.0, 0.7, 1.3, 0.4][:latent_dim])
        self.w = basis[:, :latent_dim] * self.c
        self.b = rng.normal(size=dim)
        self.noise_sd = noise_sd
        self.post_var = 1.0 / (1.0 + self.c ** 2 / noise_sd ** 2)
        self.mean_shift = mean_shift * np.sqrt(self.post_var)
        self.log_var_shift = log_var_shift
        self.likelihood = likelihoods.GaussianLikelihood(1, scale=noise_sd)
        # Keras' Constant initializer rounds through float32: set log s² exactly.
        self.likelihood.log_var.assign(2.0 * math.log(noise_sd))
        self.prior = priors.StandardNormalPrior(latent_dim)

    def exact_posterior(self, x):
        mean = self.post_var * ((np.asarray(x) - self.b) @ self.w) / self.noise_sd ** 2
        return mean, np.broadcast_to(np.log(self.post_var), mean.shape)

    def exact_log_likelihood(self, x):
        cov = self.w @ self.w.T + self.noise_sd ** 2 * np.eye(len(self.b))
        return scipy.stats.multivariate_normal(self.b, cov).logpdf(x)

    def sample(self, n, seed):
        rng = np.random.default_rng(seed)
        z = rng.normal(size=(n, self.w.shape[1]))
        return z @ self.w.T + self.b + self.noise_sd * rng.normal(size=(n, len(self.b)))

    def encode(self, x):
        x = tf.convert_to_tensor(x, tf.float64)
        mean = (tf.matmul(x - self.b, tf.constant(self.w))
                * (self.post_var / self.noise_sd ** 2) + self.mean_shift)
        log_var = tf.zeros_like(mean) + np.log(self.post_var) + self.log_var_shift
        return mean, log_var

    def decode(self, z):
        return tf.matmul(z, tf.constant(self.w.T)) + self.b


def kl_diag(mean_a, log_var_a, mean_b, log_var_b):
    return 0.5 * np.sum(log_var_b - log_var_a + (np.exp(log_var_a) + (mean_a - mean_b) ** 2)
                        / np.exp(log_var_b) - 1.0, axis=-1)


def test_importance_sampling_is_exact_with_the_true_posterior(float64):
    model = ProbabilisticPCA()
    x = model.sample(20, seed=1)
    exact = model.exact_log_likelihood(x)
    for k in (1, 7):
        estimate = likelihood.importance_sampled_log_likelihood(model, x, num_samples=k, seed=2)
        np.testing.assert_allclose(estimate, exact, rtol=1e-10, atol=1e-10)


def test_importance_sampling_gap_shrinks_with_more_samples(float64):
    """q(z|x) off the true posterior: E[exact − estimate] at K = 1 is KL[q ‖ p(z|x)];
    the gap shrinks with K and is ~0 at K = 1000."""
    model = ProbabilisticPCA(mean_shift=0.4, log_var_shift=0.3)
    x = model.sample(50, seed=3)
    exact = model.exact_log_likelihood(x)
    gaps = {}
    for k in (1, 10, 1000):
        estimate = likelihood.importance_sampled_log_likelihood(
            model, x, num_samples=k, batch_size=16, sample_chunk=256, seed=4)
        gaps[k] = exact - estimate
    mean_gap = {k: float(g.mean()) for k, g in gaps.items()}
    kl = kl_diag(*[np.asarray(t) for t in model.encode(x)], *model.exact_posterior(x))
    se1 = gaps[1].std(ddof=1) / math.sqrt(len(x))
    assert abs(mean_gap[1] - kl.mean()) < 4 * se1, (mean_gap, kl.mean(), se1)
    assert mean_gap[1] > mean_gap[10] > abs(mean_gap[1000])
    # K = 1000: per-image sd of the estimate ≈ √(χ²/K) ≈ 0.02 here.
    assert abs(mean_gap[1000]) < 0.015 and np.max(np.abs(gaps[1000])) < 0.1, mean_gap


def test_importance_sampling_does_not_depend_on_batching(float64):
    model = ProbabilisticPCA(mean_shift=0.5, log_var_shift=-0.3)
    x = model.sample(13, seed=5)
    a = likelihood.importance_sampled_log_likelihood(model, x, num_samples=50, batch_size=13,
                                                     sample_chunk=50, seed=6)
    b = likelihood.importance_sampled_log_likelihood(model, x, num_samples=50, batch_size=4,
                                                     sample_chunk=7, seed=6)
    np.testing.assert_allclose(a, b, rtol=1e-12)
    c = likelihood.importance_sampled_log_likelihood(model, x, num_samples=50, seed=7)
    assert not np.allclose(a, c)


def test_importance_sampling_runs_on_a_dpvae_with_decoupled_prior():
    from tf_dpvae.config import ModelConfig
    from tf_dpvae.training import build_model
    model = build_model(ModelConfig(dataset="moons", prior="decoupled", flow_blocks=2,
                                    regularizer="vae"))
    x = np.random.default_rng(8).normal(size=(6, 2)).astype(np.float32)
    ll = likelihood.importance_sampled_log_likelihood(model, x, num_samples=20, batch_size=4,
                                                      sample_chunk=8, seed=0)
    assert ll.shape == (6,) and np.all(np.isfinite(ll))
    means, log_vars = aggregate.encode_dataset(model, x, batch_size=4)
    assert means.shape == log_vars.shape == (6, 2)


def test_nll_summary():
    ll = np.array([-100.0, -110.0, -90.0, -100.0])
    s = likelihood.nll_summary(ll, num_dims=784)
    assert s["nll_nats"] == 100.0 and s["num_images"] == 4
    assert s["nll_bits_per_dim"] == pytest.approx(100.0 / (784 * math.log(2)))
    assert s["nll_nats_se"] == pytest.approx(np.std(ll, ddof=1) / 2)
    assert s["nll_bits_per_dim_se"] == pytest.approx(s["nll_nats_se"] / (784 * math.log(2)))


def test_fixed_binarization_is_deterministic_with_mean_x():
    rng = np.random.default_rng(9)
    x = rng.uniform(size=(400, 28, 28)).astype(np.float32)
    x[0] = 0.0
    x[1] = 1.0
    a = likelihood.fixed_binarization(x, seed=3)
    np.testing.assert_array_equal(a, likelihood.fixed_binarization(x, seed=3))
    assert not np.array_equal(a, likelihood.fixed_binarization(x, seed=4))
    assert a.dtype == np.float32 and a.shape == x.shape and set(np.unique(a)) == {0.0, 1.0}
    assert np.all(a[0] == 0) and np.all(a[1] == 1)
    # E[x̃ − x] = 0; 313 600 pixels, sd of the mean ≈ 0.0007.
    assert abs(float((a - x).mean())) < 0.004
    # Per grey level: pixels near 0.2 are 1 about 20% of the time.
    near = np.abs(x - 0.2) < 0.01
    assert abs(a[near].mean() - 0.2) < 0.02
    with pytest.raises(ValueError):
        likelihood.fixed_binarization(x * 2, seed=0)


# ------------------------------------------------------------------ leakage score
def test_leakage_is_zero_when_q_equals_p(float64):
    """q = one N(0, I) component, p = N(0, I): log q − log p = 0 for every sample."""
    q = aggregate.AggregatePosterior(np.zeros((1, 2)), np.zeros((1, 2)))
    taus = leakage.default_taus(2)
    for variant in ("paper", "full"):
        result = leakage.leakage_scores(priors.StandardNormalPrior(2), q, taus,
                                        num_samples=4000, seed=1, variant=variant)
        has = result["counts"] > 0
        assert has.sum() >= 5 and (~has).sum() >= 1
        np.testing.assert_allclose(result["scores"][has], 0.0, atol=1e-12)
        assert np.all(np.isnan(result["scores"][~has]))
        assert all(result["by_tau"][float(t)] is None for t in taus[~has])
        np.testing.assert_array_equal(result["counts"], np.sort(result["counts"]))


def test_leakage_with_mass_far_out(float64):
    """q = N((6, 0), I), p = N(0, I): log q − log p = 6 z₁ − 18, log p = −log 2π − ‖z‖²/2.

    LS(τ2) − LS(τ1) = E_q[(log q − log p) 1{τ1 ≤ log p < τ2}], so LS is non-decreasing in τ
    exactly where the samples entering the region have log q ≥ log p. Below τ = −12
    (‖z‖ > 4.5) every sample of this q has z₁ > 3, i.e. log q > log p (checked below), so
    on that range LS is positive and falls as τ moves further into the tail; it is not
    monotone in general. As τ → ∞, LS → KL[q ‖ p] = ‖μ‖²/2 = 18.
    """
    q = aggregate.AggregatePosterior(np.array([[6.0, 0.0]]), np.zeros((1, 2)))
    taus = np.linspace(-40.0, -12.0, 15)
    result = leakage.leakage_scores(priors.StandardNormalPrior(2), q, taus,
                                    num_samples=10000, seed=2)
    z = q.sample(10000, seed=2)
    log_p = -math.log(2 * math.pi) - 0.5 * (z ** 2).sum(-1)
    diff = 6 * z[:, 0] - 18
    expected = [np.where(log_p < t, diff, 0).mean() for t in taus]
    np.testing.assert_allclose(result["scores"], expected, rtol=1e-10)
    assert np.all(diff[log_p < taus[-1]] > 0)                      # the premise
    assert np.all(result["counts"] > 0)
    assert np.all(result["scores"] > 0)
    assert np.all(np.diff(result["scores"]) >= 0)
    assert np.all(np.diff(result["scores"])[np.diff(result["counts"]) > 0] > 0)
    top = leakage.leakage_scores(priors.StandardNormalPrior(2), q, [1e9], num_samples=10000,
                                 seed=2)
    assert top["scores"][0] == pytest.approx(top["kl_qp"])
    assert abs(top["scores"][0] - 18.0) < 4 * top["standard_errors"][0]


def test_leakage_variants_standard_and_decoupled(float64):
    """'paper' uses log N(h(z); 0, I) (no log-det), 'full' log p_η(z) (with it)."""
    rng = np.random.default_rng(3)
    means, log_vars = random_posterior(rng, 30, 2)
    q = aggregate.AggregatePosterior(means, log_vars)
    taus = np.linspace(-30.0, 2.0, 9)
    normal = priors.StandardNormalPrior(2)
    paper = leakage.leakage_scores(normal, q, taus, num_samples=3000, seed=4, variant="paper")
    full = leakage.leakage_scores(normal, q, taus, num_samples=3000, seed=4, variant="full")
    np.testing.assert_array_equal(paper["scores"], full["scores"])
    np.testing.assert_array_equal(paper["counts"], full["counts"])

    flow = random_flow(2, seed=5, scale=0.4)
    paper = leakage.leakage_scores(flow, q, taus, num_samples=1500, seed=4, variant="paper")
    full = leakage.leakage_scores(flow, q, taus, num_samples=1500, seed=4, variant="full")
    z = q.sample(1500, seed=4)
    log_q = mixture_log_prob(z, means, log_vars)
    log_base = standard_normal_log_prob(flow.to_generation(tf.constant(z)).numpy())
    log_full = flow_log_prob(flow, z)
    for result, log_p in ((paper, log_base), (full, log_full)):
        expected = np.array([np.where(log_p < t, log_q - log_p, 0).mean()
                             if np.any(log_p < t) else np.nan for t in taus])
        np.testing.assert_allclose(result["scores"], expected, rtol=1e-8, atol=1e-10)
        np.testing.assert_array_equal(result["counts"], [(log_p < t).sum() for t in taus])
    has = (paper["counts"] > 0) & (full["counts"] > 0)
    assert np.max(np.abs(paper["scores"][has] - full["scores"][has])) > 0.05
    with pytest.raises(ValueError):
        leakage.leakage_scores(flow, q, taus, variant="other")


def test_default_taus():
    taus = leakage.default_taus(2, num=11)
    assert len(taus) == 11 and np.all(np.diff(taus) > 0)
    assert taus[-1] == pytest.approx(-math.log(2 * math.pi))     # max of log N(z; 0, I)
    assert taus[0] == pytest.approx(-math.log(2 * math.pi) - 0.5 * (math.sqrt(2) + 6) ** 2)


# --------------------------------------------------------------------- rate decomposition
def test_rate_matches_the_closed_form_kl_for_the_standard_prior(float64):
    rng = np.random.default_rng(11)
    means = rng.normal(size=(4000, 2)).astype(np.float64)
    log_vars = rng.normal(-1.0, 0.5, size=(4000, 2))
    out = divergence.rate_decomposition(priors.make_prior("normal", 2), means, log_vars,
                                        seed=3)
    closed_form = np.mean(0.5 * np.sum(means**2 + np.exp(log_vars) - 1 - log_vars, axis=1))
    assert abs(out["rate"] - closed_form) < 4 * out["rate_se"]
    assert out["rate"] == pytest.approx(out["mutual_information"] + out["kl_qp"], abs=1e-9)
    assert 0.0 < out["mutual_information"] < out["log_n"] == pytest.approx(math.log(4000))


def test_mutual_information_limits(float64):
    prior = priors.make_prior("normal", 2)
    # identical posteriors: q(z) = q(z|x), so I = 0 exactly and the rate is all mismatch
    same = divergence.rate_decomposition(prior, np.full((50, 2), 0.7), np.full((50, 2), -1.0))
    assert same["mutual_information"] == pytest.approx(0.0, abs=1e-9)
    assert same["kl_qp"] == pytest.approx(same["rate"], abs=1e-9)
    # far-apart needles: each z_n is explained by its own component only, I = log N
    means = np.stack([np.arange(50) * 10.0, np.zeros(50)], axis=1)
    apart = divergence.rate_decomposition(prior, means, np.full((50, 2), -8.0))
    assert apart["mutual_information"] == pytest.approx(math.log(50), abs=1e-6)
