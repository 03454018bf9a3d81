"""Decoder likelihoods p_θ(x|z): Bernoulli and Gaussian (fixed or learned scale)."""

import math

import tensorflow as tf
import keras

from tf_dpvae import gaussian

LIKELIHOODS = ("bernoulli", "gaussian")


def _sum_event(values, event_rank):
    return tf.reduce_sum(values, axis=list(range(-event_rank, 0)))


class BernoulliLikelihood(keras.layers.Layer):
    """p(x|z) = Π_d Bern(x_d; sigmoid(ℓ_d)), ℓ the decoder's logits.

    ``log p = Σ_d x_d log σ(ℓ_d) + (1 − x_d) log(1 − σ(ℓ_d))``, also used for
    grey-level x ∈ [0, 1] (the usual cross-entropy reconstruction).
    """

    def __init__(self, event_rank, **kwargs):
        super().__init__(**kwargs)
        self.event_rank = event_rank

    def log_prob(self, x, decoder_output):
        return -_sum_event(tf.nn.sigmoid_cross_entropy_with_logits(
            labels=x, logits=decoder_output), self.event_rank)

    def mean(self, decoder_output):
        return tf.sigmoid(decoder_output)


class GaussianLikelihood(keras.layers.Layer):
    """p(x|z) = Π_d N(x_d; m_d, s²) with one scale s, fixed or learned.

    ``m`` is the decoder output, through a sigmoid for images in [0, 1]. A learned
    scale is one trainable log-variance shared by all dimensions.
    """

    def __init__(self, event_rank, scale=1.0, learn_scale=False, sigmoid_mean=False,
                 **kwargs):
        super().__init__(**kwargs)
        self.event_rank = event_rank
        self.sigmoid_mean = sigmoid_mean
        self.learn_scale = learn_scale
        self.log_var = self.add_weight(
            shape=(), initializer=keras.initializers.Constant(2.0 * math.log(scale)),
            trainable=learn_scale, name="log_var")

    def log_prob(self, x, decoder_output):
        return _sum_event(gaussian.log_normal_diag(
            x, self.mean(decoder_output), self.log_var), self.event_rank)

    def mean(self, decoder_output):
        return tf.sigmoid(decoder_output) if self.sigmoid_mean else decoder_output


def make_likelihood(kind, event_rank, *, scale=1.0, learn_scale=False, images=True):
    if kind == "bernoulli":
        return BernoulliLikelihood(event_rank, name="likelihood")
    if kind == "gaussian":
        return GaussianLikelihood(event_rank, scale=scale, learn_scale=learn_scale,
                                  sigmoid_mean=images, name="likelihood")
    raise ValueError(f"--likelihood={kind!r}: expected one of {LIKELIHOODS}")
