"""The six regularized VAE objectives, each usable with either prior.

Convention: every loss here is a **per-example** quantity averaged over the batch, in
nats, i.e. the official code's batch loss divided by the batch size B. The official
PyTorch code (DESIGN §3, ``shared/reference/official-configs.md``) **sums** the
reconstruction and the KL over the batch but takes batch **means** of β-TCVAE's MI, TC
and DWKL, FactorVAE's TC and InfoVAE's MMD, and β-VAE-B's capacity C is a target for the
batch-summed KL. So a paper (Table 2) value maps to our loss by one rule,
:func:`per_example`:

* a weight on a batch-summed term stays            (β-H β, β-B γ, the KL weights);
* a weight on a batch-mean term divides by B       (β-TC α, β, γ; FactorVAE γ; InfoVAE's
  MMD weight α + λ − 1);
* a target for a batch-summed term divides by B    (β-B C_max: 25 → 0.25 nats at B = 100).

Each objective class states its Table 2 values (``PAPER``) and how the official code
applies each one (``APPLIED_TO``); :meth:`from_paper` converts them for the paper's
batch size of a dataset, and ``CONFIG_FIELDS`` names the :class:`ModelConfig` field that
holds each weight. The defaults of ``ModelConfig`` and of the trainer's flags are these
conversions (:func:`paper_config_weights`), so
``B · (our per-example loss) == official batch loss`` on the same numbers
(``tests/test_official_scale.py`` writes the official batch formulas independently).

An objective is called with a :class:`Batch` and returns a dict of batch-mean scalars;
``"loss"`` is what the optimizer minimises; ``TERMS`` lists every name it returns.
"""

import dataclasses
from typing import Any, Callable

import tensorflow as tf

from tf_dpvae import estimators

REGULARIZERS = ("vae", "beta_h", "beta_b", "beta_tc", "factor", "info")

# How the official code applies a paper value (the three cases of the module docstring).
SUMMED_WEIGHT = "weight on a batch-summed term"
MEAN_WEIGHT = "weight on a batch-mean term"
SUMMED_TARGET = "target for a batch-summed term"
APPLICATIONS = (SUMMED_WEIGHT, MEAN_WEIGHT, SUMMED_TARGET)


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


@dataclasses.dataclass
class Batch:
    """What an objective sees of one training batch (shapes: B examples, L latents).

    reconstruction: [B] −log p(x|z) at the reparameterised sample z.
    kl:             [B] KL[q(z|x) ‖ p(z)] (analytic or Monte Carlo, DESIGN §2).
    z, mean, log_var: [B, L] the sample and the posterior parameters.
    prior:          the prior layer (``log_prob``, ``sample``...).
    step:           the optimizer step before this update (for schedules).
    sample_prior:   n -> [n, L] differentiable prior samples z = g⁻¹(z0).
    discriminator:  FactorVAE's discriminator, else None.
    """

    reconstruction: tf.Tensor
    kl: tf.Tensor
    z: tf.Tensor
    mean: tf.Tensor
    log_var: tf.Tensor
    prior: Any
    step: tf.Tensor
    sample_prior: Callable[[int], tf.Tensor]
    discriminator: Any = None


def _base_terms(batch):
    return {"reconstruction": tf.reduce_mean(batch.reconstruction),
            "kl": tf.reduce_mean(batch.kl)}


class _PaperWeights:
    """Declarations every objective makes (class attributes, not dataclass fields).

    PAPER:         {field: Table 2 value}.
    APPLIED_TO:    {field: how the official code applies it} (:data:`APPLICATIONS`).
    CONFIG_FIELDS: {field: the ModelConfig field that holds it}.
    TERMS:         names of the batch statistics ``__call__`` returns (averaged by the
                   model's trackers).
    SCHEDULES:     names of returned values that are a function of the step, not of
                   the batch (reported as they are at the step, not averaged).
    """

    PAPER = {}
    APPLIED_TO = {}
    CONFIG_FIELDS = {}
    TERMS = ("loss", "reconstruction", "kl")
    SCHEDULES = ()

    @classmethod
    def from_paper(cls, batch_size, **paper_values):
        """Per-example weights for the paper's values (Table 2 unless overridden)."""
        values = {**cls.PAPER, **paper_values}
        return {name: per_example(value, cls.APPLIED_TO[name], batch_size)
                for name, value in values.items()}

    @classmethod
    def from_config(cls, config, **extra):
        return cls(**extra, **{name: getattr(config, field)
                               for name, field in cls.CONFIG_FIELDS.items()})


