"""InfoVAE with MMD (Zhao et al. 2019)."""

import dataclasses

import tensorflow as tf

from tf_dpvae import estimators
from tf_dpvae.objectives.base import (MEAN_WEIGHT, REFERENCE_BATCH_SIZE, SUMMED_WEIGHT,
                                      Objective, base_terms, per_example, register, setting)


def lambda_per_example(alpha, lam, batch_size):
    """λ' with (α + λ' − 1) = (α + λ − 1) / B: the MMD weight is a batch mean's, the
    KL weight 1 − α a batch sum's."""
    alpha = per_example(alpha, SUMMED_WEIGHT, batch_size)
    mmd_weight = per_example(alpha + lam - 1.0, MEAN_WEIGHT, batch_size)
    return mmd_weight + 1.0 - alpha


@register
@dataclasses.dataclass
class InfoVAE(Objective):
    """loss = −E log p(x|z) + (1 − α) · KL + (α + λ − 1) · MMD(q(z), p(z)).

    The prior samples are z = g⁻¹(z0), z0 ~ N(0, I), with gradients into the flow.
    The official batch loss is Σ_b (rec_b + (1 − α) KL_b) + (α + λ − 1) · MMD_batch:
    (1 − α) stays, the MMD weight divides by B, so per example
    λ' = (α + λ − 1) / B + 1 − α (α = 0, λ = 1000, B = 100: λ' = 10.99).
    """

    alpha: float = setting("info_alpha", "α", paper=0.0, applied_to=SUMMED_WEIGHT)
    lam: float = setting("info_lambda", "λ", paper=1000.0,
                         default=lambda_per_example(0.0, 1000.0, REFERENCE_BATCH_SIZE),
                         search=(1.0, 100.0, "log"))
    mmd_bandwidth_sq: float | None = setting("mmd_bandwidth_sq", "RBF bandwidth h² "
                                             "(default L)", default=None, lower_bound=1e-9)
    name = "info"
    DISPLAY = ("InfoVAE", "Info-dpVAE")
    TERMS = ("loss", "reconstruction", "kl", "mmd")
    PAPER_TABLE1_MNIST = ((128.7, 133.2, 2.89, 2.88), (110.1, 110.5, 1.70, 2.81))

    @classmethod
    def from_paper(cls, batch_size, **paper_values):
        """λ is not a weight by itself: the MMD weight α + λ − 1 is (a batch mean's)."""
        paper = {name: spec.paper for name, spec in cls.settings().items()
                 if spec.paper is not None}
        alpha = paper_values.get("alpha", paper["alpha"])
        lam = paper_values.get("lam", paper["lam"])
        return {"alpha": per_example(alpha, SUMMED_WEIGHT, batch_size),
                "lam": lambda_per_example(alpha, lam, batch_size)}

    def __call__(self, batch):
        terms = base_terms(batch)
        prior_z = batch.sample_prior(tf.shape(batch.z)[0])
        terms["mmd"] = estimators.mmd(batch.z, prior_z, self.mmd_bandwidth_sq)
        terms["loss"] = (terms["reconstruction"] + (1.0 - self.alpha) * terms["kl"]
                         + (self.alpha + self.lam - 1.0) * terms["mmd"])
        return terms
