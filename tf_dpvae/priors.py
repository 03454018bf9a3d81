"""Latent priors p(z): the standard normal and the decoupled (RealNVP) prior.

Both are Keras layers with the same interface, so the model, the objectives and the
metrics never branch on the prior's name; they call its methods:

* ``log_prob(z)``: log p(z), summed over the latent axis;
* ``sample(n, seed)``: z ~ p(z);
* ``to_generation(z)`` = g(z) and ``to_representation(z0)`` = g⁻¹(z0)
  (identity for the standard normal prior);
* ``forward_and_log_det(z)``: (g(z), log|det ∂g/∂z|);
* ``analytic_kl(mean, log_var)``: KL[N(μ, σ²) ‖ p] in closed form, or None;
* ``is_decoupled``: whether a flow separates the generation space from z (figures
  draw the generation space only then).

Each class also declares, once, what the rest of the project derives: ``name_`` (the
``--prior`` value), ``SETTINGS`` (its own ModelConfig fields and flags, with search
ranges for ``trainers.tune``: :class:`tf_dpvae.settings.Setting`), ``create`` and
``from_config(config)``, ``validate(config)`` (flag errors before any data is read).
:data:`PRIORS` lists them.

The decoupled prior (paper Sec. 4.2) is ``log p_η(z) = log N(g_η(z); 0, I) +
log|det ∂g_η/∂z|``, with g_η a chain of K affine coupling blocks (RealNVP, Dinh et al.
2017). One block with binary mask b maps u to

    y = b ⊙ u + (1 − b) ⊙ (u ⊙ exp(s(b ⊙ u)) + t(b ⊙ u)),
    log|det ∂y/∂u| = Σ_l (1 − b_l) · s_l(b ⊙ u).

(The paper's Eq. 22 writes b_l where (1 − b_l) belongs.) :meth:`DecoupledPrior._block`
holds this math, once: each block runs its s and t networks a single time and returns
the map together with its log-determinant (TFP's ``RealNVP`` in a ``Chain`` runs them
twice, for ``forward`` and for ``forward_log_det_jacobian``; the tests check both
against TFP's RealNVP and the autodiff Jacobian). The s and t networks are Keras layers
owned by this layer, so ``model.trainable_variables`` holds them. The flow computes in
float32 under any precision policy.

Example::

    prior = DecoupledPrior(latent_dim=2)
    z = prior.sample(16, seed=0)          # z = g⁻¹(z0), z0 ~ N(0, I)
    log_p = prior.log_prob(z)             # includes the flow's log-determinant
"""

import numpy as np
import tensorflow as tf
import keras

from tf_dpvae import gaussian
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


class StandardNormalPrior(keras.layers.Layer):
    """p(z) = N(0, I). Generation and representation spaces coincide (g = identity)."""

    name_ = "normal"   # the --prior value (Keras layers own ``name``)
    is_decoupled = False
    SETTINGS = ()

    def __init__(self, latent_dim, **kwargs):
        super().__init__(**kwargs)
        self.latent_dim = int(latent_dim)

    @classmethod
    def create(cls, latent_dim):
        """The prior layer, ready to use."""
        return cls(latent_dim, name="prior")

    @classmethod
    def from_config(cls, config):
        return cls.create(config.latent_dim)

    @classmethod
    def validate(cls, config):
        """Nothing to check: any latent size works."""

    def analytic_kl(self, mean, log_var):
        """½ Σ (μ² + σ² − 1 − log σ²) per example."""
        return gaussian.kl_diag_to_standard(mean, log_var)

    def forward_and_log_det(self, z):
        z = tf.convert_to_tensor(z)
        return z, tf.zeros(tf.shape(z)[:-1], z.dtype)

    def to_generation(self, z):
        return tf.convert_to_tensor(z)

    def to_representation(self, z0):
        return tf.convert_to_tensor(z0)

    def log_prob(self, z):
        """log N(z; 0, I) summed over the latent axis."""
        return tf.reduce_sum(gaussian.log_standard_normal(z), axis=-1)

    def sample(self, num_samples, seed=None):
        """z ~ N(0, I); ``seed`` (int) makes it reproducible."""
        return self.to_representation(
            _standard_normal([num_samples, self.latent_dim], seed, self.compute_dtype))

    def call(self, z):
        return self.to_generation(z)


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
            limit = float(np.sqrt(6.0 / (d_in + d_out)))
            initializer = ("zeros" if l == last
                           else keras.initializers.RandomUniform(-limit, limit))
            self.kernels.append(self.add_weight(
                name=f"kernel_{l}", shape=(self.num_blocks, 2, d_in, d_out),
                initializer=initializer))
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


