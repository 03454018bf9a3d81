"""The plain VAE (Kingma & Welling 2014)."""

import dataclasses

from tf_dpvae.objectives.base import Objective, base_terms, register


@register
@dataclasses.dataclass
class VAE(Objective):
    """loss = −E log p(x|z) + KL."""

    name = "vae"
    DISPLAY = ("VAE", "dpVAE")
    PAPER_TABLE1_MNIST = ((137.4, 165.0, 1.26, 3.56), (129.0, 153.1, 0.88, 3.53))

    def __call__(self, batch):
        terms = base_terms(batch)
        terms["loss"] = terms["reconstruction"] + terms["kl"]
        return terms
