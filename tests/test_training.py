"""Training: every regularizer × prior trains; schedules and optimizers behave; the CLI works."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_dpvae import data as data_lib
from tf_dpvae import model as model_lib
from tf_dpvae import objectives
from tf_dpvae.config import ModelConfig
from tf_dpvae.training import build_model, restore_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def moons_batches():
    dataset = data_lib.load("moons")
    return data_lib.batch(dataset.train, 100, shuffle=True, seed=0, repeat=True,
                          drop_remainder=True)


class StepLogs(keras.callbacks.Callback):
    """Records (optimizer step after the update, logs) for every batch."""

    def __init__(self):
        super().__init__()
        self.records = []

    def on_train_batch_end(self, batch, logs=None):
        self.records.append((int(self.model.optimizer.iterations.numpy()),
                             {k: float(v) for k, v in logs.items()}))


@pytest.mark.parametrize("prior", ["normal", "decoupled"])
@pytest.mark.parametrize("regularizer", objectives.REGULARIZERS)
def test_every_configuration_trains(regularizer, prior, moons_batches):
    config = ModelConfig(regularizer=regularizer, prior=prior, learning_rate=1e-3)
    model = build_model(config)
    before = [v.numpy().copy() for v in model.vae_variables]
    recorder = StepLogs()
    model.fit(moons_batches, steps_per_epoch=8, epochs=1, verbose=0, callbacks=[recorder])
    assert int(model.optimizer.iterations.numpy()) == 8
    for _, logs in recorder.records:
        assert all(np.isfinite(v) for v in logs.values()), logs
        assert {"loss", "reconstruction", "kl", "elbo"} <= set(logs)
    changed = [not np.allclose(b, v.numpy()) for b, v in zip(before, model.vae_variables)]
    assert any(changed)
    if prior == "decoupled":
        flow_vars = model.prior.trainable_variables
        assert flow_vars and all(any(v is w for w in model.vae_variables) for v in flow_vars)
    expected_terms = {"beta_b": {"capacity"},
                      "beta_tc": {"mutual_information", "total_correlation",
                                  "dimension_wise_kl"},
                      "factor": {"total_correlation", "discriminator_loss",
                                 "discriminator_accuracy"},
                      "info": {"mmd"}}.get(regularizer, set())
    assert expected_terms <= set(recorder.records[-1][1])


def test_capacity_follows_schedule(moons_batches):
    config = ModelConfig(regularizer="beta_b", prior="decoupled", capacity_max=25.0,
                         capacity_stop_steps=10)
    model = build_model(config)
    recorder = StepLogs()
    model.fit(moons_batches, steps_per_epoch=14, epochs=1, verbose=0, callbacks=[recorder])
    for step_after, logs in recorder.records:
        step_before = step_after - 1  # C(t) uses the step count before the update
        assert logs["capacity"] == pytest.approx(min(25.0, 25.0 * step_before / 10), abs=1e-5)
    assert recorder.records[-1][1]["capacity"] == pytest.approx(25.0)


def _snapshot(variables):
    return [v.numpy().copy() for v in variables]


def _changed(before, variables):
    return [not np.allclose(b, v.numpy()) for b, v in zip(before, variables)]


def test_factor_vae_has_separate_optimizers(moons_batches):
    config = ModelConfig(regularizer="factor", prior="decoupled", learning_rate=1e-3,
                         discriminator_learning_rate=1e-3)
    model = build_model(config)
    assert model.objective.discriminator_optimizer is not model.optimizer
    disc_ids = {id(v) for v in model.discriminator.trainable_variables}
    assert not disc_ids & {id(v) for v in model.vae_variables}
    vae_before = _snapshot(model.vae_variables)
    disc_before = _snapshot(model.discriminator.trainable_variables)
    model.fit(moons_batches, steps_per_epoch=5, epochs=1, verbose=0)
    assert int(model.optimizer.iterations.numpy()) == 5
    assert int(model.objective.discriminator_optimizer.iterations.numpy()) == 5
    assert any(_changed(vae_before, model.vae_variables))
    assert any(_changed(disc_before, model.discriminator.trainable_variables))

    # Freezing one optimizer (learning rate 0) leaves exactly its own variables alone.
    model.optimizer.learning_rate = 0.0
    vae_before = _snapshot(model.vae_variables)
    disc_before = _snapshot(model.discriminator.trainable_variables)
    model.fit(moons_batches, steps_per_epoch=3, epochs=1, verbose=0)
    assert not any(_changed(vae_before, model.vae_variables))
    assert any(_changed(disc_before, model.discriminator.trainable_variables))


def test_factor_discriminator_learns_to_spot_correlated_codes():
    """On codes with strongly correlated coordinates, the discriminator's accuracy
    rises above chance: it separates q(z) from the permuted Π_j q(z_j)."""
    config = ModelConfig(regularizer="factor", prior="normal", latent_dim=2,
                         discriminator_learning_rate=1e-3)
    model = build_model(config)
    rng = np.random.default_rng(0)
    accuracies = []
    for i in range(150):
        t = rng.normal(size=(200, 1)).astype(np.float32)
        z = tf.constant(np.concatenate([t, t + 0.05 * rng.normal(size=t.shape)], 1),
                        tf.float32)
        terms = model.objective.auxiliary_step(z, tf.constant([1, i], tf.int32), 1)
        accuracies.append(float(terms["discriminator_accuracy"]))
    assert np.mean(accuracies[-20:]) > 0.8


def _fit(args, tmp_path, check=True):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run([sys.executable, "-m", "trainers.fit", *args], cwd=REPO, env=env,
                            capture_output=True, text=True, timeout=300)
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_cli_with_shipped_flagfile_writes_everything(tmp_path):
    model_dir = tmp_path / "run"
    _fit(["--flagfile=trainers/configs/moons/base.flags", "--regularizer=beta_tc",
          "--prior=decoupled",
          f"--model_dir={model_dir}", "--train_steps=40", "--checkpoint_every=20",
          "--summary_every=10", "--sample_every=20", "--steps_per_epoch=20",
          "--validation_steps=2"], tmp_path)
    names = set(os.listdir(model_dir))
    assert {"config.json", "samples.png", "checkpoint", "train", "validation",
            "train_summary.json"} <= names
    assert tf.train.latest_checkpoint(str(model_dir)).endswith("ckpt-40")
    config = json.loads((model_dir / "config.json").read_text())
    assert config["regularizer"] == "beta_tc" and config["prior"] == "decoupled"
    assert config["num_train"] == 2000
    events = [f for f in os.listdir(model_dir / "train") if f.startswith("events")]
    assert events
    # The TensorBoard events hold every loss term, the learning rate and sample images.
    from tensorboard.backend.event_processing import event_accumulator
    acc = event_accumulator.EventAccumulator(str(model_dir / "train"),
                                             size_guidance={"tensors": 0})
    acc.Reload()
    tags = set(acc.Tags()["tensors"])
    assert {"loss", "reconstruction", "kl", "mutual_information", "total_correlation",
            "dimension_wise_kl", "learning_rate", "samples"} <= tags
    # Later commands rebuild the model from --model_dir alone.
    model = restore_model(str(model_dir))
    assert int(model.optimizer.iterations.numpy()) == 40
    assert np.all(np.isfinite(model.generate(5, seed=0).numpy()))


@pytest.mark.parametrize("args, flag", [
    (["--regularizer=beta_x"], "--regularizer"),
    (["--train_steps=-5"], "--train_steps"),
    (["--batch_size=5000"], "--batch_size"),
    (["--latent_dim=1", "--prior=decoupled"], "--latent_dim"),
    (["--flow_masks=111"], "--flow_masks"),
    (["--dataset=fashion_mnist", "--data_dir=/nonexistent/fashion"], "--data_dir"),
    (["--strategy=multi_worker"], "TF_CONFIG"),
])
def test_bad_flags_fail_at_start_naming_the_flag(args, flag, tmp_path):
    result = _fit([f"--model_dir={tmp_path / 'bad'}", "--train_steps=10", *args]
                  if not any(a.startswith("--train_steps") for a in args)
                  else [f"--model_dir={tmp_path / 'bad'}", *args], tmp_path, check=False)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert errors and flag in errors[-1], result.stderr[-2000:]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "bad" / "checkpoint").exists()


# ------------------------------------------------------------------ averaged numbers
@pytest.mark.parametrize("regularizer", ["beta_tc", "factor"])
def test_evaluate_and_tuner_report_means_not_the_last_batch(regularizer):
    """model.evaluate over k batches (the last one smaller) = the example-weighted
    numpy mean of the per-batch terms; the tuner's objective = the same mean −ELBO."""
    from trainers import tune
    dataset = data_lib.load("moons")
    config = ModelConfig(regularizer=regularizer, prior="decoupled",
                         num_train=dataset.num_train)
    model = build_model(config)
    batches = data_lib.batch(dataset.validation, 120, shuffle=False, seed=0, repeat=False,
                             drop_remainder=False)  # 500 points: 4 × 120 + 20
    per_batch, sizes = [], []
    for x in batches:
        terms, z = model.compute_terms(x)
        terms.update(model.objective.auxiliary_step(
            z, model._step_seed(model_lib._NOISE_AUXILIARY), 1, update=False))
        per_batch.append({k: float(v) for k, v in terms.items()})
        sizes.append(int(x.shape[0]))
    assert sizes == [120, 120, 120, 120, 20]
    results = model.evaluate(batches, verbose=0, return_dict=True)
    for name in ("loss", "elbo", "kl", "reconstruction"):
        values = np.array([b[name] for b in per_batch])
        expected = np.average(values, weights=sizes)
        assert results[name] == pytest.approx(expected, rel=1e-5, abs=1e-6), name
        assert abs(values[-1] - expected) > 1e-4  # the last batch alone would differ
    if regularizer == "factor":
        assert results["discriminator_accuracy"] == pytest.approx(
            np.average([b["discriminator_accuracy"] for b in per_batch], weights=sizes))
    elbo = np.average([b["elbo"] for b in per_batch[:3]], weights=sizes[:3])
    assert tune.validation_loss(model, dataset, 120, max_batches=3) == \
        pytest.approx(-elbo, rel=1e-5)


def test_window_means_recover_the_mean_of_each_window():
    from tf_dpvae.callbacks import window_means
    values = np.random.default_rng(0).normal(size=30)
    running = np.cumsum(values) / np.arange(1, 31)
    first = window_means(None, (9, {"loss": running[9]}))
    assert first["loss"] == pytest.approx(values[:10].mean())
    second = window_means((9, {"loss": running[9]}), (24, {"loss": running[24]}))
    assert second["loss"] == pytest.approx(values[10:25].mean())
