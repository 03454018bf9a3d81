"""Checkpoints of the per-layer flow layout (tf_dpvae ef95237 and before) still load,
and training resumes from them."""

import json
import os
import shutil

import numpy as np
import tensorflow as tf

from tf_dpvae import checkpoints, training
from tf_dpvae.config import ModelConfig

LEGACY = os.path.join(os.path.dirname(__file__), "data", "legacy_flow_ef95237")


def expected():
    with open(os.path.join(LEGACY, "expected.json")) as f:
        return json.load(f)


def test_legacy_checkpoint_restores_exactly():
    """Values the old code computed from this checkpoint (expected.json): the flow's
    density and inverse, the encoder, the step and the flow's Adam moments."""
    e = expected()
    model = training.restore_model(LEGACY)
    z = np.array(e["z"], np.float32)
    np.testing.assert_allclose(model.prior.log_prob(z).numpy(), e["log_prob"], atol=1e-6)
    assert abs(e["log_prob"][0] - (-1.8378771 - 0.5 * (0.09 + 1.44))) > 1e-3, \
        "the flow is still the identity: the test would be vacuous"
    np.testing.assert_allclose(model.prior.to_representation(z).numpy(),
                               e["to_representation"], atol=1e-6)
    np.testing.assert_allclose(model.encoder(np.array(e["x"], np.float32)).numpy(),
                               e["encoded"], atol=1e-6)
    assert int(model.optimizer.iterations.numpy()) == e["iterations"]
    net = model.prior.nets[0]
    i = [id(v) for v in model.optimizer._trainable_variables].index(id(net.kernels[1]))
    moment = np.array(e["momentum_block0_shift_hidden1_kernel"])
    assert np.abs(moment).max() > 0
    np.testing.assert_allclose(model.optimizer._momentums[i].numpy()[0, 0], moment, atol=0)
    np.testing.assert_allclose(model.optimizer._velocities[i].numpy()[0, 0],
                               np.array(e["velocity_block0_shift_hidden1_kernel"]), atol=0)


def test_resume_from_legacy_checkpoint(tmp_path):
    model_dir = str(tmp_path / "run")
    shutil.copytree(LEGACY, model_dir)
    config = ModelConfig.load(model_dir)
    summary = training.train(config, training.TrainConfig(
        model_dir=model_dir, train_steps=5, checkpoint_every=5, summary_every=5,
        sample_every=5, steps_per_epoch=5, verbose=0))
    assert summary["step"] == 5
    # The new checkpoint is in the current layout and restores as it is.
    reader = tf.train.load_checkpoint(model_dir)
    model = training.build_model(config)
    assert not checkpoints._is_per_layer_flow(checkpoints._optimizer_lists(reader), model)
    checkpoints.restore(training.make_checkpoint(model), model,
                        tf.train.latest_checkpoint(model_dir))
    assert int(model.optimizer.iterations.numpy()) == 5
