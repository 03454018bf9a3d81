"""RealNVP: affine coupling blocks (Dinh et al. 2017), the paper's flow (Sec. 4.2).

One block with binary mask b maps u to

    y = b ⊙ u + (1 − b) ⊙ (u ⊙ exp(s(b ⊙ u)) + t(b ⊙ u)),
    log|det ∂y/∂u| = Σ_l (1 − b_l) · s_l(b ⊙ u).

(The paper's Eq. 22 writes b_l where (1 − b_l) belongs.) :meth:`RealNVP._block` holds
this math, once: each block runs its s and t networks a single time and returns the
map together with its log-determinant (TFP's ``RealNVP`` in a ``Chain`` runs them
twice, for ``forward`` and for ``forward_log_det_jacobian``; the tests check both
against TFP's RealNVP and the autodiff Jacobian). Both directions are one pass.
"""

import numpy as np
import tensorflow as tf
import keras

from tf_dpvae.flows.base import Flow, dense_init
from tf_dpvae.settings import Setting

MASK_KINDS = ("alternate", "checkerboard")


def coupling_masks(latent_dim, num_blocks, kind="alternate"):
    """Binary masks b_k (1 = passed through unchanged, conditions the others).

    ``alternate``: first half of the coordinates, then the second half, and so on
    (for L = 2: [1, 0], [0, 1], ...), as in the paper's Fig. 9. ``checkerboard``: even
    coordinates, then odd ones. ``kind`` may also be a comma-separated list of 0/1
    strings, one per block (e.g. ``"10,01"``), cycled over the K blocks.

    Raises ValueError when a mask leaves one side empty (L < 2, or an explicit mask of
    all ones or all zeros) or does not have L entries.
    """
    if latent_dim < 2:
        raise ValueError(
            f"--latent_dim={latent_dim}: the coupling masks of the decoupled prior need "
            "at least 2 latent dimensions to split (use --prior=normal for a 1-D latent)")
    if kind == "alternate":
        first = np.arange(latent_dim) < latent_dim // 2
        base = [first, ~first]
    elif kind == "checkerboard":
        even = np.arange(latent_dim) % 2 == 0
        base = [even, ~even]
    else:
        base = []
        for text in str(kind).split(","):
            text = text.strip()
            if len(text) != latent_dim or set(text) - {"0", "1"}:
                raise ValueError(
                    f"--flow_masks: mask {text!r} expected {latent_dim} characters of 0/1, or one "
                    f"of {MASK_KINDS}")
            base.append(np.array([c == "1" for c in text]))
    masks = [base[k % len(base)].astype(np.float32) for k in range(num_blocks)]
    for mask in masks:
        if mask.sum() == 0 or mask.sum() == latent_dim:
            raise ValueError(
                f"--flow_masks: mask {mask.astype(int).tolist()} leaves nothing to transform or "
                "nothing to condition on")
    return masks


