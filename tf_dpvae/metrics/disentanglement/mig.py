"""Mutual information gap (Chen et al. 2018), disentanglement_lib's protocol:

    MIG = (1/K) Σ_k [I(v_(1); f_k) − I(v_(2); f_k)] / H(f_k),

v_(1), v_(2) the code dimensions with the largest and second largest mutual
information with factor f_k; codes discretised per dimension into ``num_bins`` = 20
equal-width bins (:func:`~.base.histogram_discretize`), ``num_train`` = 10,000 random
observations, represented by the encoder means.
"""

import numpy as np

from tf_dpvae.metrics.disentanglement import base


def compute(data, represent, seed, num_train=10_000, num_bins=20, batch_size=64):
    rng = np.random.default_rng(seed)
    codes, factors = base.sample_codes(data, represent, num_train, rng, batch_size)
    return score(codes, factors, num_bins) | {"protocol": {
        "num_train": num_train, "num_bins": num_bins, "discretisation":
        "per-dimension equal-width histogram (np.histogram edges, np.digitize)",
        "representation": "encoder means", "seed": seed,
        "mutual_information": "from joint counts, nats (own code)"}}


def score(codes, factors, num_bins=20):
    """MIG of given codes and factors: {"mig", "mig_per_factor",
    "mutual_information" [L, K], "factor_entropy" [K]}."""
    discrete = base.histogram_discretize(codes, num_bins)
    mi = base.mutual_information_matrix(discrete, np.asarray(factors))
    entropies = np.array([base.entropy(factors[:, j]) for j in range(factors.shape[1])])
    per_factor = base.top_two_gap(mi) / entropies
    return {"mig": float(np.mean(per_factor)), "mig_per_factor": per_factor.tolist(),
            "mutual_information": mi.tolist(), "factor_entropy": entropies.tolist()}