class DecoupledPrior(keras.layers.Layer):
    """Decoupled prior p_η(z): z0 = g_η(z) ~ N(0, I), g_η a RealNVP coupling chain.

    ``log p_η(z) = log N(g_η(z); 0, I) + log|det ∂g_η/∂z|`` (paper Eq. 2).
    Blocks are applied in order 1..K from the representation z to the generation z0.

    Args:
      latent_dim: L (≥ 2).
      num_blocks: K coupling blocks (paper: 6).
      hidden_units, num_hidden_layers: the s and t MLPs (paper: 64, 2).
      masks: ``"alternate"``, ``"checkerboard"`` or explicit 0/1 strings; see
        :func:`coupling_masks`.
      bound_shift: also pass t through tanh (the official code does).
    """

    name_ = "decoupled"
    is_decoupled = True
    SETTINGS = (
        Setting("flow_blocks", "coupling blocks K", kind=int, default=6, lower_bound=1,
                search=(2, 8)),
        Setting("flow_hidden_units", "width of the s and t networks", kind=int, default=64,
                lower_bound=1, search=(16, 128, "log")),
        Setting("flow_hidden_layers", "hidden layers of the s and t networks", kind=int,
                default=2, lower_bound=1),
        Setting("flow_masks", f"coupling masks: one of {MASK_KINDS} or 0/1 strings "
                "separated by commas, e.g. 10,01", kind=str, default="alternate"),
        Setting("flow_bound_shift", "bound the coupling shift t with tanh (the official "
                "code does)", kind=bool, default=False),
    )

    @classmethod
    def create(cls, latent_dim, **flow_kwargs):
        """The prior layer with its coupling networks built."""
        prior = cls(latent_dim, name="prior", **flow_kwargs)
        prior.build()
        return prior

    @classmethod
    def from_config(cls, config):
        return cls.create(config.latent_dim, num_blocks=config.flow_blocks,
                          hidden_units=config.flow_hidden_units,
                          num_hidden_layers=config.flow_hidden_layers,
                          masks=config.flow_masks, bound_shift=config.flow_bound_shift)

    @classmethod
    def validate(cls, config):
        """The coupling masks must fit the latent size (ValueError naming the flag)."""
        coupling_masks(config.latent_dim, config.flow_blocks, config.flow_masks)

    def analytic_kl(self, mean, log_var):
        """None: no closed form under a flow (the KL is estimated by sampling)."""
        return None

    def __init__(self, latent_dim, num_blocks=6, hidden_units=64, num_hidden_layers=2,
                 masks="alternate", bound_shift=False, **kwargs):
        # The flow is ≈ 1 % of an image model's FLOPs and decides the density: under
        # a mixed-precision policy it computes in the variables' dtype (float32).
        kwargs.setdefault("dtype", keras.mixed_precision.global_policy().variable_dtype)
        super().__init__(**kwargs)
        self.latent_dim = int(latent_dim)
        self.masks = coupling_masks(self.latent_dim, num_blocks, masks)
        # Per block: the conditioning (b = 1) and transformed (b = 0) coordinates, and
        # the permutation that puts [conditioning, transformed] back in order.
        self._splits = []
        shapes = {}
        self._slot = []   # block k → (its CouplingNets, index within them)
        for mask in self.masks:
            conditioning = np.flatnonzero(mask).astype(np.int32)
            transformed = np.flatnonzero(1.0 - mask).astype(np.int32)
            order = np.concatenate([conditioning, transformed])
            self._splits.append((conditioning, transformed, np.argsort(order).astype(np.int32)))
            members = shapes.setdefault((len(conditioning), len(transformed)), [])
            self._slot.append((list(shapes).index((len(conditioning), len(transformed))),
                               len(members)))
            members.append(len(self._splits) - 1)
        self.nets = [CouplingNets(len(members), n_c, n_t, hidden_units, num_hidden_layers,
                                  bound_shift, name=f"coupling_{g}")
                     for g, ((n_c, n_t), members) in enumerate(shapes.items())]

    def build(self, input_shape=None):
        for net in self.nets:
            net.build()
        super().build(input_shape)

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
        u_c, u_t = _take(u, conditioning), _take(u, transformed)
        group, index = self._slot[k]
        shift, log_scale = self.nets[group].apply(params[group][index], u_c)
        if inverse:
            y_t = (u_t - shift) * tf.exp(-log_scale)
        else:
            y_t = u_t * tf.exp(log_scale) + shift
        if _contiguous(conditioning) and _contiguous(transformed):
            # Two slices, side by side (the alternate masks): a concat restores u's order.
            parts = [u_c, y_t] if conditioning[0] < transformed[0] else [y_t, u_c]
            y = tf.concat(parts, axis=-1)
        else:
            y = tf.gather(tf.concat([u_c, y_t], axis=-1), restore, axis=-1)
        return y, tf.reduce_sum(log_scale, axis=-1)

    def forward_and_log_det(self, z):
        """(g(z), log|det ∂g/∂z|) for z of shape [..., L], in one pass over the blocks.

        g = f_K ∘ … ∘ f_1 and log|det ∂g/∂z| = Σ_k log|det ∂f_k/∂u_k| at each block's
        input u_k (chain rule; each term from :meth:`_block`).
        """
        z = tf.cast(z, self.compute_dtype)
        # The blocks act on rows: run them on [N, L] (Dense on rank > 2 adds reshapes
        # around every matmul, and to its gradient).
        z0 = tf.reshape(z, [-1, self.latent_dim])
        log_det = 0.0
        params = [net.per_block() for net in self.nets]
        for k in range(len(self.masks)):
            z0, block_log_det = self._block(k, z0, params)
            log_det += block_log_det
        batch_shape = tf.shape(z)[:-1]
        return tf.reshape(z0, tf.shape(z)), tf.reshape(log_det, batch_shape)

    def to_generation(self, z):
        """g(z): representation space → generation space."""
        return self.forward_and_log_det(z)[0]

    def to_representation(self, z0):
        """g⁻¹(z0): generation space → representation space (blocks K..1 inverted)."""
        z0 = tf.cast(z0, self.compute_dtype)
        z = tf.reshape(z0, [-1, self.latent_dim])
        params = [net.per_block() for net in self.nets]
        for k in reversed(range(len(self.masks))):
            z, _ = self._block(k, z, params, inverse=True)
        return tf.reshape(z, tf.shape(z0))

    def log_prob(self, z):
        """log p_η(z) = log N(g(z); 0, I) + log|det ∂g/∂z|, shape z.shape[:-1]."""
        z0, log_det = self.forward_and_log_det(z)
        return tf.reduce_sum(gaussian.log_standard_normal(z0), axis=-1) + log_det

    def sample(self, num_samples, seed=None):
        """z = g⁻¹(z0), z0 ~ N(0, I); ``seed`` (int) makes it reproducible."""
        return self.to_representation(
            _standard_normal([num_samples, self.latent_dim], seed, self.compute_dtype))

    def call(self, z):
        return self.to_generation(z)


