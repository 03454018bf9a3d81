"""What every regularized objective declares, and the registry that collects them.

Convention: every loss is a **per-example** quantity averaged over the batch, in nats,
i.e. the official code's batch loss divided by the batch size B. The official PyTorch
code (DESIGN §3, ``shared/reference/official-configs.md``) **sums** the reconstruction
and the KL over the batch but takes batch **means** of β-TCVAE's MI, TC and DWKL,
FactorVAE's TC and InfoVAE's MMD, and β-VAE-B's capacity C is a target for the
batch-summed KL. So a paper (Table 2) value maps to our loss by one rule,
:func:`per_example`:

* a weight on a batch-summed term stays            (β-H β, β-B γ, the KL weights);
* a weight on a batch-mean term divides by B       (β-TC α, β, γ; FactorVAE γ; InfoVAE's
  MMD weight α + λ − 1);
* a target for a batch-summed term divides by B    (β-B C_max: 25 → 0.25 nats at B = 100).

A regularizer is one module of this package holding one :class:`Objective` subclass,
a dataclass whose fields are its settings. A field made with :func:`setting` is also a
:class:`~tf_dpvae.config.ModelConfig` field and a flag of ``trainers.fit`` (under its
``config_name``); its default is the Table 2 value converted at B = 100, and the
trainer's flags default to the conversion at the chosen dataset's paper batch size
(:func:`paper_config_weights`), so ``B · (our per-example loss) == official batch loss``
on the same numbers (``tests/test_official_scale.py`` writes the official batch
formulas independently). ``search`` ranges feed ``trainers.tune``; ``scales_with_steps``
settings are compressed with a shorter training budget by the study.

An objective is called with a :class:`Batch` and returns a dict of batch-mean scalars;
``"loss"`` is what the optimizer minimises; ``TERMS`` lists every name it returns.
Training machinery beyond the VAE's gradient step (FactorVAE's discriminator) belongs
to the objective through three hooks: :meth:`Objective.build` creates its networks and
optimizers, :meth:`Objective.auxiliary_step` runs after each VAE update (and, without
updating, in evaluation), :meth:`Objective.validate` checks a config before any data
is read.
"""

import dataclasses
from typing import Any, Callable

import tensorflow as tf

from tf_dpvae.settings import Setting

# How the official code applies a paper value (the three cases of the module docstring).
SUMMED_WEIGHT = "weight on a batch-summed term"
MEAN_WEIGHT = "weight on a batch-mean term"
SUMMED_TARGET = "target for a batch-summed term"
APPLICATIONS = (SUMMED_WEIGHT, MEAN_WEIGHT, SUMMED_TARGET)

# The batch size at which the ModelConfig defaults are converted (the paper's MNIST B).
REFERENCE_BATCH_SIZE = 100

_SETTING = "tf_dpvae.setting"      # dataclass field metadata keys
_FROM_CONFIG = "tf_dpvae.from_config"


def per_example(value, applied_to, batch_size):
    """A paper value in our per-example loss (official batch loss / B).

    ``applied_to`` is one of :data:`APPLICATIONS`: a weight on a batch-summed term
    stays, a weight on a batch-mean term and a target for a batch-summed term divide
    by ``batch_size`` (the paper's B).
    """
    if applied_to == SUMMED_WEIGHT:
        return float(value)
    if applied_to in (MEAN_WEIGHT, SUMMED_TARGET):
        return float(value) / batch_size
    raise ValueError(f"applied_to={applied_to!r}: expected one of {APPLICATIONS}")


