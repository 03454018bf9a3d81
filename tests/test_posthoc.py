"""Post-hoc priors (tf_dpvae/posthoc/) against independent answers: scikit-learn's own
mixture density, a density that integrates to 1 on a grid, the true log-likelihood of
the mixture the codes came from, the moons curve the two-stage samples must lie on,
and the commands end to end (fit_prior → evaluate → export)."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

import helpers

from tf_dpvae import posthoc
from tf_dpvae.posthoc import base


# A known 2-D mixture, far from N(0, I): three tight components.
MEANS = np.array([[-2.0, 0.0], [2.0, 0.0], [0.0, 2.5]])
SCALES = np.array([[0.4, 0.3], [0.3, 0.5], [0.5, 0.3]])
WEIGHTS = np.array([0.5, 0.3, 0.2])
FAST = dict(max_steps=4000, validation_every=200, patience=10, batch_size=128)
SETTINGS = {"gmm": {}, "flow": {"flow_blocks": 4, "flow_hidden_units": 32},
            "two_stage": {"stage2_hidden_units": 64, "log_prob_samples": 64}}


def mixture_sample(n, seed):
    rng = np.random.default_rng(seed)
    k = rng.choice(3, size=n, p=WEIGHTS)
    return (MEANS[k] + SCALES[k] * rng.standard_normal((n, 2))).astype(np.float32)


def mixture_log_prob(z):
    """The true log density (diagonal components), by brute force in numpy."""
    z = np.asarray(z, np.float64)[:, None, :]
    log_n = -0.5 * np.sum(((z - MEANS) / SCALES) ** 2 + np.log(2 * np.pi * SCALES ** 2),
                          axis=-1)
    return np.logaddexp.reduce(np.log(WEIGHTS) + log_n, axis=1)


def standard_normal_log_prob(z):
    return -0.5 * np.sum(np.asarray(z, np.float64) ** 2 + np.log(2 * np.pi), axis=-1)


@pytest.fixture(scope="module")
def fitted():
    """Each kind fitted once to 8,000 codes of the known mixture (10 % held out)."""
    options = posthoc.FitOptions(seed=0, **FAST)
    train, validation = base.split_codes(mixture_sample(8000, seed=1), options)
    return {kind: posthoc.get(kind).fit(train, validation, options, SETTINGS[kind])
            for kind in posthoc.POSTHOC}


@pytest.mark.parametrize("kind", list(posthoc.POSTHOC))
def test_the_fitted_density_integrates_to_one(fitted, kind):
    prior, _ = fitted[kind]
    h = 0.05
    axis = np.arange(-6.0, 6.0 + h / 2, h)
    grid = np.stack(np.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
    mass = np.exp(base.aggregate_lib.prior_log_prob(prior, grid.astype(np.float32))
                  ).sum() * h * h
    if getattr(prior, "exact_log_prob", True):
        assert mass == pytest.approx(1.0, abs=0.01)
    else:   # the two-stage IWAE estimate is a lower bound of log p: mass ≤ 1
        assert 0.95 <= mass <= 1.005


@pytest.mark.parametrize("kind", list(posthoc.POSTHOC))
def test_held_out_likelihood_beats_the_standard_normal_and_nears_the_truth(fitted, kind):
    prior, info = fitted[kind]
    held_out = mixture_sample(4000, seed=2)            # codes no fit has seen
    fitted_ll = base.mean_log_prob(prior, held_out)
    truth = float(np.mean(mixture_log_prob(held_out)))
    normal = float(np.mean(standard_normal_log_prob(held_out)))
    assert fitted_ll > normal + 1.0, (fitted_ll, normal)
    # How close each kind gets in this budget (the truth is an upper bound on average).
    gap = {"gmm": 0.03, "flow": 0.25, "two_stage": 0.25}[kind]
    assert truth - gap < fitted_ll < truth + 0.03, (fitted_ll, truth)


def test_the_mixture_density_is_scikit_learns(fitted):
    from sklearn.mixture import GaussianMixture
    prior, info = fitted["gmm"]
    gm = GaussianMixture(n_components=prior.num_components, covariance_type="full",
                         reg_covar=1e-6, max_iter=500, random_state=0)
    options = posthoc.FitOptions(seed=0, **FAST)
    train, _ = base.split_codes(mixture_sample(8000, seed=1), options)
    gm.fit(train.astype(np.float64))
    z = np.random.default_rng(5).normal(0, 2.5, (500, 2)).astype(np.float32)
    np.testing.assert_allclose(prior.log_prob(z).numpy(), gm.score_samples(z),
                               rtol=1e-4, atol=1e-4)
    # K chosen by held-out likelihood: three components are found (or a tie past them).
    search = {int(k): v for k, v in info["components_search"].items()}
    assert search[1] < search[2] < max(search.values())
    assert prior.num_components >= 3


def test_mixture_draws_have_the_mixtures_moments(fitted):
    prior, _ = fitted["gmm"]
    z, z0 = prior.draw(40_000, seed=3)
    np.testing.assert_array_equal(z.numpy(), z0.numpy())
    pi = tf.nn.softmax(prior.log_weights).numpy()
    mu, tril = prior.means.numpy(), prior.scale_tril.numpy()
    mean = pi @ mu                                   # closed form of the mixture's moments
    cov = sum(p * (t @ t.T + np.outer(m - mean, m - mean)) for p, m, t in zip(pi, mu, tril))
    np.testing.assert_allclose(z.numpy().mean(0), mean, atol=0.03)
    np.testing.assert_allclose(np.cov(z.numpy().T), cov, atol=0.06)


@pytest.mark.parametrize("kind", list(posthoc.POSTHOC))
def test_draws_are_seeded_and_match_sample(fitted, kind):
    prior, _ = fitted[kind]
    a, a0 = prior.draw(64, seed=7)
    b, b0 = prior.draw(64, seed=7)
    c, _ = prior.draw(64, seed=8)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_array_equal(a0.numpy(), b0.numpy())
    assert not np.allclose(a.numpy(), c.numpy())
    np.testing.assert_allclose(prior.sample(64, seed=7).numpy(), a.numpy(), atol=1e-6)
    z, z0 = base.aggregate_lib.sample_prior(prior, 64, 7)   # what every metric draws
    np.testing.assert_allclose(z, a.numpy(), atol=1e-5)


@pytest.mark.parametrize("kind", list(posthoc.POSTHOC))
def test_save_and_load_give_the_same_prior(fitted, kind, tmp_path):
    prior, info = fitted[kind]
    where = posthoc.save(prior, str(tmp_path / kind), {"note": "test"})
    loaded = posthoc.load(where)
    z = mixture_sample(50, seed=9)
    np.testing.assert_allclose(loaded.log_prob(z).numpy(), prior.log_prob(z).numpy(),
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(loaded.draw(10, seed=1)[0].numpy(),
                               prior.draw(10, seed=1)[0].numpy(), atol=1e-6)
    assert posthoc.read_info(where)["note"] == "test"


def test_a_damaged_prior_file_is_named(fitted, tmp_path):
    prior, _ = fitted["gmm"]
    where = posthoc.save(prior, str(tmp_path / "gmm"), {})
    with open(os.path.join(where, base.WEIGHTS_FILE), "wb") as f:
        f.write(b"not a zip")
    with pytest.raises(ValueError, match="weights.npz"):
        posthoc.load(where)
    with open(os.path.join(where, base.PRIOR_FILE), "w") as f:
        f.write("{")
    with pytest.raises(ValueError, match="prior.json"):
        posthoc.load(where)


def test_two_stage_samples_reproduce_two_moons():
    """Fitted to 2-D moons points (a known distribution on two curves): its samples match
    held-out points in Fréchet distance (FD < 0.01; N(0, I) is at 0.45) and lie on the
    moons (≥ 85 % within 0.15 of the noise-free curves; a Gaussian with the data's
    mean and covariance: ≈ 35 %)."""
    from sklearn.datasets import make_moons

    from tf_dpvae.metrics import fid
    points = make_moons(6000, noise=0.05, random_state=0)[0].astype(np.float32)
    held_out = make_moons(4000, noise=0.05, random_state=1)[0].astype(np.float32)
    options = posthoc.FitOptions(seed=0, max_steps=8000, validation_every=250,
                                 patience=12, batch_size=64)
    train, validation = base.split_codes(points, options)
    prior, info = posthoc.TwoStagePrior.fit(train, validation, options,
                                            {"stage2_hidden_units": 128})
    z = prior.draw(4000, seed=0)[0].numpy()
    distance = fid.fid(z, held_out)
    normal = fid.fid(np.random.default_rng(0).standard_normal((4000, 2)), held_out)
    t = np.linspace(0, np.pi, 2000)
    curve = np.concatenate([np.stack([np.cos(t), np.sin(t)], 1),
                            np.stack([1 - np.cos(t), 0.5 - np.sin(t)], 1)])

    def on_moons(x):
        d = np.min(np.linalg.norm(x[:, None, :] - curve[None, ::4], axis=-1), axis=1)
        return float(np.mean(d < 0.15))

    gaussian = np.random.default_rng(1).multivariate_normal(
        points.mean(0), np.cov(points.T), 4000)
    assert normal > 0.3 and distance < 0.01, (distance, normal)
    assert on_moons(held_out) > 0.99
    assert on_moons(gaussian) < 0.5
    assert on_moons(z) > 0.85, (on_moons(z), info["gamma"])


def test_fit_options_refuse_bad_values():
    with pytest.raises(ValueError, match="--validation_fraction"):
        posthoc.FitOptions(validation_fraction=1.0)
    with pytest.raises(ValueError, match="--max_steps"):
        posthoc.FitOptions(max_steps=0)
    with pytest.raises(ValueError, match="--prior=nope"):
        posthoc.get("nope")


def test_codes_split_examples_then_draw(monkeypatch):
    means = np.arange(20, dtype=np.float32).reshape(10, 2)
    monkeypatch.setattr(base.aggregate_lib, "encode_dataset",
                        lambda *a, **k: (means, np.full_like(means, -30.0)))
    options = posthoc.FitOptions(seed=0, validation_fraction=0.2, draws_per_example=3)
    train, held, about = base.codes(None, None, options)
    assert train.shape == (24, 2) and held.shape == (6, 2)
    assert about["draws_per_example"] == 3 and about["num_validation_examples"] == 2
    # No held-out code shares its example with a train code (σ ≈ 0: codes ≈ means).
    assert not set(np.round(held[:, 0]).tolist()) & set(np.round(train[:, 0]).tolist())
    assert base.draws_per_example(1800, posthoc.FitOptions()) == 10
    assert base.draws_per_example(55_000, posthoc.FitOptions()) == 1


# ---------------------------------------------------------------- commands end to end
_run = helpers.run_module


@pytest.fixture(scope="module")
def moons_model(tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("posthoc") / "beta_h"
    _run("trainers.fit", "--flagfile=trainers/configs/moons/base.flags",
         "--regularizer=beta_h", "--prior=normal", f"--model_dir={model_dir}",
         "--train_steps=300", "--checkpoint_every=300", "--steps_per_epoch=300",
         "--validation_steps=2", "--progress=none")
    return model_dir


EVAL_FLAGS = ("--num_samples=300", "--skl_samples=300", "--nll_samples=5",
              "--nll_max_examples=20", "--leakage_samples=500", "--figures=false")


def test_fit_prior_then_evaluate_with_it(moons_model):
    missing = _run("trainers.evaluate", f"--model_dir={moons_model}",
                   "--posthoc_prior=gmm", *EVAL_FLAGS, check=False)
    assert missing.returncode == 2 and "trainers.fit_prior" in missing.stderr
    assert "Traceback" not in missing.stderr
    out = _run("trainers.fit_prior", f"--model_dir={moons_model}", "--prior=gmm")
    assert "held-out log p(z)" in out.stdout
    record = json.loads((moons_model / "posthoc" / "gmm" / "prior.json").read_text())
    assert record["kind"] == "gmm" and record["model_step"] == 300
    assert record["draws_per_example"] == 10                 # 2,000 points: 20,000 codes
    assert (record["num_train_codes"] + record["num_validation_codes"]
            == 10 * record["num_examples"] == 20_000)
    _run("trainers.evaluate", f"--model_dir={moons_model}", "--posthoc_prior=gmm",
         *EVAL_FLAGS)
    metrics = json.loads((moons_model / "posthoc" / "gmm" / "eval" /
                          "metrics.json").read_text())
    assert metrics["posthoc_prior"] == "gmm" and metrics["model"] == "β-VAE-H + GMM"
    assert metrics["fid"] is not None and metrics["nll_nats"] is not None
    assert not (moons_model / "eval").exists()          # the model's own eval untouched


def test_fit_prior_refuses_another_kinds_setting_and_a_missing_dir(moons_model, tmp_path):
    wrong = _run("trainers.fit_prior", f"--model_dir={moons_model}", "--prior=flow",
                 "--components=3", check=False)
    assert wrong.returncode == 2
    assert wrong.stderr.strip().splitlines()[-1] == (
        "trainers.fit_prior: error: --components: a setting of --prior=gmm, not of "
        "--prior=flow")
    missing = _run("trainers.fit_prior", f"--model_dir={tmp_path / 'none'}",
                   "--prior=gmm", check=False)
    assert missing.returncode == 2 and "not a directory" in missing.stderr


def test_a_prior_fitted_at_another_step_is_refused(moons_model, tmp_path):
    import shutil

    from tf_dpvae.training import restore_model
    if not (moons_model / "posthoc" / "gmm" / base.PRIOR_FILE).exists():
        _run("trainers.fit_prior", f"--model_dir={moons_model}", "--prior=gmm")
    copy = tmp_path / "copy"
    shutil.copytree(moons_model, copy)
    path = copy / "posthoc" / "gmm" / base.PRIOR_FILE
    path.write_text(json.dumps({**json.loads(path.read_text()), "model_step": 99}))
    model = restore_model(str(copy))
    with pytest.raises(ValueError, match="fitted at step 99, but the model is at step 300"):
        posthoc.load_for_model(model, str(copy), "gmm")
    with pytest.raises(FileNotFoundError, match="trainers.fit_prior"):
        posthoc.load_for_model(model, str(copy), "flow")


def test_two_stage_prior_exports_and_serves(moons_model, tmp_path):
    _run("trainers.fit_prior", f"--model_dir={moons_model}", "--prior=two_stage",
         "--max_steps=400", "--stage2_hidden_units=32")
    export_base = tmp_path / "export"
    out = _run("export.saved_model", f"--model_dir={moons_model}",
               f"--export_base={export_base}", "--posthoc_prior=two_stage")
    assert "checks passed" in out.stdout + out.stderr
    about = json.loads((export_base / "1" / "assets.extra" / "export.json").read_text())
    assert about["posthoc_prior"] == "two_stage" and about["prior_is_bijection"] is False
    served = tf.saved_model.load(str(export_base / "1")).signatures["serving_default"](
        num_samples=tf.constant(6), seed=tf.constant(3, tf.int64))
    prior = posthoc.load(posthoc.directory(str(moons_model), "two_stage"))
    z, u = prior.draw(6, seed=3)
    np.testing.assert_allclose(served["z"].numpy(), z.numpy(), atol=1e-5)
    np.testing.assert_allclose(served["z0"].numpy(), u.numpy(), atol=1e-6)


@pytest.mark.slow   # 45–90 s; the commands it chains are tested above one by one
def test_posthoc_study_records_each_column_once_and_reports(tmp_path):
    store, out = tmp_path / "store", tmp_path / "runs"
    args = ["--datasets=moons", "--regularizers=vae", "--seeds=1", "--budget=smoke",
            f"--out={out}", f"--store={store}", "--fit_max_steps=300"]
    first = _run("trainers.posthoc_study", *args)
    records = sorted(p.name for p in (store / "moons").glob("*.json"))
    assert records == sorted(f"vae_{c}_seed0.json" for c in (
        "standard", "standard+gmm", "standard+flow", "standard+two_stage", "decoupled",
        "decoupled+flow"))
    gmm = json.loads((store / "moons" / "vae_standard+gmm_seed0.json").read_text())
    assert gmm["status"] == "done" and gmm["metrics"]["fid"] > 0
    assert "trainers.fit_prior" in gmm["command"] and gmm["fit_seconds"] > 0
    two_stage = json.loads((store / "moons" / "vae_standard+two_stage_seed0.json")
                           .read_text())
    assert "nll_nats" not in two_stage["metrics"]            # a bound of a bound
    report = (store / "report.md").read_text()
    assert "| vae |" in report and "+ two-stage" in report
    assert "6 model(s)" not in first.stdout
    again = _run("trainers.posthoc_study", *args)            # everything recorded: skipped
    assert "0 model(s) with columns to do" in again.stdout


def test_the_serving_module_samples_a_mixture_with_its_own_draw(moons_model):
    from export.module import ServingModule
    from tf_dpvae.training import restore_model
    if not (moons_model / "posthoc" / "gmm" / base.PRIOR_FILE).exists():
        _run("trainers.fit_prior", f"--model_dir={moons_model}", "--prior=gmm")
    model = restore_model(str(moons_model))
    prior = posthoc.load_for_model(model, str(moons_model), "gmm")
    module = ServingModule(posthoc.attach(model, prior))
    served = module.sample(tf.constant(7), tf.constant(3, tf.int64))
    z, z0 = prior.draw(7, seed=3)
    np.testing.assert_allclose(served["z"].numpy(), z.numpy(), atol=1e-6)
    np.testing.assert_allclose(served["z0"].numpy(), z0.numpy(), atol=1e-6)
    np.testing.assert_allclose(served["x"].numpy(), model.decode_mean(z).numpy(),
                               atol=1e-5)
    fresh = [module.sample(tf.constant(4), tf.constant(-1, tf.int64))["z"].numpy()
             for _ in range(2)]
    assert not np.allclose(*fresh)                     # seed -1: a fresh draw each time
    log_det = module.log_prior(tf.constant(z))["log_det"].numpy()
    np.testing.assert_array_equal(log_det, np.zeros(7))   # no bijection: 0
