"""Tests of tf_dpvae.estimators (and gaussian) against brute-force numpy/scipy answers."""

import itertools

import numpy as np
import pytest
import scipy.special
import scipy.stats
import tensorflow as tf

from tf_dpvae import estimators, gaussian, priors
from flow_reference import independent_log_prob as independent_log_prior  # noqa: E402


def random_flow(latent_dim, seed):
    prior = priors.DecoupledPrior(latent_dim)
    prior.build()
    rng = np.random.default_rng(seed)
    for v in prior.trainable_variables:
        v.assign(rng.normal(0.0, 0.2, v.shape).astype(v.dtype))
    return prior


def mvn_diag(mean, log_var):
    return scipy.stats.multivariate_normal(mean, np.diag(np.exp(log_var)))


def posterior_params(rng, batch, dim, spread=1.0):
    mean = rng.normal(0.0, spread, (batch, dim))
    log_var = rng.uniform(-1.5, 0.5, (batch, dim))
    return mean, log_var


def sample_q(rng, mean, log_var, num=None):
    shape = mean.shape if num is None else (num,) + mean.shape
    return mean + np.exp(0.5 * log_var) * rng.normal(size=shape)


# ------------------------------------------------------------------ Gaussian pieces
def test_entropy_diag_matches_scipy(float64):
    rng = np.random.default_rng(0)
    _, log_var = posterior_params(rng, 5, 4)
    expected = [mvn_diag(np.zeros(4), lv).entropy() for lv in log_var]
    np.testing.assert_allclose(gaussian.entropy_diag(tf.constant(log_var)).numpy(), expected,
                               rtol=1e-12)


def test_log_posterior_matches_scipy(float64):
    rng = np.random.default_rng(1)
    mean, log_var = posterior_params(rng, 6, 3)
    z = sample_q(rng, mean, log_var)
    expected = [mvn_diag(m, lv).logpdf(x) for x, m, lv in zip(z, mean, log_var)]
    got = estimators.log_posterior(tf.constant(z), tf.constant(mean), tf.constant(log_var))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)


# ------------------------------------------------------------------ KL to the prior
def closed_form_kl_to_standard(mean, log_var):
    """KL[N(μ, Σ) ‖ N(0, I)] = ½ (tr Σ + μᵀμ − L − log det Σ), with full matrices."""
    out = []
    for m, lv in zip(mean, log_var):
        cov = np.diag(np.exp(lv))
        out.append(0.5 * (np.trace(cov) + m @ m - len(m) - np.linalg.slogdet(cov)[1]))
    return np.array(out)


def test_analytic_kl(float64):
    rng = np.random.default_rng(2)
    mean, log_var = posterior_params(rng, 5, 3, spread=2.0)
    prior = priors.StandardNormalPrior(3)
    got = estimators.kl_to_prior(tf.constant(mean), tf.constant(log_var), prior)
    np.testing.assert_allclose(got.numpy(), closed_form_kl_to_standard(mean, log_var),
                               rtol=1e-12)


def test_analytic_kl_refuses_decoupled_prior(float64):
    with pytest.raises(ValueError):
        estimators.kl_to_prior(tf.zeros([1, 2], tf.float64), tf.zeros([1, 2], tf.float64),
                               priors.make_prior("decoupled", 2))


def test_monte_carlo_kl_identity_flow_averages_to_analytic(float64):
    """Fresh decoupled prior = N(0, I): every constant must be kept (DESIGN §2)."""
    rng = np.random.default_rng(3)
    mean, log_var = posterior_params(rng, 4, 3)
    num_samples = 20000
    z = sample_q(rng, mean, log_var, num_samples)  # [S, B, L]
    prior = priors.make_prior("decoupled", 3)
    got = estimators.kl_to_prior(tf.constant(mean), tf.constant(log_var), prior,
                                 tf.constant(z)).numpy()
    expected = closed_form_kl_to_standard(mean, log_var)
    # Standard error of the MC mean of log N(z; 0, I) under q.
    log_p = scipy.stats.norm.logpdf(z).sum(-1)
    stderr = log_p.std(0) / np.sqrt(num_samples)
    assert np.all(np.abs(got - expected) < 4 * stderr), (got, expected, stderr)


def test_monte_carlo_kl_random_flow_matches_brute_force(float64):
    """KL ≈ −H[q] − mean_s log p(z_s), log p by an independent route (autodiff log-det)."""
    rng = np.random.default_rng(4)
    mean, log_var = posterior_params(rng, 3, 3)
    z = sample_q(rng, mean, log_var, 50)  # [S, B, L]
    prior = random_flow(3, seed=5)
    got = estimators.kl_to_prior(tf.constant(mean), tf.constant(log_var), prior,
                                 tf.constant(z)).numpy()
    entropy = np.array([mvn_diag(m, lv).entropy() for m, lv in zip(mean, log_var)])
    log_p = independent_log_prior(prior, z)  # [S, B]
    expected = -entropy - log_p.mean(0)
    # The flow matters: the same samples under N(0, I) give a clearly different value.
    under_normal = -entropy - scipy.stats.norm.logpdf(z).sum(-1).mean(0)
    assert np.min(np.abs(expected - under_normal)) > 1e-2
    np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9)