# Every prior, by its --prior value. The study compares STANDARD with DECOUPLED.
PRIORS = {cls.name_: cls for cls in (StandardNormalPrior, DecoupledPrior)}
STANDARD, DECOUPLED = StandardNormalPrior.name_, DecoupledPrior.name_


def all_settings():
    """[(prior name, Setting)] of every prior's own settings."""
    return [(name, spec) for name, cls in PRIORS.items() for spec in cls.SETTINGS]


def get(kind):
    """The prior class of a ``--prior`` value; ValueError naming the flag otherwise."""
    if kind not in PRIORS:
        raise ValueError(f"--prior={kind!r}: expected one of {tuple(PRIORS)}")
    return PRIORS[kind]


def from_config(config):
    """The prior a ModelConfig describes (``config.prior`` and its own fields)."""
    return get(config.prior).from_config(config)


def make_prior(kind, latent_dim, **flow_kwargs):
    """A prior by its ``--prior`` value; flow kwargs go to the DecoupledPrior."""
    return get(kind).create(latent_dim, **flow_kwargs)


def _contiguous(indices):
    return bool(np.all(np.diff(indices) == 1))


def _take(u, indices):
    """u[..., indices]: a slice when the indices are a contiguous range (its gradient
    is one op; a gather's is a scatter of several)."""
    if _contiguous(indices):
        return u[..., int(indices[0]):int(indices[-1]) + 1]
    return tf.gather(u, indices, axis=-1)


def _standard_normal(shape, seed, dtype):
    if seed is None:
        return tf.random.normal(shape, dtype=dtype)
    return tf.random.stateless_normal(shape, seed=[int(seed), 0], dtype=dtype)