def setting(config_name, help, *, kind=float, paper=None, applied_to=None, default=None,
            search=None, lower_bound=None, scales_with_steps=False,
            steers_training=False):
    """A dataclass field of an objective that is also a ModelConfig field and a flag.

    With ``paper`` and ``applied_to`` the default is the paper's value converted at
    :data:`REFERENCE_BATCH_SIZE`; otherwise it is ``default``.
    """
    if paper is not None and applied_to is not None:
        default = per_example(paper, applied_to, REFERENCE_BATCH_SIZE)
    spec = Setting(config_name, help, kind, paper, applied_to, default, search,
                   lower_bound, scales_with_steps, steers_training)
    return dataclasses.field(default=default, metadata={_SETTING: spec})


def from_config(config_name):
    """A required dataclass field read from an existing ModelConfig field (not a flag
    of its own), e.g. the dataset size N."""
    return dataclasses.field(metadata={_FROM_CONFIG: config_name})


@dataclasses.dataclass
class Batch:
    """What an objective sees of one training batch (shapes: B examples, L latents).

    reconstruction: [B] −log p(x|z) at the reparameterised sample z.
    kl:             [B] KL[q(z|x) ‖ p(z)] (analytic or Monte Carlo, DESIGN §2).
    z, mean, log_var: [B, L] the sample and the posterior parameters.
    prior:          the prior layer (``log_prob``, ``sample``...).
    step:           the optimizer step before this update (for schedules).
    sample_prior:   n -> [n, L] differentiable prior samples z = g⁻¹(z0).
    """

    reconstruction: tf.Tensor
    kl: tf.Tensor
    z: tf.Tensor
    mean: tf.Tensor
    log_var: tf.Tensor
    prior: Any
    step: tf.Tensor
    sample_prior: Callable[[int], tf.Tensor]


def base_terms(batch):
    """The batch means of −log p(x|z) and KL every objective reports."""
    return {"reconstruction": tf.reduce_mean(batch.reconstruction),
            "kl": tf.reduce_mean(batch.kl)}


class Objective:
    """Base of the objectives (subclasses are dataclasses, registered with
    :func:`register`).

    Class attributes a subclass declares:

    name:          the ``--regularizer`` value.
    DISPLAY:       (name with the standard prior, name with the decoupled prior), as in
                   the paper's Table 1.
    TERMS:         names of the batch statistics ``__call__`` returns (averaged by the
                   model's trackers).
    SCHEDULES:     names of returned values that are a function of the step, not of
                   the batch (reported as they are at the step, not averaged).
    AUXILIARY_TERMS: names :meth:`auxiliary_step` returns (averaged too).
    PAPER_TABLE1_MNIST: the paper's Table 1 MNIST numbers ((FID, FID LP, sKL, NLL ×10³)
                   for the standard and the decoupled prior), or None if it has none.
    """

    name = None
    DISPLAY = None
    TERMS = ("loss", "reconstruction", "kl")
    SCHEDULES = ()
    AUXILIARY_TERMS = ()
    PAPER_TABLE1_MNIST = None

    # -------------------------------------------------------------- declarations
    @classmethod
    def settings(cls):
        """{dataclass field name: Setting} of this objective, in declaration order."""
        return {f.name: f.metadata[_SETTING] for f in dataclasses.fields(cls)
                if _SETTING in f.metadata}

    @classmethod
    def config_fields(cls):
        """{dataclass field name: the ModelConfig field it is read from}."""
        out = {}
        for f in dataclasses.fields(cls):
            if _SETTING in f.metadata:
                out[f.name] = f.metadata[_SETTING].config_name
            elif _FROM_CONFIG in f.metadata:
                out[f.name] = f.metadata[_FROM_CONFIG]
        return out

    @classmethod
    def from_paper(cls, batch_size, **paper_values):
        """Per-example values of the settings with a paper value, converted for the
        paper's batch size ``batch_size`` (Table 2 unless overridden)."""
        out = {}
        for name, spec in cls.settings().items():
            if spec.paper is None:
                continue
            out[name] = per_example(paper_values.get(name, spec.paper), spec.applied_to,
                                    batch_size)
        return out

    @classmethod
    def from_config(cls, config):
        return cls(**{name: getattr(config, field)
                      for name, field in cls.config_fields().items()})

    @classmethod
    def validate(cls, config):
        """Raise ValueError (naming the flag) for a config this objective cannot train."""

    # -------------------------------------------------------------- training hooks
    def build(self, latent_dim):
        """Create auxiliary networks and optimizers (none by default)."""

    @property
    def networks(self):
        """{name: keras model} trained by :meth:`auxiliary_step`, not by the VAE's
        optimizer; the model tracks (and checkpoints) each under its name."""
        return {}

    @property
    def optimizers(self):
        """{checkpoint name: optimizer} of the auxiliary networks."""
        return {}

    def apply_learning_rates(self):
        """Set the auxiliary optimizers' learning rates from this objective's settings
        (after a restore, which brings back the values saved with the checkpoint: a
        run resumed with a new ``steers_training`` setting must use the new one)."""

    def auxiliary_step(self, z, seed, replicas, update=True):
        """After a VAE update on codes ``z``: train the auxiliary networks (if
        ``update``) and return their statistics (:data:`AUXILIARY_TERMS`)."""
        return {}

    def __call__(self, batch):
        raise NotImplementedError


