"""--precision=mixed_bfloat16: the networks compute in bfloat16, everything the
objective and the metrics see is float32; and trainers.precision_check's comparison."""

import numpy as np
import pytest
import tensorflow as tf
import keras

from tf_dpvae import precision
from tf_dpvae.config import ModelConfig
from tf_dpvae.training import build_model
from trainers import precision_check


@pytest.mark.parametrize("prior, regularizer", [("decoupled", "beta_h"),
                                                ("normal", "factor")])
def test_mixed_bfloat16_model_dtypes(prior, regularizer):
    config = ModelConfig(dataset="mnist", input_shape=(28, 28, 1), architecture="conv28",
                         likelihood="bernoulli", prior=prior, regularizer=regularizer,
                         precision="mixed_bfloat16")
    model = build_model(config)
    assert keras.mixed_precision.global_policy().name == "float32", "policy leaked"
    hidden = model.encoder.layers[:-1] + model.decoder.layers[:-1]
    assert {layer.compute_dtype for layer in hidden} == {"bfloat16"}
    assert model.encoder.layers[-1].compute_dtype == "float32"
    assert model.decoder.layers[-1].compute_dtype == "float32"
    assert model.prior.compute_dtype == "float32"
    assert all(v.dtype == "float32" for v in model.weights)
    x = tf.constant((np.random.default_rng(0).random((8, 28, 28, 1)) < 0.5).astype("float32"))
    mean, log_var = model.encode(x)
    assert mean.dtype == log_var.dtype == tf.float32
    assert model.decode(mean).dtype == tf.float32
    assert model.prior.log_prob(mean).dtype == tf.float32
    terms, _ = model.compute_terms(x, training=True)
    assert {t.dtype for t in terms.values()} == {tf.float32}
    logs = tf.function(model.train_step)(x)
    assert all(np.isfinite(float(v)) for v in logs.values())
    if regularizer == "factor":
        assert model.discriminator.layers[0].compute_dtype == "bfloat16"
        assert model.discriminator(mean).dtype == tf.float32


def test_float32_is_the_default_and_bad_names_are_refused():
    assert ModelConfig().precision == "float32"
    with pytest.raises(ValueError, match="--precision='half'"):
        precision.check("half")


def fake_values():
    values = {}
    for name, shift in (("float32", 0.0), ("mixed_bfloat16", 0.5)):
        for prior in ("normal", "decoupled"):
            values[(name, prior)] = {
                "neg_elbo": [100.0 + shift, 101.0 + shift, 102.0 + shift],
                "fid": [10.0, 12.0, 14.0] if name == "float32" else [20.0, 21.0, 22.0],
                "skl": [1.0, 1.1, 1.2], "nll_nats": [90.0, 91.0, 92.0]}
    return values


def test_precision_check_compares_against_the_seed_spread():
    rows = precision_check.compare(fake_values())
    by = {(r["prior"], r["metric"]): r for r in rows}
    elbo = by[("normal", "neg_elbo")]
    assert elbo["float32_mean"] == 101.0 and elbo["float32_std"] == 1.0
    assert elbo["difference"] == 0.5 and elbo["within"] and elbo["same"]
    fid = by[("decoupled", "fid")]
    assert fid["difference"] == 9.0 and not fid["within"] and not fid["same"]
    import scipy.stats
    assert fid["welch_p"] == pytest.approx(scipy.stats.ttest_ind(
        [20.0, 21.0, 22.0], [10.0, 12.0, 14.0], equal_var=False).pvalue)
    # Holm over the 8 comparisons: the smallest p times 8, never below the raw p.
    assert fid["welch_p_holm"] >= fid["welch_p"]
    assert precision_check.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    text, verdict = precision_check.report(rows, "fashion_mnist", "beta_h", 3, "cpu")
    assert not verdict
    assert "normal FID" in text and "decoupled FID" in text
    assert "| normal | validation −ELBO (nats) | 101 ± 1 | 101.5 ± 1 | +0.5 | yes | 0.57 |" \
        in text


def test_dataset_default_precisions():
    """Mixed bfloat16 by default only where trainers.precision_check validated it."""
    from tf_dpvae.config import dataset_defaults
    defaults = {name: dataset_defaults(name)["precision"]
                for name in ("moons", "mnist", "fashion_mnist", "svhn_cropped", "celeb_a")}
    assert defaults == {"moons": "float32", "mnist": "mixed_bfloat16",
                        "fashion_mnist": "mixed_bfloat16", "svhn_cropped": "float32",
                        "celeb_a": "float32"}
