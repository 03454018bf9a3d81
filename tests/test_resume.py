"""Resuming `python -m trainers.fit`: exact continuation, SIGKILL, NaN, changed flags.

Every test runs the trainer in subprocesses (see ``helpers``) on two moons.
"""

import dataclasses
import glob
import json
import os
import re
import signal
import time

import numpy as np
import pytest
import tensorflow as tf

import helpers
from tf_dpvae.config import ModelConfig
from tf_dpvae.training import restore_model

RESUME_CONFIGS = {
    # capacity_stop_steps=100 makes C(t) = 25 t / 100 change visibly over 60 steps.
    "beta_b": dict(regularizer="beta_b", prior="decoupled", capacity_stop_steps=100,
                   capacity_max=25.0),
    "factor": dict(regularizer="factor", prior="decoupled"),
    # XLA-compiled steps (--jit_compile) continue exactly too.
    "xla": dict(regularizer="vae", prior="decoupled", jit_compile=True),
}


@pytest.fixture(scope="module")
def resume_runs(tmp_path_factory):
    """Run A of each config trains 0 -> 60 straight, checkpointing every 20 steps.

    Run B of beta_b starts from a copy of A's ckpt-20, trains with --train_steps=40,
    then the same command with --train_steps=60 resumes it to 60; runs B of factor and xla
    resume a copy of A's ckpt-40 to 60. B starts from A's checkpoints so that the test
    does not depend on the initial weights being reproducible across processes: what
    it tests is that stopping and resuming reproduces the uninterrupted run.
    Returns ({name: (a_dir, b_dir)}, {name: [outputs of B's runs]}).
    """
    root = tmp_path_factory.mktemp("resume")
    runs = {name: (root / f"{name}_a", root / f"{name}_b") for name in RESUME_CONFIGS}
    outputs = {name: [] for name in RESUME_CONFIGS}

    def run_all(jobs):  # [(name, run index, train_steps)], run concurrently
        results = helpers.run_fits([
            (runs[name][which], dict(RESUME_CONFIGS[name], checkpoint_every=20,
                                     train_steps=train_steps))
            for name, which, train_steps in jobs])
        for (name, which, _), (code, out) in zip(jobs, results):
            assert code == 0, f"{name}: exit {code}\n{helpers.tail(out)}"
            if which == 1:
                outputs[name].append(out)

    run_all([("beta_b", 0, 60), ("factor", 0, 60), ("xla", 0, 60)])
    helpers.copy_checkpoint(*runs["beta_b"], 20)
    helpers.copy_checkpoint(*runs["factor"], 40)
    helpers.copy_checkpoint(*runs["xla"], 40)
    run_all([("beta_b", 1, 40), ("factor", 1, 60), ("xla", 1, 60)])
    run_all([("beta_b", 1, 60)])
    return runs, outputs


def _check_resumed_exactly(a_dir, b_dir, outputs, resumed_at):
    """B's runs (``outputs``) resumed at each step of ``resumed_at`` and ended at 60
    with the state and logged losses of A, the uninterrupted run."""
    targets = resumed_at[1:] + [60]
    for out, start, target in zip(outputs, resumed_at, targets, strict=True):
        assert f"steps {start} -> {target};" in out, helpers.tail(out)
        assert f"resumed from {b_dir}/ckpt-{start}" in out, helpers.tail(out)
    a, b = restore_model(str(a_dir)), restore_model(str(b_dir))
    assert int(a.optimizer.iterations.numpy()) == 60
    assert int(b.optimizer.iterations.numpy()) == 60
    helpers.assert_states_close(helpers.model_state(a), helpers.model_state(b))
    helpers.assert_states_close(helpers.optimizer_state(a.optimizer),
                                helpers.optimizer_state(b.optimizer))
    # The logged losses of the resumed segments equal the uninterrupted run's.
    a_loss = helpers.scalars(os.path.join(a_dir, "train"), "loss")
    b_loss = helpers.scalars(os.path.join(b_dir, "train"), "loss")
    assert sorted(b_loss) == list(range(resumed_at[0] + 10, 61, 10))
    np.testing.assert_allclose([b_loss[s] for s in b_loss], [a_loss[s] for s in b_loss],
                               rtol=1e-5)
    with open(os.path.join(b_dir, "train_summary.json")) as f:
        assert json.load(f)["step"] == 60
    return a, b