class CouplingNets(keras.layers.Layer):
    """The shift t and log-scale s MLPs of every coupling block of one shape.

    Each MLP is ``in → hidden → … → out`` with LeakyReLU(0.2) between layers; the
    log-scale ends in tanh (bounded, as in the official code), the shift optionally too
    (``bound_shift``). The output layers start at zero, so every block starts as the
    identity and the decoupled prior starts as N(0, I); hidden kernels start Glorot
    uniform (per MLP layer).

    Storage: the blocks that share (|C|, |T|) share one variable per layer and kind,
    ``kernel_l`` [G, 2, d_l, d_{l+1}] and ``bias_l`` [G, 2, 1, d_{l+1}] (G blocks,
    index 0 = shift, 1 = log-scale): the two MLPs of a block run as one batched matmul
    per layer, and the optimizer updates 2·(layers + 1) variables instead of
    4·G·(layers + 1). Each MLP is still its own function with its own weights.
    """

    def __init__(self, num_blocks, num_inputs, num_outputs, hidden_units=64,
                 num_hidden_layers=2, bound_shift=False, **kwargs):
        super().__init__(**kwargs)
        self.num_blocks = int(num_blocks)
        self.dims = [int(num_inputs)] + [int(hidden_units)] * num_hidden_layers + [
            int(num_outputs)]
        self.bound_shift = bound_shift

    def build(self, input_shape=None):
        self.kernels, self.biases = [], []
        last = len(self.dims) - 2
        for l, (d_in, d_out) in enumerate(zip(self.dims[:-1], self.dims[1:])):
            self.kernels.append(self.add_weight(
                name=f"kernel_{l}", shape=(self.num_blocks, 2, d_in, d_out),
                initializer=dense_init(d_in, d_out, l == last)))
            self.biases.append(self.add_weight(
                name=f"bias_{l}", shape=(self.num_blocks, 2, 1, d_out), initializer="zeros"))
        super().build(input_shape)

    def per_block(self):
        """[(kernels, biases)] per block: each a list over layers of [2, d, d'] and
        [2, 1, d'] tensors (one unstack per variable per call)."""
        kernels = [tf.unstack(tf.cast(k, self.compute_dtype)) for k in self.kernels]
        biases = [tf.unstack(tf.cast(b, self.compute_dtype)) for b in self.biases]
        return [([k[g] for k in kernels], [b[g] for b in biases])
                for g in range(self.num_blocks)]

    def apply(self, params, u_c):
        """(t(u_c), s(u_c)) of one block, ``params`` one entry of :meth:`per_block`."""
        kernels, biases = params
        h = u_c[None]                               # [1, N, |C|], both MLPs' input
        for l, (kernel, bias) in enumerate(zip(kernels, biases)):
            h = tf.matmul(h, kernel) + bias         # [2, N, d_out]
            if l < len(kernels) - 1:
                h = tf.nn.leaky_relu(h, 0.2)
        shift, log_scale = tf.unstack(h)
        if self.bound_shift:
            shift = tf.tanh(shift)
        return shift, tf.tanh(log_scale)


