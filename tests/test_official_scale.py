"""Our per-example losses against the official code's batch losses (issue 11, item 1).

For every regularizer and both priors, the official dpVAE code's batch formula is
written here again, independently, in numpy (sums of reconstruction and KL over the
batch, batch means of β-TC's MI/TC/DWKL, FactorVAE's TC and InfoVAE's MMD, β-VAE-B's C
on the batch-summed KL, Table 2's raw values), and compared with
``B · loss`` of our objective built from the converted defaults
(``objectives.from_paper(B)``, which is what ``ModelConfig`` and the flags default to).
Also: the ``mse`` likelihood reproduces ``mse_weight · Σ (x̂ − x)²`` exactly, and the
shipped ``official`` flagfiles hold the released values converted by the same rule.
"""

import glob
import os

import numpy as np
import pytest
import scipy.special
import scipy.stats
import tensorflow as tf

from tf_dpvae import likelihoods, objectives, priors
from tf_dpvae.config import DATASET_DEFAULTS, PAPER_BATCH_SIZE, ModelConfig

B, L, N = 100, 2, 4000
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Table 2 as the official code reads it (raw, for its batch loss).
TABLE2 = {"beta_h": {"beta": 4.0}, "beta_b": {"gamma": 15.0, "C_max": 25.0},
          "beta_tc": {"alpha": 1.0, "beta": 4.0, "gamma": 15.0},
          "factor": {"gamma": 1000.0}, "info": {"alpha": 0.0, "lambda": 1000.0}}


@pytest.fixture(params=["normal", "decoupled"])
def numbers(request):
    """One batch's per-example numbers, and the prior they refer to."""
    rng = np.random.default_rng(1)
    prior = priors.make_prior(request.param, L)
    mean = rng.normal(0.0, 1.0, (B, L)).astype(np.float32)
    log_var = rng.uniform(-3.0, 0.0, (B, L)).astype(np.float32)
    z = (mean + np.exp(0.5 * log_var) * rng.normal(size=(B, L))).astype(np.float32)
    return {
        "prior": prior, "mean": mean, "log_var": log_var, "z": z,
        "reconstruction": rng.uniform(20.0, 60.0, B).astype(np.float32),
        "kl": rng.uniform(0.5, 6.0, B).astype(np.float32),
        "prior_z": rng.normal(size=(B, L)).astype(np.float32),
        "log_pz": prior.log_prob(tf.constant(z)).numpy().astype(float),
        "logits": rng.normal(size=(B, 2)).astype(np.float32),
    }


def our_loss(regularizer, numbers, step=0, **extra):
    """B · (our per-example loss), weights from the conversion at B = 100."""
    cls = objectives.OBJECTIVES[regularizer]
    objective = cls(**extra, **cls.from_paper(B))
    logits = tf.constant(numbers["logits"])
    objective.discriminator = lambda z: logits  # FactorVAE's (unused by the others)
    batch = objectives.Batch(
        reconstruction=tf.constant(numbers["reconstruction"]),
        kl=tf.constant(numbers["kl"]), z=tf.constant(numbers["z"]),
        mean=tf.constant(numbers["mean"]), log_var=tf.constant(numbers["log_var"]),
        prior=numbers["prior"], step=tf.constant(step, tf.int64),
        sample_prior=lambda n: tf.constant(numbers["prior_z"])[:n])
    return B * float(objective(batch)["loss"])


def official_base(numbers):
    return numbers["reconstruction"].astype(float).sum(), numbers["kl"].astype(float).sum()


def close(ours, official):
    np.testing.assert_allclose(ours, official, rtol=2e-5)


def test_vae(numbers):
    rec, kl = official_base(numbers)
    close(our_loss("vae", numbers), rec + kl)


def test_beta_vae_h(numbers):
    rec, kl = official_base(numbers)
    close(our_loss("beta_h", numbers), rec + TABLE2["beta_h"]["beta"] * kl)


@pytest.mark.parametrize("step", [0, 10_000, 50_000, 150_000])
def test_beta_vae_b(numbers, step):
    rec, kl = official_base(numbers)  # Σ KL ≈ 325: C = 25 is below it at every step
    t2 = TABLE2["beta_b"]
    capacity = min(t2["C_max"], t2["C_max"] * step / 100_000)
    close(our_loss("beta_b", numbers, step=step), rec + t2["gamma"] * abs(kl - capacity))


