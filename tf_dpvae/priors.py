"""Latent priors p(z): the standard normal and the decoupled prior (a flow).

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
log|det ∂g_η/∂z|``, with g_η a flow of :mod:`tf_dpvae.flows` (``--flow``): RealNVP
affine couplings (the paper's, default), MAF, IAF or rational-quadratic spline
couplings. Each flow computes g(z) and its log-determinant in one pass over its
networks (the math is in each flow's module, tested against TFP and autodiff). The
networks are Keras layers tracked by the prior, so ``model.trainable_variables``
holds them. The flow computes in float32 under any precision policy.

Example::

    prior = DecoupledPrior(latent_dim=2, flow="realnvp")
    z = prior.sample(16, seed=0)          # z = g⁻¹(z0), z0 ~ N(0, I)
    log_p = prior.log_prob(z)             # includes the flow's log-determinant
"""

import keras
import tensorflow as tf
import tensorflow_probability as tfp

from tf_dpvae import flows, gaussian
from tf_dpvae.flows.realnvp import MASK_KINDS, CouplingNets, coupling_masks  # noqa: F401
from tf_dpvae.settings import Setting

tfd = tfp.distributions

@keras.saving.register_keras_serializable(package="tf_dpvae")
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
        """From a ModelConfig, or from a Keras layer config."""
        if isinstance(config, dict):                  # Keras deserialisation
            return cls(**config)
        return cls.create(config.latent_dim)

    def get_config(self):
        return {**super().get_config(), "latent_dim": self.latent_dim}

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
            standard_normal([num_samples, self.latent_dim], seed, self.compute_dtype))

    def call(self, z):
        return self.to_generation(z)


