"""A flow fitted to q(z) after training by maximum likelihood.

    log p(z) = log N(g(z); 0, I) + log|det ∂g/∂z|

with g any flow of :mod:`tf_dpvae.flows` (``--flow``, the decoupled prior's own
networks and math: this is a :class:`~tf_dpvae.priors.DecoupledPrior` whose flow is
fitted to fixed codes instead of trained jointly with the VAE). Fitting minimises the
mean −log p(z) over the train codes with Adam in Keras ``fit``
(:func:`~tf_dpvae.posthoc.base.fit_by_loss`: early stopping on the held-out codes'
−log p, the best weights kept). Sampling is the decoupled prior's: z = g⁻¹(z0), z0 ~ N(0, I).
"""

import keras

from tf_dpvae import flows, priors
from tf_dpvae.posthoc import base
from tf_dpvae.settings import Setting


@keras.saving.register_keras_serializable(package="tf_dpvae")
class FlowPrior(priors.DecoupledPrior):
    """A decoupled prior whose flow is fitted post hoc (module docstring)."""

    kind = "flow"
    title = "post-hoc flow"
    samples_through_base = True
    SETTINGS = (
        Setting("flow", f"the flow g, one of {tuple(flows.FLOWS)}", kind=str,
                default=flows.DEFAULT, choices=tuple(flows.FLOWS)),
        Setting("flow_blocks", "blocks K", kind=int, default=6, lower_bound=1),
        Setting("flow_hidden_units", "width of the flow's networks", kind=int,
                default=64, lower_bound=1),
    )

    def arguments(self):
        return {"latent_dim": self.latent_dim, **self._arguments}

    def draw(self, num_samples, seed=None):
        """(z = g⁻¹(z0), z0), z0 ~ N(0, I) from ``[seed, 0]``."""
        z0 = priors.standard_normal([int(num_samples), self.latent_dim], seed,
                                    self.compute_dtype)
        return self.to_representation(z0), z0

    @classmethod
    def fit(cls, train, validation, options, settings):
        prior = cls(train.shape[1], flow=settings.get("flow", flows.DEFAULT),
                    num_blocks=int(settings.get("flow_blocks", 6)),
                    hidden_units=int(settings.get("flow_hidden_units", 64)),
                    name="prior")
        before = base.mean_log_prob(prior, validation)
        fitted = base.fit_by_loss(lambda z, training: -prior.log_prob(z), [prior],
                                  train, validation, options)
        return prior, {**fitted, "validation_log_prob_at_start": before}
