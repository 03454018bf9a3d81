"""examples/: the Keras VAE example, and the same made a dpVAE with the decoupled
prior in ≤ 10 changed lines; the prior is trained and saved with the model (.keras)."""

import ast
import difflib
import importlib.util
import os

import numpy as np
import pytest

import keras

import helpers

EXAMPLES = os.path.join(helpers.REPO, "examples")


def _load(name):
    spec = importlib.util.spec_from_file_location(name, os.path.join(EXAMPLES, f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _code_lines(name):
    """The file's lines without its module docstring."""
    with open(os.path.join(EXAMPLES, f"{name}.py")) as f:
        text = f.read()
    doc = ast.parse(text).body[0]
    lines = text.splitlines()
    return lines[doc.end_lineno:]


def test_the_dpvae_example_changes_at_most_ten_lines():
    diff = list(difflib.unified_diff(_code_lines("keras_vae"), _code_lines("keras_dpvae"),
                                     lineterm="", n=0))
    added = [l for l in diff if l.startswith("+") and not l.startswith("+++")]
    removed = [l for l in diff if l.startswith("-") and not l.startswith("---")]
    assert 0 < len(added) <= 10 and len(removed) <= 10, "\n".join(diff)
    assert all(l.endswith("# dpVAE") for l in added), added


@pytest.fixture(scope="module")
def digits():
    return _load("keras_vae").load_digits()[:512]


def test_the_keras_example_trains(digits):
    vae = _load("keras_vae").build_vae(2)
    vae.compile(optimizer=keras.optimizers.Adam())
    history = vae.fit(digits, epochs=1, batch_size=128, steps_per_epoch=2, verbose=0)
    assert np.isfinite(history.history["total_loss"][-1])


@pytest.mark.parametrize("flow", ["realnvp", "maf"])
def test_the_dpvae_example_trains_and_saves_its_prior(flow, digits, tmp_path):
    example = _load("keras_dpvae")
    keras.utils.set_random_seed(0)
    vae = example.VAE(example.build_encoder(2), example.build_decoder(2), flow=flow)
    vae.compile(optimizer=keras.optimizers.Adam(1e-2))
    prior_ids = {id(v) for v in vae.prior.trainable_variables}
    assert prior_ids and prior_ids <= {id(v) for v in vae.trainable_weights}
    before = [v.numpy().copy() for v in vae.prior.trainable_variables]
    history = vae.fit(digits, epochs=1, batch_size=128, steps_per_epoch=3, verbose=0)
    assert np.isfinite(history.history["kl_loss"][-1])
    after = [v.numpy() for v in vae.prior.trainable_variables]
    assert any(not np.allclose(a, b) for a, b in zip(before, after)), "prior not trained"

    path = str(tmp_path / "dpvae.keras")
    vae.save(path)
    loaded = keras.saving.load_model(path)
    assert loaded.prior.flow.name_ == flow
    for a, b in zip(vae.prior.trainable_variables, loaded.prior.trainable_variables):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_allclose(loaded.generate(5, seed=3).numpy(),
                               vae.generate(5, seed=3).numpy(), atol=1e-6)
    z = np.random.default_rng(0).normal(size=(4, 2)).astype("float32")
    np.testing.assert_allclose(loaded.prior.log_prob(z).numpy(),
                               vae.prior.log_prob(z).numpy(), atol=1e-6)