def test_resume_continues_exactly_beta_b(resume_runs):
    runs, outputs = resume_runs
    a_dir, b_dir = runs["beta_b"]
    _check_resumed_exactly(a_dir, b_dir, outputs["beta_b"], resumed_at=[20, 40])
    # The capacity schedule continues after resuming: the term logged after update t
    # was computed at optimizer step t - 1, C = C_max (t - 1) / capacity_stop_steps.
    for run_dir, steps in ((a_dir, range(10, 61, 10)), (b_dir, range(30, 61, 10))):
        capacity = helpers.scalars(os.path.join(run_dir, "train"), "capacity")
        assert sorted(capacity) == list(steps)
        np.testing.assert_allclose([capacity[s] for s in steps],
                                   [25.0 * (s - 1) / 100 for s in steps], rtol=1e-6)


def test_resume_continues_exactly_factor(resume_runs):
    runs, outputs = resume_runs
    a_dir, b_dir = runs["factor"]
    a, b = _check_resumed_exactly(a_dir, b_dir, outputs["factor"], resumed_at=[40])
    for model in (a, b):
        assert model.objective.discriminator_optimizer is not None
        assert int(model.objective.discriminator_optimizer.iterations.numpy()) == 60
    helpers.assert_states_close(helpers.optimizer_state(a.objective.discriminator_optimizer),
                                helpers.optimizer_state(b.objective.discriminator_optimizer))
    a_disc = helpers.scalars(os.path.join(a_dir, "train"), "discriminator_loss")
    b_disc = helpers.scalars(os.path.join(b_dir, "train"), "discriminator_loss")
    np.testing.assert_allclose([b_disc[s] for s in (50, 60)], [a_disc[s] for s in (50, 60)],
                               rtol=1e-5)


def test_resume_continues_exactly_with_xla(resume_runs):
    runs, outputs = resume_runs
    assert all("compiled with XLA" in out for out in outputs["xla"])
    assert not any("compiled with XLA" in out for out in outputs["factor"])
    _check_resumed_exactly(*runs["xla"], outputs["xla"], resumed_at=[40])


def test_changed_settings_are_refused(resume_runs):
    runs, _ = resume_runs
    model_dir = runs["beta_b"][0]
    latest = tf.train.latest_checkpoint(str(model_dir))
    with open(os.path.join(model_dir, "config.json")) as f:
        config = f.read()
    flags = dict(RESUME_CONFIGS["beta_b"], checkpoint_every=20, train_steps=80)
    code, out = helpers.run_fit(model_dir, latent_dim=3, **flags)
    assert code == 2, helpers.tail(out)
    errors = [line for line in out.splitlines() if line.startswith("trainers.fit: error:")]
    assert len(errors) == 1, helpers.tail(out)
    assert "--latent_dim" in errors[0], errors[0]
    others = [f.name for f in dataclasses.fields(ModelConfig) if f.name != "latent_dim"]
    assert not [f for f in others if re.search(rf"--{f}\b", errors[0])], errors[0]
    assert "Traceback" not in out
    # Nothing in the directory changed.
    assert tf.train.latest_checkpoint(str(model_dir)) == latest
    with open(os.path.join(model_dir, "config.json")) as f:
        assert f.read() == config


def _checkpoint_step(path):
    return int(path.rsplit("-", 1)[1]) if path else None


