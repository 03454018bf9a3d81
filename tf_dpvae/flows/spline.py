"""Neural spline coupling: rational-quadratic splines (Durkan et al. 2019) in coupling
blocks, with TFP's ``tfb.RationalQuadraticSpline`` as the elementwise map.

Block k with mask b_k (the coupling masks of RealNVP): the conditioning coordinates
u_C pass unchanged and parameterise, through an MLP, a monotone rational-quadratic
spline per transformed coordinate on [−B, B] with K bins (identity outside):

    y_T = RQS(u_T; θ(u_C)),     y_C = u_C,     log|det ∂y/∂u| = Σ_T log RQS'(u_T).

θ holds, per transformed coordinate, K bin widths and K heights (a softmax scaled to
2B, each at least ``MIN_BIN`` of it) and K − 1 interior knot slopes (softplus, at least
``MIN_SLOPE``; the end slopes are 1, matching the identity outside). The MLP's output
layer starts at zero and the slope offset makes zero give slope 1, so every block
starts as the identity. Both directions are one pass (the inverse of each spline
segment is a quadratic's root); the splines are more flexible than affine couplings
for the same number of blocks.
"""

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp

from tf_dpvae.flows.base import DenseStack, Flow
from tf_dpvae.flows.realnvp import coupling_masks, merge, split, take
from tf_dpvae.settings import Setting

tfb = tfp.bijectors

MIN_BIN = 1e-3      # the smallest bin width or height, as a fraction of 2B / K
MIN_SLOPE = 1e-3


class SplineNet(DenseStack):
    """u_C [N, |C|] → the spline parameters of |T| coordinates: widths and heights
    [N, |T|, K], interior slopes [N, |T|, K − 1] (MLP with LeakyReLU(0.2))."""

    def __init__(self, num_inputs, num_outputs, bins, bound, hidden_units=64,
                 num_hidden_layers=2, **kwargs):
        self.num_outputs, self.bins, self.bound = int(num_outputs), int(bins), float(bound)
        super().__init__([int(num_inputs)] + [int(hidden_units)] * num_hidden_layers
                         + [self.num_outputs * (3 * self.bins - 1)], **kwargs)

    def call(self, u_c):
        h = tf.reshape(self.stack(u_c), [-1, self.num_outputs, 3 * self.bins - 1])
        k = self.bins
        raw_w, raw_h, raw_s = h[..., :k], h[..., k:2 * k], h[..., 2 * k:]
        span = 2 * self.bound
        widths = span * (MIN_BIN / k + (1 - MIN_BIN) * tf.nn.softmax(raw_w, axis=-1))
        heights = span * (MIN_BIN / k + (1 - MIN_BIN) * tf.nn.softmax(raw_h, axis=-1))
        # softplus(0 + offset) = 1 − MIN_SLOPE: zero outputs give slope 1.
        offset = float(np.log(np.expm1(1.0 - MIN_SLOPE)))
        slopes = MIN_SLOPE + tf.nn.softplus(raw_s + offset)
        return widths, heights, slopes


class NeuralSplineCoupling(Flow):
    """K rational-quadratic spline coupling blocks (masks as RealNVP's)."""

    name_ = "spline"
    SETTINGS = (
        Setting("flow_spline_bins", "spline: bins K of each rational-quadratic spline",
                kind=int, default=8, lower_bound=2),
        Setting("flow_spline_bound", "spline: the splines act on [-B, B] (identity "
                "outside)", kind=float, default=5.0, lower_bound=1e-3),
    )
    COST = ("g and g⁻¹ are one pass each over the K blocks; each block evaluates "
            "|T| splines (more work per block than an affine coupling).")

    def __init__(self, latent_dim, num_blocks=6, hidden_units=64, num_hidden_layers=2,
                 masks="alternate", bins=8, bound=5.0, dtype=tf.float32, name=None):
        super().__init__(latent_dim, dtype=dtype, name=name)
        self.masks = coupling_masks(self.latent_dim, num_blocks, masks)
        self._splits = [split(mask) for mask in self.masks]
        self.bound = float(bound)
        self.nets = [SplineNet(len(c), len(t), bins, bound, hidden_units,
                               num_hidden_layers, name=f"spline_{k}", dtype=dtype)
                     for k, (c, t, _) in enumerate(self._splits)]

    @classmethod
    def from_settings(cls, latent_dim, settings, dtype=tf.float32):
        return cls(latent_dim, num_blocks=settings["flow_blocks"],
                   hidden_units=settings["flow_hidden_units"],
                   num_hidden_layers=settings["flow_hidden_layers"],
                   masks=settings["flow_masks"], bins=settings["flow_spline_bins"],
                   bound=settings["flow_spline_bound"], dtype=dtype)

    @classmethod
    def validate(cls, latent_dim, settings):
        coupling_masks(latent_dim, settings["flow_blocks"], settings["flow_masks"])

    def _spline(self, k, u_c):
        widths, heights, slopes = self.nets[k](u_c)
        return tfb.RationalQuadraticSpline(widths, heights, slopes,
                                           range_min=-self.bound)

    def _block(self, k, u, inverse=False):
        conditioning, transformed, restore = self._splits[k]
        u_c, u_t = take(u, conditioning), take(u, transformed)
        spline = self._spline(k, u_c)
        if inverse:
            y_t, log_det = spline.inverse(u_t), None
        else:
            y_t = spline.forward(u_t)
            log_det = tf.reduce_sum(spline.forward_log_det_jacobian(u_t, event_ndims=0),
                                    axis=-1)
        return merge(u_c, y_t, conditioning, transformed, restore), log_det

    def g_and_log_det(self, z):
        log_det = 0.0
        for k in range(len(self.masks)):
            z, block_log_det = self._block(k, z)
            log_det += block_log_det
        return z, log_det

    def g_inverse(self, z0):
        for k in reversed(range(len(self.masks))):
            z0, _ = self._block(k, z0, inverse=True)
        return z0
