"""The six regularized VAE objectives, each usable with either prior.

Convention (all weights below use it): every loss is a **per-example** quantity
averaged over the batch, in nats. The official code instead sums reconstruction and KL
over the batch (B = 100) and averages the TC and MMD terms, so the paper's Table 2
weights for FactorVAE (γ = 1000) and InfoVAE (λ = 1000) act on a scale B times larger
than ours. The equivalent per-example defaults are

* FactorVAE: γ = 1000 / 100 = 10;
* InfoVAE (α = 0): MMD weight α + λ − 1 = 999 / 100, i.e. λ = 10.99.

The other Table 2 weights multiply per-example terms in the official code too and are
kept as they are: β-VAE-H β = 4; β-VAE-B γ = 15, C_max = 25 nats, C_stop = 100 000
steps; β-TCVAE α = 1, β = 4, γ = 15.

An objective is called with a :class:`Batch` and returns a dict of batch-mean scalars;
``"loss"`` is what the optimizer minimises.
"""

import dataclasses
from typing import Any, Callable

import tensorflow as tf

from tf_dpvae import estimators

REGULARIZERS = ("vae", "beta_h", "beta_b", "beta_tc", "factor", "info")


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


@dataclasses.dataclass
class VAE:
    """Kingma & Welling: loss = −E log p(x|z) + KL."""

    name = "vae"

    def __call__(self, batch):
        terms = _base_terms(batch)
        terms["loss"] = terms["reconstruction"] + terms["kl"]
        return terms


@dataclasses.dataclass
class BetaVAEH:
    """β-VAE (Higgins et al. 2017): loss = −E log p(x|z) + β · KL."""

    beta: float = 4.0
    name = "beta_h"

    def __call__(self, batch):
        terms = _base_terms(batch)
        terms["loss"] = terms["reconstruction"] + self.beta * terms["kl"]
        return terms


@dataclasses.dataclass
class BetaVAEB:
    """β-VAE with controlled capacity (Burgess et al. 2018).

    loss = −E log p(x|z) + γ · |KL − C(t)|, C(t) = min(C_max, C_max · t / C_stop),
    t the optimizer step. As in Burgess et al.'s formulation (and common ports of it),
    the capacity constraint acts on the batch-mean KL, |mean_b KL_b − C|, not on
    each example's KL.
    """

    gamma: float = 15.0
    capacity_max: float = 25.0
    capacity_stop_steps: int = 100_000
    name = "beta_b"

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
class BetaTCVAE:
    """β-TCVAE (Chen et al. 2018): loss = −E log p(x|z) + α·MI + β·TC + γ·DWKL.

    MI, TC and DWKL are estimated on the batch by minibatch stratified sampling over
    the real dataset size N (:func:`estimators.tc_decomposition`); DWKL's log p(z)
    includes the flow's log-determinant under the decoupled prior.
    """

    dataset_size: int
    alpha: float = 1.0
    beta: float = 4.0
    gamma: float = 15.0
    name = "beta_tc"

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
class FactorVAE:
    """FactorVAE (Kim & Mnih 2018): loss = −E log p(x|z) + KL + γ · TC_D.

    TC_D = E[D_0(z) − D_1(z)], the discriminator's logit difference between "z from
    q(z)" and "z from Π_j q(z_j)" (density-ratio estimate of the total correlation).
    The discriminator itself is trained by the model, with its own optimizer.
    """

    gamma: float = 10.0
    name = "factor"

    def __call__(self, batch):
        terms = _base_terms(batch)
        logits = batch.discriminator(batch.z)
        tc = tf.reduce_mean(logits[:, 0] - logits[:, 1])
        terms["total_correlation"] = tc
        terms["loss"] = terms["reconstruction"] + terms["kl"] + self.gamma * tc
        return terms


@dataclasses.dataclass
class InfoVAE:
    """InfoVAE with MMD (Zhao et al. 2019):

    loss = −E log p(x|z) + (1 − α) · KL + (α + λ − 1) · MMD(q(z), p(z)).

    The prior samples are z = g⁻¹(z0), z0 ~ N(0, I), with gradients into the flow.
    """

    alpha: float = 0.0
    lam: float = 10.99
    mmd_bandwidth_sq: float | None = None
    name = "info"

    def __call__(self, batch):
        terms = _base_terms(batch)
        prior_z = batch.sample_prior(tf.shape(batch.z)[0])
        terms["mmd"] = estimators.mmd(batch.z, prior_z, self.mmd_bandwidth_sq)
        terms["loss"] = (terms["reconstruction"] + (1.0 - self.alpha) * terms["kl"]
                         + (self.alpha + self.lam - 1.0) * terms["mmd"])
        return terms


def make_objective(config):
    """The objective named by ``config.regularizer`` with the config's weights."""
    name = config.regularizer
    if name == "vae":
        return VAE()
    if name == "beta_h":
        return BetaVAEH(beta=config.beta)
    if name == "beta_b":
        return BetaVAEB(gamma=config.capacity_gamma, capacity_max=config.capacity_max,
                        capacity_stop_steps=config.capacity_stop_steps)
    if name == "beta_tc":
        return BetaTCVAE(dataset_size=config.num_train, alpha=config.tc_alpha,
                         beta=config.tc_beta, gamma=config.tc_gamma)
    if name == "factor":
        return FactorVAE(gamma=config.factor_gamma)
    if name == "info":
        return InfoVAE(alpha=config.info_alpha, lam=config.info_lambda,
                       mmd_bandwidth_sq=config.mmd_bandwidth_sq)
    raise ValueError(f"--regularizer={name!r}: expected one of {REGULARIZERS}")
