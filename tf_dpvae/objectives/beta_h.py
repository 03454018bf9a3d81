"""β-VAE (Higgins et al. 2017)."""

import dataclasses

from tf_dpvae.objectives.base import (SUMMED_WEIGHT, Objective, base_terms, register,
                                      setting)


@register
@dataclasses.dataclass
class BetaVAEH(Objective):
    """loss = −E log p(x|z) + β · KL.

    Official batch loss: Σ_b rec_b + β Σ_b KL_b, so β stays (Table 2: β = 4).
    """

    beta: float = setting("beta", "KL weight β", paper=4.0, applied_to=SUMMED_WEIGHT,
                          search=(0.5, 16.0, "log"), lower_bound=0)
    name = "beta_h"
    DISPLAY = ("β-VAE-H", "β-dpVAE-H")
    PAPER_TABLE1_MNIST = ((144.2, 163.1, 4.49, 4.12), (127.1, 127.4, 1.07, 2.98))

    def __call__(self, batch):
        terms = base_terms(batch)
        terms["loss"] = terms["reconstruction"] + self.beta * terms["kl"]
        return terms
