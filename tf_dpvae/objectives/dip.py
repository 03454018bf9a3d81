"""DIP-VAE-I and DIP-VAE-II (Kumar, Sattigeri & Balakrishnan, ICLR 2018).

Both add to the VAE's loss a penalty that pulls a covariance of the codes towards the
identity, its off-diagonal entries to 0 and its diagonal to 1:

    loss = −E log p(x|z) + KL + λ_od · Σ_{i≠j} C_ij² + λ_d · Σ_i (C_ii − 1)²

DIP-VAE-I:  C = Cov_p(x)[μ(x)] = E[μ μᵀ] − E[μ] E[μ]ᵀ, the covariance of the posterior
            means over the batch (Kumar et al. Eq. 6).
DIP-VAE-II: C = E_p(x)[diag σ²(x)] + Cov_p(x)[μ(x)], the covariance of the aggregate
            posterior q(z) = E_p(x) q(z|x) (Eq. 7).

As in disentanglement_lib's ``DIPVAE`` (the reference implementation of the method),
the reconstruction and the KL are per-example batch means and the penalty is added
once per batch, so its weights are already per example (no conversion by B). The
dpVAE paper does not run DIP-VAE; the defaults are disentanglement_lib's sweep centre
λ_od = 10 with its ``lambda_d_factor`` (λ_d = 10 λ_od for DIP-VAE-I, λ_d = λ_od for
DIP-VAE-II, as in Kumar et al.). With the decoupled prior the penalty still shapes the
representation space z, where the regularizer belongs; the flow maps it to N(0, I).
"""

import dataclasses

import tensorflow as tf

from tf_dpvae.objectives.base import Objective, base_terms, register, setting


def covariance_of_means(mean):
    """Cov_p(x)[μ(x)] over the batch: E[μ μᵀ] − E[μ] E[μ]ᵀ (the biased, 1/B estimate).

    mean: [B, L] posterior means; returns [L, L].
    """
    centred = mean - tf.reduce_mean(mean, axis=0, keepdims=True)
    return tf.matmul(centred, centred, transpose_a=True) / tf.cast(tf.shape(mean)[0],
                                                                   mean.dtype)


def aggregate_covariance(mean, log_var):
    """Cov of q(z) = E_p(x) q(z|x): E[diag σ²(x)] + Cov[μ(x)]; returns [L, L]."""
    return tf.linalg.diag(tf.reduce_mean(tf.exp(log_var), axis=0)) + covariance_of_means(mean)


def dip_penalties(covariance):
    """(Σ_{i≠j} C_ij², Σ_i (C_ii − 1)²) of a covariance matrix C."""
    diagonal = tf.linalg.diag_part(covariance)
    off_diagonal = covariance - tf.linalg.diag(diagonal)
    return tf.reduce_sum(tf.square(off_diagonal)), tf.reduce_sum(tf.square(diagonal - 1.0))


class _DIPVAE(Objective):
    """loss = −E log p(x|z) + KL + λ_od · off-diagonal + λ_d · diagonal penalty."""

    TERMS = ("loss", "reconstruction", "kl", "dip_off_diagonal", "dip_diagonal")

    def covariance(self, batch):
        raise NotImplementedError

    def __call__(self, batch):
        terms = base_terms(batch)
        off_diagonal, diagonal = dip_penalties(self.covariance(batch))
        terms["dip_off_diagonal"] = off_diagonal
        terms["dip_diagonal"] = diagonal
        terms["loss"] = (terms["reconstruction"] + terms["kl"]
                         + self.lambda_od * off_diagonal + self.lambda_d * diagonal)
        return terms


@register
@dataclasses.dataclass
class DIPVAEI(_DIPVAE):
    """DIP-VAE-I: the penalty on Cov_p(x)[μ(x)] (:func:`covariance_of_means`)."""

    lambda_od: float = setting("dip_i_lambda_od", "weight λ_od of the off-diagonal "
                               "covariance penalty", default=10.0,
                               search=(1.0, 100.0, "log"), lower_bound=0)
    lambda_d: float = setting("dip_i_lambda_d", "weight λ_d of the diagonal penalty "
                              "(disentanglement_lib: 10 λ_od)", default=100.0,
                              search=(1.0, 1000.0, "log"), lower_bound=0)
    name = "dip_i"
    DISPLAY = ("DIP-VAE-I", "DIP-dpVAE-I")

    def covariance(self, batch):
        return covariance_of_means(batch.mean)


@register
@dataclasses.dataclass
class DIPVAEII(_DIPVAE):
    """DIP-VAE-II: the penalty on the covariance of q(z) (:func:`aggregate_covariance`)."""

    lambda_od: float = setting("dip_ii_lambda_od", "weight λ_od of the off-diagonal "
                               "covariance penalty", default=10.0,
                               search=(1.0, 100.0, "log"), lower_bound=0)
    lambda_d: float = setting("dip_ii_lambda_d", "weight λ_d of the diagonal penalty "
                              "(disentanglement_lib: λ_od)", default=10.0,
                              search=(1.0, 1000.0, "log"), lower_bound=0)
    name = "dip_ii"
    DISPLAY = ("DIP-VAE-II", "DIP-dpVAE-II")

    def covariance(self, batch):
        return aggregate_covariance(batch.mean, batch.log_var)