def test_beta_vae_b_capacity_crossing():
    """Σ KL below C_max: |Σ KL − C| changes sign along the schedule, in both losses."""
    cls = objectives.get("beta_b")
    objective = cls(capacity_stop_steps=100, **cls.from_paper(B))
    kl = np.full(B, 0.2, np.float32)  # Σ KL = 20 < 25
    for step in (0, 50, 70, 90, 100, 200):
        batch = objectives.Batch(
            reconstruction=tf.zeros(B), kl=tf.constant(kl), z=tf.zeros((B, L)),
            mean=tf.zeros((B, L)), log_var=tf.zeros((B, L)), prior=None,
            step=tf.constant(step, tf.int64), sample_prior=None)
        capacity = min(25.0, 25.0 * step / 100)
        close(B * float(objective(batch)["loss"]), 15.0 * abs(kl.astype(float).sum() - capacity))


def mss_terms(z, mean, log_var, log_pz, dataset_size):
    """Per-example MI, TC, DWKL by minibatch stratified sampling, in float64 numpy."""
    z, mean, var = z.astype(float), mean.astype(float), np.exp(log_var.astype(float))
    n = len(z)
    comps = scipy.stats.norm.logpdf(z[:, None, :], mean[None], np.sqrt(var)[None])  # [i, j, l]
    log_w = np.full((n, n), np.log(dataset_size - 1) - np.log(dataset_size) - np.log(n - 1))
    np.fill_diagonal(log_w, -np.log(dataset_size))
    log_qz_x = np.einsum("iil->i", comps)
    log_qz = scipy.special.logsumexp(log_w + comps.sum(-1), axis=1)
    log_marg = scipy.special.logsumexp(log_w[:, :, None] + comps, axis=1).sum(-1)
    return log_qz_x - log_qz, log_qz - log_marg, log_marg - log_pz


def test_beta_tc_vae(numbers):
    rec, _ = official_base(numbers)
    mi, tc, dwkl = mss_terms(numbers["z"], numbers["mean"], numbers["log_var"],
                             numbers["log_pz"], N)
    t2 = TABLE2["beta_tc"]
    official = rec + t2["alpha"] * mi.mean() + t2["beta"] * tc.mean() + t2["gamma"] * dwkl.mean()
    close(our_loss("beta_tc", numbers, dataset_size=N), official)


def test_factor_vae(numbers):
    rec, kl = official_base(numbers)
    logits = numbers["logits"].astype(float)
    official = rec + kl + TABLE2["factor"]["gamma"] * np.mean(logits[:, 0] - logits[:, 1])
    close(our_loss("factor", numbers), official)


def test_info_vae(numbers):
    rec, kl = official_base(numbers)
    x, y = numbers["z"].astype(float), numbers["prior_z"].astype(float)

    def kernel(a, b):  # the official kernel exp(−‖a − b‖² / L²); = ours at L = 2
        return np.exp(-((a[:, None, :] - b[None]) ** 2).sum(-1) / L ** 2)

    mmd = kernel(x, x).mean() + kernel(y, y).mean() - 2.0 * kernel(x, y).mean()
    t2 = TABLE2["info"]
    official = rec + (1 - t2["alpha"]) * kl + (t2["alpha"] + t2["lambda"] - 1) * mmd
    close(our_loss("info", numbers), official)


def test_defaults_are_the_conversion_at_each_datasets_paper_batch():
    assert ModelConfig().capacity_max == 0.25
    assert (ModelConfig().tc_alpha, ModelConfig().tc_beta, ModelConfig().tc_gamma) == \
        (0.01, 0.04, 0.15)
    for dataset, batch in PAPER_BATCH_SIZE.items():
        defaults = DATASET_DEFAULTS[dataset]
        assert defaults["capacity_max"] == pytest.approx(25.0 / batch)
        assert defaults["tc_gamma"] == pytest.approx(15.0 / batch)
        assert defaults["factor_gamma"] == pytest.approx(1000.0 / batch)
        assert defaults["info_lambda"] == pytest.approx(999.0 / batch + 1.0)
        assert defaults["beta"] == 4.0 and defaults["capacity_gamma"] == 15.0


def test_per_example_rule_and_bad_kind():
    assert objectives.per_example(4.0, objectives.SUMMED_WEIGHT, 50) == 4.0
    assert objectives.per_example(15.0, objectives.MEAN_WEIGHT, 50) == 0.3
    assert objectives.per_example(25.0, objectives.SUMMED_TARGET, 50) == 0.5
    with pytest.raises(ValueError, match="applied_to"):
        objectives.per_example(1.0, "per pixel", 50)