# ------------------------------------------------------------------ minibatch stratified sampling
def exact_log_qz(z, mean, log_var):
    """log q(z_i) = log (1/N) Σ_n q(z_i|x_n) with scipy densities."""
    comps = np.array([[mvn_diag(m, lv).logpdf(zi) for m, lv in zip(mean, log_var)] for zi in z])
    return scipy.special.logsumexp(comps, axis=1) - np.log(len(mean))


def exact_log_prod_marginals(z, mean, log_var):
    """log Π_l q(z_il) with q(z_l) = (1/N) Σ_n N(z_l; μ_nl, σ²_nl)."""
    sd = np.exp(0.5 * log_var)
    out = np.zeros(len(z))
    for i, zi in enumerate(z):
        for l in range(z.shape[1]):
            out[i] += np.log(np.mean(scipy.stats.norm.pdf(zi[l], mean[:, l], sd[:, l])))
    return out


def test_stratified_whole_dataset_is_exact(float64):
    rng = np.random.default_rng(6)
    n, dim = 7, 3
    mean, log_var = posterior_params(rng, n, dim, spread=0.7)
    z = sample_q(rng, mean, log_var)
    log_qz, log_marg = estimators.stratified_log_densities(
        tf.constant(z), tf.constant(mean), tf.constant(log_var), n)
    np.testing.assert_allclose(log_qz.numpy(), exact_log_qz(z, mean, log_var), rtol=1e-10)
    np.testing.assert_allclose(log_marg.numpy(), exact_log_prod_marginals(z, mean, log_var),
                               rtol=1e-10)


def test_stratified_weights(float64):
    w = np.exp(estimators.stratified_log_weights(7, 7, tf.float64).numpy())
    np.testing.assert_allclose(w.sum(1), np.ones(7), rtol=1e-12)
    np.testing.assert_allclose(w, np.full((7, 7), 1 / 7), rtol=1e-12)
    w = np.exp(estimators.stratified_log_weights(4, 12, tf.float64).numpy())
    expected = np.full((4, 4), 11 / (12 * 3))
    np.fill_diagonal(expected, 1 / 12)
    np.testing.assert_allclose(w, expected, rtol=1e-12)


def _estimate_for_batches(z_i, mean, log_var, batches, dataset_size, positions):
    """exp(log q̂(z_i)) for each batch (point i sits at ``positions[k]`` of batch k)."""
    batches = np.array(batches)
    z = np.broadcast_to(z_i, batches.shape + z_i.shape).copy()  # only row ``pos`` is read
    log_qz, _ = tf.vectorized_map(
        lambda a: estimators.stratified_log_densities(a[0], a[1], a[2], dataset_size),
        (tf.constant(z), tf.constant(mean[batches]), tf.constant(log_var[batches])))
    return np.exp(log_qz.numpy()[np.arange(len(batches)), positions])


def _problem(seed):
    rng = np.random.default_rng(seed)
    n, dim = 12, 2
    # Close means, so the other points' posteriors matter as much as the own one.
    mean, log_var = posterior_params(rng, n, dim, spread=0.5)
    z = sample_q(rng, mean, log_var)
    return rng, mean, log_var, z


def test_stratified_unbiased_exhaustive(float64):
    """Averaged over all C(11, 3) batches holding point i, q̂(z_i) equals q(z_i) exactly."""
    rng, mean, log_var, z = _problem(7)
    n, batch_size, i = len(mean), 4, 5
    others = [j for j in range(n) if j != i]
    batches, positions = [], []
    for rest in itertools.combinations(others, batch_size - 1):
        pos = int(rng.integers(batch_size))
        batch = list(rest)
        batch.insert(pos, i)
        batches.append(batch)
        positions.append(pos)
    assert len(batches) == 165
    estimates = _estimate_for_batches(z[i], mean, log_var, batches, n, positions)
    exact = np.exp(exact_log_qz(z[i:i + 1], mean, log_var)[0])
    np.testing.assert_allclose(estimates.mean(), exact, rtol=1e-10)
    # The naive batch average (1/B) Σ_j q(z_i|x_j) would be biased here.
    naive = np.mean([np.mean([mvn_diag(mean[j], log_var[j]).pdf(z[i]) for j in b])
                     for b in batches])
    assert abs(naive / exact - 1) > 0.05