@keras.saving.register_keras_serializable(package="tf_dpvae")
class DecoupledPrior(keras.layers.Layer):
    """Decoupled prior p_η(z): z0 = g_η(z) ~ N(0, I), g_η a flow.

    ``log p_η(z) = log N(g_η(z); 0, I) + log|det ∂g_η/∂z|`` (paper Eq. 2). A Keras
    layer: put it in any Keras model (``self.prior = DecoupledPrior(latent_dim)``) and
    the model tracks, trains and saves the flow's networks (``.keras`` files included).

    Args:
      latent_dim: L (≥ 2).
      flow: ``"realnvp"`` (the paper's, default), ``"maf"``, ``"iaf"`` or
        ``"spline"`` (:mod:`tf_dpvae.flows`; ``flow.COST`` says which direction is one
        pass), or a :class:`tf_dpvae.flows.Flow` instance.
      num_blocks, hidden_units, num_hidden_layers: the flow's blocks and their
        networks (paper: 6, 64, 2).
      masks, bound_shift, spline_bins, spline_bound: the flow's own settings
        (:attr:`SETTINGS`; ignored by flows that do not have them).

    ``prior.flow`` is the TFP bijector g⁻¹ (generation → representation):
    ``tfd.TransformedDistribution(tfd.MultivariateNormalDiag(tf.zeros(L)),
    prior.flow)`` is this prior as a TFP distribution (:meth:`as_distribution`).
    """

    name_ = "decoupled"
    is_decoupled = True
    SETTINGS = (
        Setting("flow", f"the flow g: one of {tuple(flows.FLOWS)}", kind=str,
                default=flows.DEFAULT, choices=tuple(flows.FLOWS)),
        Setting("flow_blocks", "blocks K of the flow", kind=int, default=6, lower_bound=1,
                search=(2, 8)),
        Setting("flow_hidden_units", "width of the flow's networks", kind=int,
                default=64, lower_bound=1, search=(16, 128, "log")),
        Setting("flow_hidden_layers", "hidden layers of the flow's networks", kind=int,
                default=2, lower_bound=1),
        *flows.all_settings(),
    )
    # The layer's arguments ← the ModelConfig fields (SETTINGS) they are read from.
    _ARGUMENTS = {"flow": "flow", "num_blocks": "flow_blocks",
                  "hidden_units": "flow_hidden_units",
                  "num_hidden_layers": "flow_hidden_layers", "masks": "flow_masks",
                  "bound_shift": "flow_bound_shift", "spline_bins": "flow_spline_bins",
                  "spline_bound": "flow_spline_bound"}

    @classmethod
    def create(cls, latent_dim, **kwargs):
        """The prior layer with its flow's networks built."""
        prior = cls(latent_dim, name="prior", **kwargs)
        prior.build()
        return prior

    @classmethod
    def from_config(cls, config):
        """From a ModelConfig (its ``flow*`` fields), or from a Keras layer config."""
        if isinstance(config, dict):                  # Keras deserialisation
            return cls(**config)
        return cls.create(config.latent_dim, **{
            arg: getattr(config, field) for arg, field in cls._ARGUMENTS.items()})

    def get_config(self):
        return {**super().get_config(), "latent_dim": self.latent_dim,
                **self._arguments}

    @classmethod
    def validate(cls, config):
        """The flow's settings must fit the latent size (ValueError naming the flag)."""
        flows.get(config.flow).validate(config.latent_dim, _settings(config))

    def analytic_kl(self, mean, log_var):
        """None: no closed form under a flow (the KL is estimated by sampling)."""
        return None

    def __init__(self, latent_dim, flow=flows.DEFAULT, num_blocks=6, hidden_units=64,
                 num_hidden_layers=2, masks="alternate", bound_shift=False,
                 spline_bins=8, spline_bound=5.0, **kwargs):
        # The flow is ≈ 1 % of an image model's FLOPs and decides the density: under
        # a mixed-precision policy it computes in the variables' dtype (float32).
        kwargs.setdefault("dtype", keras.mixed_precision.global_policy().variable_dtype)
        super().__init__(**kwargs)
        self.latent_dim = int(latent_dim)
        self._arguments = dict(flow=flow, num_blocks=num_blocks, hidden_units=hidden_units,
                               num_hidden_layers=num_hidden_layers, masks=masks,
                               bound_shift=bound_shift, spline_bins=spline_bins,
                               spline_bound=spline_bound)
        if isinstance(flow, flows.Flow):
            instance = flow
            self._arguments["flow"] = flow.name_
        else:
            settings = {field: self._arguments[arg]
                        for arg, field in self._ARGUMENTS.items() if arg != "flow"}
            instance = flows.get(flow).from_settings(self.latent_dim, settings,
                                                     dtype=self.compute_dtype)
        # The flow (a tf.Module) is held outside Keras's and TF's tracking; its
        # networks are tracked here, as ``nets``: the checkpoint path of the RealNVP
        # networks is the one models trained before flows were selectable have.
        object.__setattr__(self, "_flow", instance)
        self.nets = instance.networks
        self.build()

    @property
    def flow(self):
        """The flow: a TFP bijector, forward = g⁻¹ (:mod:`tf_dpvae.flows`)."""
        return self._flow

    def build(self, input_shape=None):
        if self.built:
            return
        for net in self.nets:
            if not net.built:
                net.build()
        super().build(input_shape)

    def forward_and_log_det(self, z):
        """(g(z), log|det ∂g/∂z|) for z of shape [..., L], in one pass over the flow."""
        return self._flow.generation_and_log_det(z)

    def to_generation(self, z):
        """g(z): representation space → generation space."""
        return self.forward_and_log_det(z)[0]

    def to_representation(self, z0):
        """g⁻¹(z0): generation space → representation space."""
        return self._flow.representation(z0)

    def log_prob(self, z):
        """log p_η(z) = log N(g(z); 0, I) + log|det ∂g/∂z|, shape z.shape[:-1]."""
        z0, log_det = self.forward_and_log_det(z)
        return tf.reduce_sum(gaussian.log_standard_normal(z0), axis=-1) + log_det

    def sample(self, num_samples, seed=None):
        """z = g⁻¹(z0), z0 ~ N(0, I); ``seed`` (int) makes it reproducible."""
        return self.to_representation(
            standard_normal([num_samples, self.latent_dim], seed, self.compute_dtype))

    def as_distribution(self):
        """This prior as a TFP distribution (log_prob and sample through TFP)."""
        base = tfd.MultivariateNormalDiag(loc=tf.zeros([self.latent_dim],
                                                       self.compute_dtype))
        return tfd.TransformedDistribution(base, self._flow)

    def call(self, z):
        return self.to_generation(z)


def _settings(config):
    """The flow settings of a ModelConfig: {field: value}."""
    return {field: getattr(config, field)
            for field in DecoupledPrior._ARGUMENTS.values() if field != "flow"}


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
    """A prior by its ``--prior`` value; flow kwargs (``flow="maf"``...) go to the
    DecoupledPrior."""
    return get(kind).create(latent_dim, **flow_kwargs)


def standard_normal(shape, seed, dtype):
    """z0 ~ N(0, I) as every prior draws it: stateless from ``[seed, 0]``, or from the
    global generator when ``seed`` is None."""
    if seed is None:
        return tf.random.normal(shape, dtype=dtype)
    return tf.random.stateless_normal(shape, seed=[int(seed), 0], dtype=dtype)
