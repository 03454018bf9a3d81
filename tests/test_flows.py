"""Every flow of the decoupled prior (tf_dpvae/flows/) against independent answers:
the autodiff Jacobian, the inverse, a density that integrates to 1, TFP's
TransformedDistribution, the same samples in another process, and the export."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import helpers
from flow_reference import autodiff_log_det  # noqa: E402
from tf_dpvae import flows, priors, training
from tf_dpvae.config import DATASET_DEFAULTS, ModelConfig

FLOWS = list(flows.FLOWS)


def random_prior(flow, latent_dim, seed=0, scale=0.2, **kwargs):
    """A prior whose flow is not the identity: every variable drawn N(0, scale²)."""
    prior = priors.DecoupledPrior.create(latent_dim, flow=flow, **kwargs)
    rng = np.random.default_rng(seed)
    for v in prior.trainable_variables:
        v.assign(rng.normal(0.0, scale, v.shape).astype(v.dtype))
    return prior


@pytest.mark.parametrize("flow", FLOWS)
@pytest.mark.parametrize("latent_dim", [2, 5])
def test_log_det_is_the_autodiff_jacobian(flow, latent_dim, float64):
    prior = random_prior(flow, latent_dim, seed=latent_dim, num_blocks=3)
    z_np = np.random.default_rng(1).normal(0, 1.5, (12, latent_dim))
    z = tf.constant(z_np)
    z0, log_det = prior.forward_and_log_det(z)
    _, expected = autodiff_log_det(prior, z_np)
    np.testing.assert_allclose(log_det.numpy(), expected, rtol=1e-9, atol=1e-9)
    assert not np.allclose(z0.numpy(), z.numpy())          # not the identity
    assert np.abs(expected).max() > 1e-3


@pytest.mark.parametrize("flow", FLOWS)
def test_g_and_its_inverse_undo_each_other(flow, float64):
    prior = random_prior(flow, 4, seed=2, num_blocks=3)
    rng = np.random.default_rng(3)
    z0 = tf.constant(rng.normal(size=(20, 4)))
    np.testing.assert_allclose(prior.to_generation(prior.to_representation(z0)).numpy(),
                               z0.numpy(), atol=1e-9)
    z = tf.constant(rng.normal(0, 2.0, size=(20, 4)))
    np.testing.assert_allclose(prior.to_representation(prior.to_generation(z)).numpy(),
                               z.numpy(), atol=1e-9)


@pytest.mark.parametrize("flow", FLOWS)
def test_the_density_integrates_to_one(flow):
    prior = random_prior(flow, 2, seed=4, scale=0.15, num_blocks=3)
    h = 0.04
    axis = np.arange(-12, 12 + h / 2, h)
    grid = np.stack(np.meshgrid(axis, axis), -1).reshape(-1, 2).astype(np.float32)
    log_p = np.concatenate([prior.log_prob(tf.constant(chunk)).numpy()
                            for chunk in np.array_split(grid, 16)])
    mass = np.exp(log_p.astype(np.float64)).sum() * h * h
    # The box may miss some of the tails: its mass must be what samples (drawn
    # through g⁻¹, not log p) put in it, and close to 1.
    samples = prior.sample(200_000, seed=1).numpy()
    inside = np.mean(np.all(np.abs(samples) <= 12 + h / 2, axis=-1))
    assert abs(mass - inside) < 3e-3, (mass, inside)
    assert mass > 0.9
    # ... and it is not the standard normal (the flow does something).
    standard = -0.5 * (grid ** 2).sum(-1) - np.log(2 * np.pi)
    assert np.abs(log_p - standard).max() > 0.05


@pytest.mark.parametrize("flow", FLOWS)
def test_the_flow_is_the_tfp_bijector_of_the_prior(flow, float64):
    prior = random_prior(flow, 3, seed=5, num_blocks=2)
    z = tf.constant(np.random.default_rng(6).normal(size=(7, 3)))
    distribution = prior.as_distribution()
    np.testing.assert_allclose(distribution.log_prob(z).numpy(), prior.log_prob(z).numpy(),
                               atol=1e-9)
    z0 = tf.constant(np.random.default_rng(7).normal(size=(7, 3)))
    np.testing.assert_allclose(prior.flow.forward(z0).numpy(),
                               prior.to_representation(z0).numpy(), atol=1e-12)
    # forward log-det of g⁻¹ = −(log-det of g) at g⁻¹(z0)
    np.testing.assert_allclose(
        prior.flow.forward_log_det_jacobian(z0, event_ndims=1).numpy(),
        -prior.forward_and_log_det(prior.to_representation(z0))[1].numpy(), atol=1e-9)
    # batch shapes [..., L]
    z3 = tf.reshape(tf.concat([z, z], 0), [2, 7, 3])
    assert prior.log_prob(z3).shape == (2, 7)


@pytest.mark.parametrize("flow", ["maf", "iaf"])
def test_autoregressive_outputs_depend_on_earlier_inputs_only(flow, float64):
    from tf_dpvae.flows.autoregressive import MADE
    made = MADE(5, hidden_units=16, num_hidden_layers=2)
    made.build()
    rng = np.random.default_rng(8)
    for v in made.trainable_variables:
        v.assign(rng.normal(size=v.shape))
    u = tf.constant(rng.normal(size=(3, 5)))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(u)
        shift, log_scale = made(u)
    for out in (shift, log_scale):
        jac = tape.batch_jacobian(out, u).numpy()          # [N, i, j] = ∂out_i/∂u_j
        assert np.all(np.abs(np.triu(jac[0])) == 0)        # j ≥ i: no dependence
        assert np.abs(np.tril(jac[0], -1)).max() > 0


def test_every_flow_is_a_flag_and_a_config_field():
    config = ModelConfig(**dict(DATASET_DEFAULTS["moons"], flow="spline"))
    prior = priors.from_config(config)
    assert prior.flow.name_ == "spline" and prior.flow.bound == config.flow_spline_bound
    from trainers import common
    model_config, _ = common.configs_from_args(
        ["--dataset=moons", "--flow=maf", "--model_dir=/tmp/unused"])
    assert model_config.flow == "maf"
    with pytest.raises(Exception, match="flow"):
        common.configs_from_args(["--dataset=moons", "--flow=glow", "--model_dir=/x"])
    assert ModelConfig.from_dict({"dataset": "moons"}).flow == "realnvp"  # old configs


_SAMPLES_SCRIPT = """
import json, sys
import keras
sys.path.insert(0, sys.argv[1])
from tf_dpvae import priors
out = {}
for flow in sys.argv[2].split(","):
    keras.utils.set_random_seed(0)
    prior = priors.DecoupledPrior.create(3, flow=flow)
    for v in prior.trainable_variables:     # deterministic, non-trivial weights
        v.assign(keras.random.normal(v.shape, stddev=0.2, seed=len(v.path)))
    out[flow] = prior.sample(8, seed=5).numpy().tolist()