def test_stratified_unbiased_random_batches(float64):
    rng, mean, log_var, z = _problem(8)
    n, batch_size, i, num_batches = len(mean), 4, 2, 4000
    others = np.array([j for j in range(n) if j != i])
    batches, positions = [], []
    for _ in range(num_batches):
        batch = list(rng.choice(others, batch_size - 1, replace=False))
        pos = int(rng.integers(batch_size))
        batch.insert(pos, i)
        batches.append(batch)
        positions.append(pos)
    estimates = _estimate_for_batches(z[i], mean, log_var, batches, n, positions)
    exact = np.exp(exact_log_qz(z[i:i + 1], mean, log_var)[0])
    stderr = estimates.std() / np.sqrt(num_batches)
    assert abs(estimates.mean() - exact) < max(4 * stderr, 1e-3 * exact)
    assert abs(estimates.mean() / exact - 1) < 0.03


# ------------------------------------------------------------------ TC decomposition
@pytest.mark.parametrize("prior_kind", ["normal", "decoupled"])
def test_tc_decomposition(float64, prior_kind):
    rng = np.random.default_rng(9)
    n, dim = 6, 3
    mean, log_var = posterior_params(rng, n, dim, spread=0.7)
    z = sample_q(rng, mean, log_var)
    if prior_kind == "normal":
        prior = priors.StandardNormalPrior(dim)
        log_pz = scipy.stats.multivariate_normal(np.zeros(dim), np.eye(dim)).logpdf(z)
    else:
        prior = random_flow(dim, seed=10)
        log_pz = independent_log_prior(prior, z)
        assert np.max(np.abs(log_pz - scipy.stats.norm.logpdf(z).sum(-1))) > 1e-2
    log_qz_x = np.array([mvn_diag(m, lv).logpdf(x) for x, m, lv in zip(z, mean, log_var)])
    parts = estimators.tc_decomposition(tf.constant(z), tf.constant(mean),
                                        tf.constant(log_var), prior, n)
    parts = {k: v.numpy() for k, v in parts.items()}
    total = parts["mutual_information"] + parts["total_correlation"] + parts["dimension_wise_kl"]
    np.testing.assert_allclose(total, log_qz_x - log_pz, rtol=1e-9, atol=1e-9)
    # Batch = whole dataset: each term is exact.
    log_qz = exact_log_qz(z, mean, log_var)
    log_marg = exact_log_prod_marginals(z, mean, log_var)
    np.testing.assert_allclose(parts["mutual_information"], log_qz_x - log_qz, atol=1e-9)
    np.testing.assert_allclose(parts["total_correlation"], log_qz - log_marg, atol=1e-9)
    np.testing.assert_allclose(parts["dimension_wise_kl"], log_marg - log_pz, atol=1e-9)


# ------------------------------------------------------------------ MMD
def brute_force_mmd(x, y, h2):
    def k(a, b):
        return np.exp(-np.sum((a - b) ** 2) / (2.0 * h2))

    kxx = np.mean([k(a, b) for a in x for b in x])
    kyy = np.mean([k(a, b) for a in y for b in y])
    kxy = np.mean([k(a, b) for a in x for b in y])
    return kxx + kyy - 2.0 * kxy


def test_mmd_identical_sets_is_zero():
    x = np.random.default_rng(11).normal(size=(50, 3)).astype(np.float32)
    assert abs(float(estimators.mmd(tf.constant(x), tf.constant(x.copy())))) <= 1e-6


def test_mmd_grows_with_mean_shift():
    rng = np.random.default_rng(12)
    x = rng.normal(size=(200, 2)).astype(np.float32)
    y = rng.normal(size=(200, 2)).astype(np.float32)
    values = [float(estimators.mmd(tf.constant(x), tf.constant(y + np.float32(s))))
              for s in (0.0, 0.5, 1.0, 2.0)]
    assert all(a < b for a, b in zip(values, values[1:])), values
    assert values[0] < 0.05 and values[-1] > 0.3


@pytest.mark.parametrize("bandwidth_sq", [0.7, None])
def test_mmd_matches_double_loop(float64, bandwidth_sq):
    rng = np.random.default_rng(13)
    x = rng.normal(size=(30, 3))
    y = rng.normal(0.5, 1.3, size=(25, 3))
    h2 = 3.0 if bandwidth_sq is None else bandwidth_sq  # documented default h² = L
    got = float(estimators.mmd(tf.constant(x), tf.constant(y), bandwidth_sq))
    np.testing.assert_allclose(got, brute_force_mmd(x, y, h2), rtol=1e-10)


# ------------------------------------------------------------------ aggregate posterior
def test_aggregate_log_density(float64):
    rng = np.random.default_rng(14)
    n, m, dim = 50, 20, 3
    means, log_vars = posterior_params(rng, n, dim, spread=1.5)
    z = rng.normal(0.0, 2.0, (m, dim))
    comps = np.array([[mvn_diag(mu, lv).logpdf(zi) for mu, lv in zip(means, log_vars)]
                      for zi in z])
    expected = scipy.special.logsumexp(comps, axis=1) - np.log(n)
    for chunk in (1, 7, 50, 4096):
        got = estimators.aggregate_log_density(tf.constant(z), tf.constant(means),
                                               tf.constant(log_vars), chunk_size=chunk)
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-10, err_msg=f"chunk={chunk}")
