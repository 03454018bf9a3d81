"""β-VAE with controlled capacity (Burgess et al. 2018)."""

import dataclasses

import tensorflow as tf

from tf_dpvae.objectives.base import (SUMMED_TARGET, SUMMED_WEIGHT, Objective, base_terms,
                                      register, setting)


@register
@dataclasses.dataclass
class BetaVAEB(Objective):
    """loss = −E log p(x|z) + γ · |mean_b KL_b − C(t)|, C(t) = min(C_max, C_max · t / C_stop),
    t the optimizer step.

    The official batch loss is Σ_b rec_b + γ · |Σ_b KL_b − C| with C_max = 25 for the
    batch sum, so per example C_max = 25 / B (0.25 nats at B = 100) while γ stays.
    """

    gamma: float = setting("capacity_gamma", "γ, the weight of |KL − C|", paper=15.0,
                           applied_to=SUMMED_WEIGHT, search=(1.0, 100.0, "log"),
                           lower_bound=0)
    capacity_max: float = setting(
        "capacity_max", "C_max in nats per example (Table 2's 25 for the batch-summed KL, "
        "i.e. 25 / B)", paper=25.0, applied_to=SUMMED_TARGET, search=(0.01, 5.0, "log"),
        lower_bound=0)
    capacity_stop_steps: int = setting("capacity_stop_steps", "steps until C reaches C_max",
                                       kind=int, default=100_000, lower_bound=1,
                                       scales_with_steps=True)
    name = "beta_b"
    DISPLAY = ("β-VAE-B", "β-dpVAE-B")
    SCHEDULES = ("capacity",)
    PAPER_TABLE1_MNIST = ((130.8, 163.6, 2.74, 3.11), (113.3, 114.1, 1.32, 2.80))

    def capacity(self, step, dtype=tf.float32):
        step = tf.cast(step, dtype)
        return tf.minimum(self.capacity_max,
                          self.capacity_max * step / float(self.capacity_stop_steps))

    def __call__(self, batch):
        terms = base_terms(batch)
        capacity = self.capacity(batch.step, batch.kl.dtype)
        terms["capacity"] = capacity
        terms["loss"] = terms["reconstruction"] + self.gamma * tf.abs(terms["kl"] - capacity)
        return terms
