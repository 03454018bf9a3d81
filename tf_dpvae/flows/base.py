"""What every flow of the decoupled prior is: a TFP bijector with Keras 3 networks.

A flow is the bijection g between the representation space (z, where the encoder
and the regularizer live) and the generation space (z0 ~ N(0, I)):

    log p(z) = log N(g(z); 0, I) + log|det ∂g/∂z|          (paper Eq. 2)

Training needs g(z) and its log-determinant at encoder samples (the KL term), every
step; sampling needs g⁻¹(z0). A flow computes both in rows [N, L]:

* :meth:`Flow.g_and_log_det`: (g(z), log|det ∂g/∂z|) in one pass over its networks;
* :meth:`Flow.g_inverse`: g⁻¹(z0).

As a TFP bijector its *forward* is g⁻¹ (generation → representation) and its inverse
is g, the convention of ``tfd.TransformedDistribution``: with a standard normal base,
``tfd.TransformedDistribution(tfd.MultivariateNormalDiag(tf.zeros(L)), flow)`` is the
decoupled prior, its ``log_prob(z)`` the equation above. The bijector methods accept
any batch shape [..., L].

Its Keras networks (:attr:`Flow.networks`) are created by the flow and tracked, and
trained, by whatever Keras layer holds them (``DecoupledPrior`` tracks them as
``nets``). Each flow declares ``name_`` (its ``--flow`` value), ``SETTINGS`` (its own
ModelConfig fields and flags beyond the shared ``flow_blocks``,
``flow_hidden_units``, ``flow_hidden_layers``), ``from_settings`` and ``COST`` (a
sentence: which direction is one pass, which is sequential).
"""

import keras
import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

tfb = tfp.bijectors


class Flow(tfb.Bijector):
    """Base of the flows: the TFP bijector g⁻¹ over rows; subclasses implement
    :meth:`g_and_log_det` and :meth:`g_inverse` on [N, L] and create their
    :attr:`networks` in ``__init__``."""

    name_ = None
    SETTINGS = ()
    COST = ""

    def __init__(self, latent_dim, dtype=tf.float32, name=None):
        if int(latent_dim) < 2:
            raise ValueError(
                f"--latent_dim={latent_dim}: the decoupled prior's flows need at least 2 "
                "latent dimensions (use --prior=normal for a 1-D latent)")
        self.latent_dim = int(latent_dim)
        super().__init__(forward_min_event_ndims=1, validate_args=False, dtype=dtype,
                         parameters={"latent_dim": self.latent_dim},
                         name=name or self.name_)

    @classmethod
    def from_settings(cls, latent_dim, settings, dtype=tf.float32):
        """The flow of a ``settings`` mapping (ModelConfig field names: the shared
        ``flow_*`` ones and this flow's :attr:`SETTINGS`)."""
        raise NotImplementedError

    @classmethod
    def validate(cls, latent_dim, settings):
        """ValueError naming the flag when the settings cannot build this flow."""
        if int(latent_dim) < 2:
            raise ValueError(
                f"--latent_dim={latent_dim}: the decoupled prior's flows need at least 2 "
                "latent dimensions (use --prior=normal for a 1-D latent)")

    @property
    def networks(self):
        """The flow's Keras layers (their variables are the flow's parameters):
        ``self.nets`` by default."""
        return list(self.nets)

    def build(self):
        """Create every variable (the networks build on known input sizes)."""
        for network in self.networks:
            if not network.built:
                network.build()

    # -------------------------------------------------------------- the math, rows
    def g_and_log_det(self, z):
        """(g(z), log|det ∂g/∂z|) for z [N, L]."""
        raise NotImplementedError

    def g_inverse(self, z0):
        """g⁻¹(z0) for z0 [N, L]."""
        raise NotImplementedError

    # -------------------------------------------------------------- any batch shape
    def generation_and_log_det(self, z):
        """(g(z), log|det ∂g/∂z|) for z [..., L]: shapes [..., L] and [...]."""
        z = tf.cast(z, self.dtype)
        rows, log_det = self.g_and_log_det(tf.reshape(z, [-1, self.latent_dim]))
        return (tf.reshape(rows, tf.shape(z)),
                tf.reshape(log_det, tf.shape(z)[:-1]))

    def representation(self, z0):
        """g⁻¹(z0) for z0 [..., L]."""
        z0 = tf.cast(z0, self.dtype)
        rows = self.g_inverse(tf.reshape(z0, [-1, self.latent_dim]))
        return tf.reshape(rows, tf.shape(z0))

    # -------------------------------------------------------------- TFP bijector
    def _forward(self, z0):
        return self.representation(z0)

    def _inverse(self, z):
        return self.generation_and_log_det(z)[0]

    def _inverse_log_det_jacobian(self, z):
        return self.generation_and_log_det(z)[1]

    def _forward_log_det_jacobian(self, z0):
        return -self.generation_and_log_det(self.representation(z0))[1]

    def _is_increasing(self):
        return False


def dense_init(d_in, d_out, last):
    """Glorot uniform for hidden kernels, zeros for the output layer (each block of a
    flow starts as the identity, the prior as N(0, I))."""
    if last:
        return "zeros"
    limit = float(np.sqrt(6.0 / (d_in + d_out)))
    return keras.initializers.RandomUniform(-limit, limit)


class DenseStack(keras.layers.Layer):
    """dims[0] → … → dims[-1] dense layers with LeakyReLU(0.2) between them, each
    kernel optionally multiplied by a fixed binary mask (MADE); the output layer starts
    at zero (:func:`dense_init`)."""

    def __init__(self, dims, masks=None, **kwargs):
        super().__init__(**kwargs)
        self.dims = [int(d) for d in dims]
        self.masks = masks

    def build(self, input_shape=None):
        self.kernels, self.biases = [], []
        last = len(self.dims) - 2
        for l, (d_in, d_out) in enumerate(zip(self.dims[:-1], self.dims[1:])):
            self.kernels.append(self.add_weight(
                name=f"kernel_{l}", shape=(d_in, d_out),
                initializer=dense_init(d_in, d_out, l == last)))
            self.biases.append(self.add_weight(name=f"bias_{l}", shape=(d_out,),
                                               initializer="zeros"))
        super().build(input_shape)

    def stack(self, h):
        """The dense stack on h [N, dims[0]] → [N, dims[-1]]."""
        for l, (kernel, bias) in enumerate(zip(self.kernels, self.biases)):
            if self.masks is not None:
                kernel = kernel * self.masks[l]
            h = tf.matmul(h, kernel) + bias
            if l < len(self.kernels) - 1:
                h = tf.nn.leaky_relu(h, 0.2)
        return h