def test_sigkill_then_resume(tmp_path):
    model_dir = str(tmp_path / "killed")
    flags = dict(regularizer="beta_h", prior="decoupled", checkpoint_every=100,
                 steps_per_epoch=100, summary_every=100)
    log_path = tmp_path / "killed.log"
    proc = helpers.start_fit(model_dir, log_path=log_path, train_steps=3000, **flags)
    try:
        deadline = time.monotonic() + 240
        while (_checkpoint_step(tf.train.latest_checkpoint(model_dir)) or 0) < 300:
            assert proc.poll() is None, f"exited early ({proc.returncode}):\n" + \
                helpers.tail(log_path.read_text())
            assert time.monotonic() < deadline, "no checkpoint >= 300 in time:\n" + \
                helpers.tail(log_path.read_text())
            time.sleep(0.2)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        helpers.kill(proc)
    assert proc.returncode == -signal.SIGKILL
    latest = tf.train.latest_checkpoint(model_dir)
    step = _checkpoint_step(latest)
    assert step >= 300 and step % 100 == 0
    assert int(restore_model(model_dir).optimizer.iterations.numpy()) == step

    target = step + 100
    code, out = helpers.run_fit(model_dir, train_steps=target, **flags)
    assert code == 0, helpers.tail(out)
    assert f"resumed from {latest}" in out
    assert f"steps {step} -> {target};" in out, helpers.tail(out)
    with open(os.path.join(model_dir, "train_summary.json")) as f:
        assert json.load(f)["step"] == target
    assert _checkpoint_step(tf.train.latest_checkpoint(model_dir)) == target
    assert int(restore_model(model_dir).optimizer.iterations.numpy()) == target


def _check_diverged_run(model_dir, code, out):
    assert code == 3, helpers.tail(out)
    message = [line for line in out.splitlines() if line.startswith("trainers.fit: error:")]
    assert len(message) == 1, helpers.tail(out)
    match = re.search(r"at step (\d+)", message[0])
    assert match, message[0]
    bad_step = int(match.group(1))
    latest = tf.train.latest_checkpoint(model_dir)
    if "No checkpoint before the divergence was verified" in message[0]:
        assert latest is None and not glob.glob(os.path.join(model_dir, "ckpt-*.index"))
        return
    assert latest is not None, "no checkpoint kept"
    # Its own loss (computed at the next step, checked every step here) was finite.
    assert _checkpoint_step(latest) + 1 < bad_step
    assert latest in message[0]
    for name in os.listdir(os.path.join(model_dir, "diverged")):
        assert int(re.match(r"ckpt-(\d+)\.", name).group(1)) + 1 >= bad_step, name
    model = restore_model(model_dir)
    bad = [v.path for v in model.weights if not np.all(np.isfinite(v.numpy()))]
    assert not bad, f"{latest} holds non-finite weights: {bad[:5]}"


def test_divergence_exits_3_and_keeps_a_finite_checkpoint(tmp_path):
    # Adam's first step moves every weight by about the learning rate: at 1e30 the
    # weights of step 11 are still finite, the loss computed on them (step 12) is not:
    # ckpt-11 is set aside, ckpt-10 kept.
    model_dir = str(tmp_path / "nan")
    flags = dict(regularizer="beta_h", prior="decoupled", checkpoint_every=1)
    code, out = helpers.run_fit(model_dir, learning_rate=1e-3, train_steps=10, **flags)
    assert code == 0, helpers.tail(out)
    code, out = helpers.run_fit(model_dir, learning_rate=1e30, train_steps=100, **flags)
    _check_diverged_run(model_dir, code, out)
    assert _checkpoint_step(tf.train.latest_checkpoint(model_dir)) == 10
    assert sorted(os.listdir(os.path.join(model_dir, "diverged"))) == [
        "ckpt-11.data-00000-of-00001", "ckpt-11.index"]


@pytest.mark.slow
def test_divergence_never_checkpoints_non_finite_weights(tmp_path):
    # At learning rate 0.3 the weights usually become non-finite one step before the
    # loss does (step 3 vs 4), so a checkpoint every step catches the bad update.
    model_dir = str(tmp_path / "nan")
    code, out = helpers.run_fit(model_dir, regularizer="beta_h", prior="decoupled",
                                learning_rate=0.3, checkpoint_every=1, train_steps=100)
    _check_diverged_run(model_dir, code, out)