class RealNVP(Flow):
    """g = f_K ∘ … ∘ f_1, f_k the affine coupling block of mask b_k, applied in order
    1..K from the representation z to the generation z0.

    Args:
      latent_dim: L (≥ 2).
      num_blocks: K coupling blocks (paper: 6).
      hidden_units, num_hidden_layers: the s and t MLPs (paper: 64, 2).
      masks: ``"alternate"``, ``"checkerboard"`` or explicit 0/1 strings; see
        :func:`coupling_masks`.
      bound_shift: also pass t through tanh (the official code does).
    """

    name_ = "realnvp"
    SETTINGS = (
        Setting("flow_masks", f"realnvp, spline: coupling masks, one of {MASK_KINDS} or "
                "0/1 strings separated by commas, e.g. 10,01", kind=str,
                default="alternate"),
        Setting("flow_bound_shift", "realnvp: bound the coupling shift t with tanh (the "
                "official code does)", kind=bool, default=False),
    )
    COST = ("g and g⁻¹ are one pass each over the K blocks (half of the coordinates "
            "change per block).")

    def __init__(self, latent_dim, num_blocks=6, hidden_units=64, num_hidden_layers=2,
                 masks="alternate", bound_shift=False, dtype=tf.float32, name=None):
        super().__init__(latent_dim, dtype=dtype, name=name)
        self.masks = coupling_masks(self.latent_dim, num_blocks, masks)
        # Per block: the conditioning (b = 1) and transformed (b = 0) coordinates, and
        # the permutation that puts [conditioning, transformed] back in order.
        self._splits = []
        shapes = {}
        self._slot = []   # block k → (its CouplingNets, index within them)
        for mask in self.masks:
            self._splits.append(split(mask))
            conditioning, transformed, _ = self._splits[-1]
            members = shapes.setdefault((len(conditioning), len(transformed)), [])
            self._slot.append((list(shapes).index((len(conditioning), len(transformed))),
                               len(members)))
            members.append(len(self._splits) - 1)
        self.nets = [CouplingNets(len(members), n_c, n_t, hidden_units, num_hidden_layers,
                                  bound_shift, name=f"coupling_{g}", dtype=dtype)
                     for g, ((n_c, n_t), members) in enumerate(shapes.items())]

    @classmethod
    def from_settings(cls, latent_dim, settings, dtype=tf.float32):
        return cls(latent_dim, num_blocks=settings["flow_blocks"],
                   hidden_units=settings["flow_hidden_units"],
                   num_hidden_layers=settings["flow_hidden_layers"],
                   masks=settings["flow_masks"], bound_shift=settings["flow_bound_shift"],
                   dtype=dtype)

    @classmethod
    def validate(cls, latent_dim, settings):
        coupling_masks(latent_dim, settings["flow_blocks"], settings["flow_masks"])

    def shift_and_log_scale(self, k, u_c):
        """(t_k(u_c), s_k(u_c)) of block k on its conditioning coordinates u_c."""
        group, index = self._slot[k]
        return self.nets[group].apply(self.nets[group].per_block()[index], u_c)

    def block_weights(self, k):
        """Block k's MLP weights as numpy: {"shift": [(kernel, bias)], "log_scale":
        [...]} per layer, kernel [d_in, d_out], bias [d_out]."""
        group, index = self._slot[k]
        net = self.nets[group]
        return {name: [(np.asarray(kv)[index, which], np.asarray(bv)[index, which, 0])
                       for kv, bv in zip(net.kernels, net.biases)]
                for which, name in enumerate(("shift", "log_scale"))}

    def _block(self, k, u, params, inverse=False):
        """One coupling block (or its inverse) on u [N, L]: (output, log|det| of the
        forward map at the block's input, [N]); ``params`` from
        :meth:`CouplingNets.per_block` of every group.

        Forward: y_T = u_T ⊙ exp(s(u_C)) + t(u_C), y_C = u_C, log|det| = Σ s(u_C).
        Inverse: u_T = (y_T − t(y_C)) ⊙ exp(−s(y_C)) (y_C = u_C conditions both ways).
        C and T are the coordinates with b = 1 and b = 0. The s and t networks run
        once per block and give the map and its log-determinant together.
        """
        conditioning, transformed, restore = self._splits[k]
        u_c, u_t = take(u, conditioning), take(u, transformed)
        group, index = self._slot[k]
        shift, log_scale = self.nets[group].apply(params[group][index], u_c)
        if inverse:
            y_t = (u_t - shift) * tf.exp(-log_scale)
        else:
            y_t = u_t * tf.exp(log_scale) + shift
        return merge(u_c, y_t, conditioning, transformed, restore), tf.reduce_sum(
            log_scale, axis=-1)

    def g_and_log_det(self, z):
        """g = f_K ∘ … ∘ f_1 and log|det ∂g/∂z| = Σ_k log|det ∂f_k/∂u_k| at each
        block's input u_k (chain rule; each term from :meth:`_block`)."""
        log_det = 0.0
        params = [net.per_block() for net in self.nets]
        for k in range(len(self.masks)):
            z, block_log_det = self._block(k, z, params)
            log_det += block_log_det
        return z, log_det

    def g_inverse(self, z0):
        """Blocks K..1 inverted."""
        params = [net.per_block() for net in self.nets]
        for k in reversed(range(len(self.masks))):
            z0, _ = self._block(k, z0, params, inverse=True)
        return z0


def split(mask):
    """(conditioning, transformed, restore) of a coupling mask: the coordinates with
    b = 1 and b = 0, and the permutation that puts [conditioning, transformed] back in
    the coordinates' order."""
    conditioning = np.flatnonzero(mask).astype(np.int32)
    transformed = np.flatnonzero(1.0 - mask).astype(np.int32)
    order = np.concatenate([conditioning, transformed])
    return conditioning, transformed, np.argsort(order).astype(np.int32)


def contiguous(indices):
    return bool(np.all(np.diff(indices) == 1))


def take(u, indices):
    """u[..., indices]: a slice when the indices are a contiguous range (its gradient
    is one op; a gather's is a scatter of several)."""
    if contiguous(indices):
        return u[..., int(indices[0]):int(indices[-1]) + 1]
    return tf.gather(u, indices, axis=-1)


def merge(u_c, y_t, conditioning, transformed, restore):
    """The block's output in u's coordinate order from its two parts."""
    if contiguous(conditioning) and contiguous(transformed):
        # Two slices, side by side (the alternate masks): a concat restores the order.
        parts = [u_c, y_t] if conditioning[0] < transformed[0] else [y_t, u_c]
        return tf.concat(parts, axis=-1)
    return tf.gather(tf.concat([u_c, y_t], axis=-1), restore, axis=-1)