print(json.dumps(out))
"""


def test_a_seed_gives_the_same_samples_in_another_process():
    result = subprocess.run([sys.executable, "-c", _SAMPLES_SCRIPT, helpers.REPO,
                             ",".join(FLOWS)], capture_output=True, text=True,
                            env=helpers.env(), timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    theirs = json.loads(result.stdout.strip().splitlines()[-1])
    import keras
    for flow in FLOWS:
        keras.utils.set_random_seed(0)
        prior = priors.DecoupledPrior.create(3, flow=flow)
        for v in prior.trainable_variables:
            v.assign(keras.random.normal(v.shape, stddev=0.2, seed=len(v.path)))
        ours = prior.sample(8, seed=5).numpy()
        np.testing.assert_array_equal(ours, np.array(theirs[flow], np.float32))
        assert np.abs(ours).max() > 0


@pytest.mark.parametrize("flow", FLOWS)
def test_each_flow_trains_exports_and_reloads(flow, tmp_path):
    from export import saved_model
    model_dir = tmp_path / flow
    config = ModelConfig(**dict(DATASET_DEFAULTS["moons"], regularizer="beta_h",
                                prior="decoupled", flow=flow, flow_blocks=2,
                                learning_rate=1e-2, batch_size=50))
    before = training.build_model(config)
    training.train(config, training.TrainConfig(
        model_dir=str(model_dir), train_steps=5, checkpoint_every=5, summary_every=5,
        sample_every=100_000, steps_per_epoch=5, validation_steps=1, verbose=0))
    model = training.restore_model(str(model_dir))
    assert model.config.flow == flow
    with open(os.path.join(model_dir, "config.json")) as f:
        assert json.load(f)["flow"] == flow
    moved = [not np.allclose(a.numpy(), b.numpy())
             for a, b in zip(before.prior.trainable_variables,
                             model.prior.trainable_variables)]
    assert any(moved), "the flow's variables were not trained"
    path = saved_model.export(str(model_dir), str(tmp_path / "export"), check=False)
    loaded = tf.saved_model.load(path).signatures
    z = tf.constant(np.random.default_rng(9).normal(size=(6, 2)).astype(np.float32))
    np.testing.assert_allclose(loaded["log_prior"](z=z)["log_prob"].numpy(),
                               model.prior.log_prob(z).numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(loaded["to_representation"](z0=z)["z"].numpy(),
                               model.prior.to_representation(z).numpy(), atol=1e-5)
    out = loaded["sample"](num_samples=tf.constant(4), seed=tf.constant(3, tf.int64))
    x, zs = model.generate(4, seed=3, return_latents=True)
    np.testing.assert_allclose(out["z"].numpy(), zs.numpy(), atol=1e-5)
    np.testing.assert_allclose(out["x"].numpy(), x.numpy(), atol=1e-5)
