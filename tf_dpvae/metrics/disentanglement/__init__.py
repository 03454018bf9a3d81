"""Disentanglement metrics on data with known factors of variation, following the
protocols of google-research/disentanglement_lib (Locatello et al. 2019), each in one
module with one signature::

    result = module.compute(data, represent, seed, **protocol)

* ``data``: a :class:`~.base.FactorData` — ``factor_names``, ``factor_sizes``,
  ``sample_factors(n, rng)`` (int [n, K]) and ``observations(factors)``;
* ``represent(observations) -> [n, L]``: the representation scored — the encoder
  **means** (disentanglement_lib's ``mean`` postprocessing; scoring samples of q(z|x)
  instead is a known source of wrong MIGs);
* ``seed``: every draw comes from ``numpy.random.default_rng(seed)``;
* the protocol's sizes as keyword arguments, their defaults disentanglement_lib's.

Each returns a dict: the score(s), the per-factor parts, and ``"protocol"`` — every
choice made (sample counts, bins, classifier and its settings, scikit-learn's
version), to be written into metrics.json beside the number.

Modules: :mod:`.mig` (mutual information gap), :mod:`.dci` (disentanglement,
completeness, informativeness with gradient-boosted trees), :mod:`.factor_vae`
(the FactorVAE score's variance-normalised majority vote), :mod:`.sap` (separated
attribute predictability with linear classifiers). :mod:`.base` holds what they share
(sampling codes with their factors, discretisation, discrete entropy and mutual
information).
"""

from tf_dpvae.metrics.disentanglement import dci, factor_vae, mig, sap
from tf_dpvae.metrics.disentanglement.base import FactorData

METRICS = {"mig": mig, "dci": dci, "factor_vae_score": factor_vae, "sap": sap}

__all__ = ["METRICS", "FactorData", "mig", "dci", "factor_vae", "sap"]
