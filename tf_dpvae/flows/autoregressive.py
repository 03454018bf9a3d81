"""Masked autoregressive flows: MAF (Papamakarios et al. 2017) and IAF (Kingma et al.
2016), with MADE networks (Germain et al. 2015) written for Keras 3.

(TFP's ``tfb.AutoregressiveNetwork`` is a tf_keras layer, whose variables a Keras 3
model does not track; :class:`MADE` is ours: dense layers whose kernels are multiplied
by fixed binary masks.)

One autoregressive map P on u ∈ R^L, with (t, s) = MADE(u) so that t_i, s_i depend
on u_<i only:

    P(u)_i = u_i · exp(s_i(u_<i)) + t_i(u_<i),       log|det ∂P/∂u| = Σ_i s_i(u_<i).

P is one MADE pass. Its inverse is sequential: u_i = (y_i − t_i(u_<i)) · exp(−s_i(u_<i))
needs u_<i first, so it takes L passes (:func:`_solve`: after pass j the first j
coordinates are exact).

* ``maf``: each block of g is P. Log p(z), what every training step needs, is one
  pass per block; sampling (g⁻¹) is L passes per block.
* ``iaf``: each block of g is P⁻¹, so sampling is one pass per block and log p(z) is
  L passes per block (each step of training pays L MADE passes per block, on the KL's
  Monte Carlo samples, and backpropagates through them).

Between blocks the coordinates are reversed (block k works on reversed coordinates
when k is odd), so that every coordinate conditions every other across blocks. The
log-scale s is bounded with tanh, as in the coupling flows.
"""

import numpy as np
import tensorflow as tf

from tf_dpvae.flows.base import DenseStack, Flow


def made_masks(latent_dim, hidden_units, num_hidden_layers):
    """The binary masks of a MADE with L inputs and 2L outputs (t then s).

    Degrees: input i has degree i (1..L); hidden unit j has degree 1 + (j mod (L − 1))
    (every degree in 1..L−1 present when the layer has ≥ L − 1 units); output i (for
    t_i and s_i) has degree i. A hidden connection k → j exists when deg(j) ≥ deg(k),
    an output connection k → i when deg(i) > deg(k): output i sees inputs < i only.
    """
    degrees = [np.arange(1, latent_dim + 1)]
    for _ in range(num_hidden_layers):
        degrees.append(1 + np.arange(hidden_units) % max(1, latent_dim - 1))
    masks = [(degrees[l + 1][None, :] >= degrees[l][:, None]).astype(np.float32)
             for l in range(num_hidden_layers)]
    out = np.concatenate([degrees[0], degrees[0]])
    masks.append((out[None, :] > degrees[-1][:, None]).astype(np.float32))
    return masks


class MADE(DenseStack):
    """u [N, L] → (t, s) [N, L] each, t_i and s_i functions of u_<i only.

    Masked dense layers (LeakyReLU(0.2) between them); the last starts at zero, so the
    map P it parameterises starts as the identity.
    """

    def __init__(self, latent_dim, hidden_units=64, num_hidden_layers=2, **kwargs):
        self.latent_dim = int(latent_dim)
        super().__init__([self.latent_dim] + [int(hidden_units)] * num_hidden_layers
                         + [2 * self.latent_dim],
                         made_masks(self.latent_dim, int(hidden_units), num_hidden_layers),
                         **kwargs)

    def call(self, u):
        shift, log_scale = tf.split(self.stack(u), 2, axis=-1)
        return shift, tf.tanh(log_scale)


def _apply(made, u):
    """P(u) and log|det ∂P/∂u| (one MADE pass)."""
    shift, log_scale = made(u)
    return u * tf.exp(log_scale) + shift, tf.reduce_sum(log_scale, axis=-1)


def _solve(made, y):
    """P⁻¹(y) and log|det ∂P/∂u| at the solution (L MADE passes)."""
    u = tf.zeros_like(y)
    for _ in range(made.latent_dim):
        shift, log_scale = made(u)
        u = (y - shift) * tf.exp(-log_scale)
    return u, tf.reduce_sum(made(u)[1], axis=-1)


class _Autoregressive(Flow):
    """K blocks of P (``maf``) or P⁻¹ (``iaf``), coordinates reversed in odd blocks."""

    INVERTED = False   # iaf: the blocks of g are P⁻¹

    def __init__(self, latent_dim, num_blocks=6, hidden_units=64, num_hidden_layers=2,
                 dtype=tf.float32, name=None):
        super().__init__(latent_dim, dtype=dtype, name=name)
        self.num_blocks = int(num_blocks)
        self.nets = [MADE(self.latent_dim, hidden_units, num_hidden_layers,
                          name=f"made_{k}", dtype=dtype) for k in range(self.num_blocks)]

    @classmethod
    def from_settings(cls, latent_dim, settings, dtype=tf.float32):
        return cls(latent_dim, num_blocks=settings["flow_blocks"],
                   hidden_units=settings["flow_hidden_units"],
                   num_hidden_layers=settings["flow_hidden_layers"], dtype=dtype)

    def _oriented(self, k, u):
        return tf.reverse(u, axis=[-1]) if k % 2 else u

    def g_and_log_det(self, z):
        log_det = 0.0
        for k, made in enumerate(self.nets):
            u = self._oriented(k, z)
            if self.INVERTED:
                y, forward = _solve(made, u)
                block_log_det = -forward
            else:
                y, block_log_det = _apply(made, u)
            z = self._oriented(k, y)
            log_det += block_log_det
        return z, log_det

    def g_inverse(self, z0):
        for k in reversed(range(self.num_blocks)):
            y = self._oriented(k, z0)
            u = _apply(self.nets[k], y)[0] if self.INVERTED else _solve(self.nets[k], y)[0]
            z0 = self._oriented(k, u)
        return z0


class MAF(_Autoregressive):
    """Masked autoregressive flow: g's blocks are P, log p(z) is one pass per block."""

    name_ = "maf"
    COST = ("g (log p(z), every training step) is one MADE pass per block; g⁻¹ "
            "(sampling) is L passes per block.")


class IAF(_Autoregressive):
    """Inverse autoregressive flow: g's blocks are P⁻¹, sampling is one pass per block."""

    name_ = "iaf"
    INVERTED = True
    COST = ("g⁻¹ (sampling) is one MADE pass per block; g (log p(z), every training "
            "step, with its gradient) is L passes per block.")