@dataclasses.dataclass
class VAE(_PaperWeights):
    """Kingma & Welling: loss = −E log p(x|z) + KL."""

    name = "vae"

    def __call__(self, batch):
        terms = _base_terms(batch)
        terms["loss"] = terms["reconstruction"] + terms["kl"]
        return terms


@dataclasses.dataclass
class BetaVAEH(_PaperWeights):
    """β-VAE (Higgins et al. 2017): loss = −E log p(x|z) + β · KL.

    Official batch loss: Σ_b rec_b + β Σ_b KL_b, so β stays (Table 2: β = 4).
    """

    beta: float = 4.0
    name = "beta_h"
    PAPER = {"beta": 4.0}
    APPLIED_TO = {"beta": SUMMED_WEIGHT}
    CONFIG_FIELDS = {"beta": "beta"}

    def __call__(self, batch):
        terms = _base_terms(batch)
        terms["loss"] = terms["reconstruction"] + self.beta * terms["kl"]
        return terms


@dataclasses.dataclass
class BetaVAEB(_PaperWeights):
    """β-VAE with controlled capacity (Burgess et al. 2018).

    loss = −E log p(x|z) + γ · |mean_b KL_b − C(t)|, C(t) = min(C_max, C_max · t / C_stop),
    t the optimizer step. The official batch loss is Σ_b rec_b + γ · |Σ_b KL_b − C| with
    C_max = 25 for the batch sum, so per example C_max = 25 / B (0.25 nats at B = 100)
    while γ stays.
    """

    gamma: float = 15.0
    capacity_max: float = 0.25
    capacity_stop_steps: int = 100_000
    name = "beta_b"
    PAPER = {"gamma": 15.0, "capacity_max": 25.0}
    APPLIED_TO = {"gamma": SUMMED_WEIGHT, "capacity_max": SUMMED_TARGET}
    CONFIG_FIELDS = {"gamma": "capacity_gamma", "capacity_max": "capacity_max",
                     "capacity_stop_steps": "capacity_stop_steps"}
    SCHEDULES = ("capacity",)

    def capacity(self, step, dtype=tf.float32):
        step = tf.cast(step, dtype)
        return tf.minimum(self.capacity_max,
                          self.capacity_max * step / float(self.capacity_stop_steps))

    def __call__(self, batch):
        terms = _base_terms(batch)
        capacity = self.capacity(batch.step, batch.kl.dtype)
        terms["capacity"] = capacity
        terms["loss"] = terms["reconstruction"] + self.gamma * tf.abs(terms["kl"] - capacity)
        return terms


@dataclasses.dataclass
class BetaTCVAE(_PaperWeights):
    """β-TCVAE (Chen et al. 2018): loss = −E log p(x|z) + α·MI + β·TC + γ·DWKL.

    MI, TC and DWKL are estimated on the batch by minibatch stratified sampling over
    the real dataset size N (:func:`estimators.tc_decomposition`); DWKL's log p(z)
    includes the flow's log-determinant under the decoupled prior. The official batch
    loss is Σ_b rec_b + α·mean_b MI_b + β·mean_b TC_b + γ·mean_b DWKL_b, so per example
    the Table 2 weights (1, 4, 15) divide by B: (0.01, 0.04, 0.15) at B = 100.
    """

    dataset_size: int
    alpha: float = 0.01
    beta: float = 0.04
    gamma: float = 0.15
    name = "beta_tc"
    PAPER = {"alpha": 1.0, "beta": 4.0, "gamma": 15.0}
    APPLIED_TO = {"alpha": MEAN_WEIGHT, "beta": MEAN_WEIGHT, "gamma": MEAN_WEIGHT}
    CONFIG_FIELDS = {"alpha": "tc_alpha", "beta": "tc_beta", "gamma": "tc_gamma"}
    TERMS = ("loss", "reconstruction", "kl", "mutual_information", "total_correlation",
             "dimension_wise_kl")

    def __call__(self, batch):
        terms = _base_terms(batch)
        parts = estimators.tc_decomposition(batch.z, batch.mean, batch.log_var,
                                            batch.prior, self.dataset_size)
        parts = {k: tf.reduce_mean(v) for k, v in parts.items()}
        terms.update(parts)
        terms["loss"] = (terms["reconstruction"] + self.alpha * parts["mutual_information"]
                         + self.beta * parts["total_correlation"]
                         + self.gamma * parts["dimension_wise_kl"])
        return terms