# ------------------------------------------------------------------ the mse likelihood
@pytest.mark.parametrize("mse_weight", [1.0, 10.0, 100.0])
def test_mse_likelihood_is_the_official_term_plus_a_constant(mse_weight):
    rng = np.random.default_rng(2)
    x = rng.uniform(size=(5, 28, 28, 1)).astype(np.float32)
    out = rng.normal(size=(5, 28, 28, 1)).astype(np.float32)
    lik = likelihoods.make_likelihood("mse", (28, 28, 1), mse_weight=mse_weight)
    x_hat = out.astype(float)  # the official decoder's linear output
    official = mse_weight * ((x_hat - x) ** 2).sum()  # reduction='sum' over the batch
    np.testing.assert_allclose(float(tf.reduce_sum(lik.reconstruction_loss(x, out))),
                               official, rtol=1e-5)
    # log_prob is the Gaussian N(x; x̂, σ² = 1 / (2w)) density, constants included.
    reference = scipy.stats.norm.logpdf(x, x_hat, np.sqrt(0.5 / mse_weight)).reshape(5, -1)
    np.testing.assert_allclose(lik.log_prob(x, out).numpy(), reference.sum(-1), rtol=1e-5)
    assert lik.normalizer == pytest.approx(0.5 * 784 * np.log(np.pi / mse_weight))
    # What generation shows: the mean clipped to the image range.
    np.testing.assert_allclose(lik.mean(out).numpy(), np.clip(out, 0.0, 1.0))


def test_mse_model_reports_official_reconstruction_and_a_proper_elbo():
    from tf_dpvae.training import build_model
    config = ModelConfig(dataset="moons", likelihood="mse", mse_weight=10.0,
                         prior="normal", regularizer="vae")
    model = build_model(config)
    x = tf.constant(np.random.default_rng(3).normal(size=(8, 2)).astype(np.float32))
    terms, _ = model.compute_terms(x)
    mean, log_var = model.encode(x)
    noise = tf.random.stateless_normal(tf.shape(mean), model._step_seed(0))
    x_hat = model.decode(mean + tf.exp(0.5 * log_var) * noise).numpy().astype(float)
    sse = 10.0 * ((x_hat - x.numpy()) ** 2).sum(-1)
    np.testing.assert_allclose(float(terms["reconstruction"]), sse.mean(), rtol=1e-5)
    np.testing.assert_allclose(float(terms["elbo"]),
                               -(sse.mean() + float(terms["kl"]) + np.log(np.pi / 10.0)),
                               rtol=1e-5)


# ------------------------------------------------------------------ official flagfiles
# The released MNIST configs (shared/reference/official-configs.md): raw values, batch.
RELEASED = {
    ("vae", "normal"): (1, {}, 100, 1e-4, 100_000),
    ("vae", "decoupled"): (1, {}, 100, 1e-4, 100_000),
    ("beta_h", "normal"): (1, {"beta": 5.0}, 24, 1e-4, 100_000),
    ("beta_h", "decoupled"): (10, {"beta": 5.0}, 100, 1e-3, 100_000),
    ("beta_b", "normal"): (100, {"gamma": 15.0, "capacity_max": 25.0}, 24, 1e-3, 100_000),
    ("beta_b", "decoupled"): (100, {"gamma": 15.0, "capacity_max": 25.0}, 24, 1e-3, 100_000),
    ("beta_tc", "normal"): (10, {"alpha": 1.0, "beta": 4.0, "gamma": 15.0}, 100, 1e-4,
                            100_000),
    ("beta_tc", "decoupled"): (1, {"alpha": 1.0, "beta": 4.0, "gamma": 150.0}, 100, 1e-4,
                               200_000),
    ("factor", "normal"): (1, {"gamma": 1000.0}, 24, 1e-4, 100_000),
    ("factor", "decoupled"): (1, {"gamma": 1000.0}, 24, 1e-4, 100_000),
    ("info", "normal"): (10, {"alpha": 0.0, "lam": 1000.0}, 24, 1e-4, 100_000),
    ("info", "decoupled"): (10, {"alpha": 0.0, "lam": 1000.0}, 24, 1e-3, 100_000),
}


def test_official_flagfiles_hold_the_released_configs_converted():
    from trainers.common import configs_from_args
    files = sorted(glob.glob(os.path.join(REPO, "trainers/configs/mnist/official/*_*.flags")))
    assert len(files) == 12
    cwd = os.getcwd()
    os.chdir(REPO)
    try:
        for (regularizer, prior), (mse, raw, batch, lr, steps) in RELEASED.items():
            path = f"trainers/configs/mnist/official/{regularizer}_{prior}.flags"
            config, train = configs_from_args([f"--flagfile={path}"])
            assert (config.regularizer, config.prior, config.likelihood) == \
                (regularizer, prior, "mse")
            assert config.mse_weight == mse and config.batch_size == batch, path
            assert config.learning_rate == lr and train.train_steps == steps, path
            assert config.augment and config.flow_bound_shift and config.latent_dim == 2
            cls = objectives.OBJECTIVES[regularizer]
            for name, value in cls.from_paper(batch, **raw).items():
                assert getattr(config, cls.config_fields()[name]) == pytest.approx(value), \
                    (path, name)
    finally:
        os.chdir(cwd)
