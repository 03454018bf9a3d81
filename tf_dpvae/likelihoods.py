"""Decoder likelihoods p_θ(x|z): Bernoulli, Gaussian (fixed or learned scale) and the
official code's squared error.

Every likelihood splits −log p(x|z) = ``reconstruction_loss(x, out)`` + ``normalizer``:
the loss term training minimises and a constant that does not depend on the model's
output (0 except for ``mse``). The NLL and the ELBO use the whole density
(``log_prob``); the reported ``reconstruction`` term is ``reconstruction_loss``.
"""

import math

import tensorflow as tf
import keras

from tf_dpvae import gaussian

LIKELIHOODS = ("bernoulli", "gaussian", "mse")


def _sum_event(values, event_rank):
    return tf.reduce_sum(values, axis=list(range(-event_rank, 0)))


class _Likelihood(keras.layers.Layer):
    """−log p(x|z) = ``reconstruction_loss`` + ``normalizer``; by default the whole
    −log p is the loss term and the normalizer is 0."""

    normalizer = 0.0

    def reconstruction_loss(self, x, decoder_output):
        return -self.log_prob(x, decoder_output)


class BernoulliLikelihood(_Likelihood):
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


class GaussianLikelihood(_Likelihood):
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


class SquaredErrorLikelihood(GaussianLikelihood):
    """The official dpVAE code's reconstruction, ``mse_weight · Σ_d (x̂_d − x_d)²``.

    x̂ is the decoder's *linear* output (the official decoders end in a transposed
    convolution without activation; their sigmoid is only applied for display). It is
    the Gaussian N(x; x̂, σ² I) with σ² = 1 / (2 · mse_weight) up to a constant:

        −log p(x|z) = w · Σ_d (x̂_d − x_d)²  +  D/2 · log(π / w),       w = mse_weight,

    the first part being ``reconstruction_loss`` (exactly the official term) and the
    second ``normalizer`` (D = number of data dimensions), so ``log_prob`` stays a
    proper density for the NLL and the ELBO. ``mean`` (what generation and the
    figures show) clips x̂ to the data range [0, 1] for images.
    """

    def __init__(self, event_rank, event_size, mse_weight=1.0, clip_mean=False, **kwargs):
        super().__init__(event_rank, scale=math.sqrt(0.5 / mse_weight), learn_scale=False,
                         sigmoid_mean=False, **kwargs)
        self.mse_weight = float(mse_weight)
        self.clip_mean = clip_mean
        self.normalizer = 0.5 * event_size * math.log(math.pi / self.mse_weight)

    def reconstruction_loss(self, x, decoder_output):
        return self.mse_weight * _sum_event(tf.square(decoder_output - x), self.event_rank)

    def log_prob(self, x, decoder_output):
        return -(self.reconstruction_loss(x, decoder_output) + self.normalizer)

    def mean(self, decoder_output):
        if self.clip_mean:
            return tf.clip_by_value(decoder_output, 0.0, 1.0)
        return decoder_output


def make_likelihood(kind, input_shape, *, scale=1.0, learn_scale=False, images=True,
                    mse_weight=1.0):
    event_rank = len(input_shape)
    if kind == "bernoulli":
        return BernoulliLikelihood(event_rank, name="likelihood")
    if kind == "gaussian":
        return GaussianLikelihood(event_rank, scale=scale, learn_scale=learn_scale,
                                  sigmoid_mean=images, name="likelihood")
    if kind == "mse":
        return SquaredErrorLikelihood(event_rank, math.prod(input_shape),
                                      mse_weight=mse_weight, clip_mean=images,
                                      name="likelihood")
    raise ValueError(f"--likelihood={kind!r}: expected one of {LIKELIHOODS}")