REGISTRY = {}


def register(cls):
    """Add an objective class to :data:`REGISTRY` (checks what it declares)."""
    if not dataclasses.is_dataclass(cls) or not issubclass(cls, Objective):
        raise TypeError(f"{cls.__name__}: an objective is a dataclass subclass of Objective")
    if not cls.name or cls.name in REGISTRY:
        raise ValueError(f"{cls.__name__}: name {cls.name!r} is empty or already registered")
    if not (isinstance(cls.DISPLAY, tuple) and len(cls.DISPLAY) == 2):
        raise ValueError(f"{cls.__name__}: DISPLAY must be (standard, decoupled) names")
    taken = {spec.config_name: other.name for other in REGISTRY.values()
             for spec in other.settings().values()}
    for spec in cls.settings().values():
        if spec.config_name in taken:
            raise ValueError(f"{cls.__name__}: setting {spec.config_name!r} is already "
                             f"declared by {taken[spec.config_name]!r}")
        if spec.paper is not None and spec.applied_to not in APPLICATIONS \
                and "from_paper" not in vars(cls):
            raise ValueError(f"{cls.__name__}.{spec.config_name}: a paper value needs "
                             "applied_to (or a from_paper of its own)")
    REGISTRY[cls.name] = cls
    return cls


def get(name):
    """The objective class registered as ``name``; ValueError naming the flag otherwise."""
    if name not in REGISTRY:
        raise ValueError(f"--regularizer={name!r}: expected one of {tuple(REGISTRY)}")
    return REGISTRY[name]


def all_settings():
    """[(regularizer, Setting)] of every registered objective, in registry order."""
    return [(name, spec) for name, cls in REGISTRY.items()
            for spec in cls.settings().values()]


def paper_config_weights(batch_size):
    """{ModelConfig field: per-example value} of every regularizer's Table 2 values,
    converted for the paper's batch size ``batch_size`` (:func:`per_example`)."""
    weights = {}
    for cls in REGISTRY.values():
        fields = cls.config_fields()
        for name, value in cls.from_paper(batch_size).items():
            weights[fields[name]] = value
    return weights


def make_objective(config):
    """The objective named by ``config.regularizer`` with the config's settings."""
    return get(config.regularizer).from_config(config)


def term_names(regularizer):
    """The batch statistics the objective reports (the model tracks their means)."""
    return get(regularizer).TERMS


def schedule_names(regularizer):
    """Values the objective reports that depend only on the step (not averaged)."""
    return get(regularizer).SCHEDULES


def display_name(regularizer, prior_is_decoupled):
    """The paper's name of a regularizer with the standard or the decoupled prior."""
    standard, decoupled = get(regularizer).DISPLAY
    return decoupled if prior_is_decoupled else standard