@dataclasses.dataclass
class FactorVAE(_PaperWeights):
    """FactorVAE (Kim & Mnih 2018): loss = −E log p(x|z) + KL + γ · TC_D.

    TC_D = E[D_0(z) − D_1(z)], the discriminator's logit difference between "z from
    q(z)" and "z from Π_j q(z_j)" (density-ratio estimate of the total correlation).
    The discriminator itself is trained by the model, with its own optimizer. The
    official batch loss is Σ_b (rec_b + KL_b) + γ · mean_b TC_b: γ = 1000 / B per
    example (10 at B = 100).
    """

    gamma: float = 10.0
    name = "factor"
    PAPER = {"gamma": 1000.0}
    APPLIED_TO = {"gamma": MEAN_WEIGHT}
    CONFIG_FIELDS = {"gamma": "factor_gamma"}
    TERMS = ("loss", "reconstruction", "kl", "total_correlation")

    def __call__(self, batch):
        terms = _base_terms(batch)
        logits = batch.discriminator(batch.z)
        tc = tf.reduce_mean(logits[:, 0] - logits[:, 1])
        terms["total_correlation"] = tc
        terms["loss"] = terms["reconstruction"] + terms["kl"] + self.gamma * tc
        return terms


@dataclasses.dataclass
class InfoVAE(_PaperWeights):
    """InfoVAE with MMD (Zhao et al. 2019):

    loss = −E log p(x|z) + (1 − α) · KL + (α + λ − 1) · MMD(q(z), p(z)).

    The prior samples are z = g⁻¹(z0), z0 ~ N(0, I), with gradients into the flow.
    The official batch loss is Σ_b (rec_b + (1 − α) KL_b) + (α + λ − 1) · MMD_batch:
    (1 − α) stays, the MMD weight divides by B, so per example
    λ' = (α + λ − 1) / B + 1 − α (α = 0, λ = 1000, B = 100: λ' = 10.99).
    """

    alpha: float = 0.0
    lam: float = 10.99
    mmd_bandwidth_sq: float | None = None
    name = "info"
    PAPER = {"alpha": 0.0, "lam": 1000.0}
    CONFIG_FIELDS = {"alpha": "info_alpha", "lam": "info_lambda",
                     "mmd_bandwidth_sq": "mmd_bandwidth_sq"}
    TERMS = ("loss", "reconstruction", "kl", "mmd")

    @classmethod
    def from_paper(cls, batch_size, **paper_values):
        """λ is not a weight by itself: the MMD weight α + λ − 1 is (a batch mean's)."""
        values = {**cls.PAPER, **paper_values}
        alpha = per_example(values["alpha"], SUMMED_WEIGHT, batch_size)
        mmd_weight = per_example(values["alpha"] + values["lam"] - 1.0, MEAN_WEIGHT,
                                 batch_size)
        return {"alpha": alpha, "lam": mmd_weight + 1.0 - alpha}

    def __call__(self, batch):
        terms = _base_terms(batch)
        prior_z = batch.sample_prior(tf.shape(batch.z)[0])
        terms["mmd"] = estimators.mmd(batch.z, prior_z, self.mmd_bandwidth_sq)
        terms["loss"] = (terms["reconstruction"] + (1.0 - self.alpha) * terms["kl"]
                         + (self.alpha + self.lam - 1.0) * terms["mmd"])
        return terms


OBJECTIVES = {cls.name: cls for cls in (VAE, BetaVAEH, BetaVAEB, BetaTCVAE, FactorVAE,
                                        InfoVAE)}
assert tuple(OBJECTIVES) == REGULARIZERS


def paper_config_weights(batch_size):
    """{ModelConfig field: per-example value} of every regularizer's Table 2 weights,
    converted for the paper's batch size ``batch_size`` (:func:`per_example`)."""
    weights = {}
    for cls in OBJECTIVES.values():
        for name, value in cls.from_paper(batch_size).items():
            weights[cls.CONFIG_FIELDS[name]] = value
    return weights


def make_objective(config):
    """The objective named by ``config.regularizer`` with the config's weights."""
    name = config.regularizer
    if name not in OBJECTIVES:
        raise ValueError(f"--regularizer={name!r}: expected one of {REGULARIZERS}")
    extra = {"dataset_size": config.num_train} if name == "beta_tc" else {}
    return OBJECTIVES[name].from_config(config, **extra)


def term_names(regularizer):
    """The batch statistics the objective ``regularizer`` reports (the model tracks
    their means)."""
    return OBJECTIVES[regularizer].TERMS


def schedule_names(regularizer):
    """Values the objective reports that depend only on the step (not averaged)."""
    return OBJECTIVES[regularizer].SCHEDULES
