"""The decoupled prior as a drop-in component of any Keras VAE (the public API).

    from tf_dpvae.decoupled import DecoupledPrior, kl_to_prior

    prior = DecoupledPrior(latent_dim, flow="realnvp")   # a Keras layer
    kl = kl_to_prior(z_mean, z_log_var, prior, samples=1)   # [B], add to your loss
    z = prior.sample(16, seed=0)                           # decode these to generate

* ``DecoupledPrior(latent_dim, flow=...)``: p(z) with z0 = g(z) ~ N(0, I), g a flow of
  :data:`FLOWS` (``realnvp``, the paper's and the default; ``maf``; ``iaf``;
  ``spline``). Put it in your ``keras.Model`` as an attribute: the model tracks,
  trains and saves (``.keras`` included) the flow's networks.
* ``prior.log_prob(z)`` = log N(g(z); 0, I) + log|det ∂g/∂z|;
  ``prior.to_generation(z)`` = g(z); ``prior.to_representation(z0)`` = g⁻¹(z0);
  ``prior.sample(n, seed)`` = g⁻¹(z0), z0 ~ N(0, I); ``prior.flow`` is the TFP
  bijector g⁻¹ and ``prior.as_distribution()`` the prior as a TFP distribution.
* :func:`kl_to_prior`: the KL term of the ELBO under any prior.

``examples/keras_dpvae.py`` is the Keras VAE example made a dpVAE.
"""

import tensorflow as tf

from tf_dpvae import estimators
from tf_dpvae.flows import FLOWS, Flow
from tf_dpvae.priors import DecoupledPrior, StandardNormalPrior


def kl_to_prior(mean, log_var, prior, samples=1, seed=None):
    """KL[q(z|x) ‖ p(z)] per example, q(z|x) = N(mean, diag(exp(log_var))): shape [B].

    ``samples``: an int S ≥ 1, the number of reparameterised draws z = mean +
    exp(log_var / 2) · ε of the Monte Carlo estimate

        KL ≈ −H[q] − (1/S) Σ_s log p(z_s),   H[q] = L/2 (1 + log 2π) + ½ Σ log σ²

    (unbiased; gradients reach mean and log_var through the draws and the prior's
    parameters through log p); or the draws themselves, [S, B, L]; or 0 for the
    closed form, which only the standard normal prior has. ``seed`` (int) makes the
    draws reproducible.
    """
    mean = tf.convert_to_tensor(mean)
    log_var = tf.cast(log_var, mean.dtype)
    if isinstance(samples, int):
        if samples == 0:
            return estimators.kl_to_prior(mean, log_var, prior)
        if samples < 0:
            raise ValueError(f"samples={samples}: expected S >= 1 draws, or 0")
        shape = tf.concat([[samples], tf.shape(mean)], 0)
        eps = (tf.random.normal(shape, dtype=mean.dtype) if seed is None else
               tf.random.stateless_normal(shape, seed=[int(seed), 0], dtype=mean.dtype))
        samples = mean + tf.exp(0.5 * log_var) * eps
    return estimators.kl_to_prior(mean, log_var, prior, samples)


__all__ = ["DecoupledPrior", "StandardNormalPrior", "FLOWS", "Flow", "kl_to_prior"]
