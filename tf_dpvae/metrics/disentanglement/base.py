"""What the disentanglement metrics share: the data interface, codes sampled with
their factors, histogram discretisation, and discrete entropy / mutual information.

Discrete mutual information is computed from the joint counts (natural log):

    I(a; b) = Σ_{i,j} p(i, j) log [p(i, j) / (p(i) p(j))],   H(a) = I(a; a),

the quantity scikit-learn's ``mutual_info_score`` returns, which disentanglement_lib
calls; ours is written out so that it does not depend on the scikit-learn version.
"""

from typing import Protocol

import numpy as np


class FactorData(Protocol):
    """Observations generated from known discrete factors."""

    factor_names: tuple
    factor_sizes: tuple

    def sample_factors(self, num, rng):
        """int [num, K]: factor indices drawn uniformly over the grid."""

    def observations(self, factors):
        """The observations (e.g. images [num, H, W, C]) of factor index rows."""


ENCODE_CHUNK = 4096


def sample_codes(data, represent, num, rng, batch_size=64):
    """(codes [num, L] float64, factors [num, K] int): ``num`` random factor rows and
    the representation of their observations. The factors are drawn ``batch_size``
    at a time, in disentanglement_lib's order (``generate_batch_factor_code``), so the
    draws do not depend on how the encoding is chunked."""
    factors = np.concatenate([np.asarray(data.sample_factors(min(batch_size, num - s), rng))
                              for s in range(0, num, batch_size)])
    return encode(data, represent, factors), factors


def encode(data, represent, factors):
    """float64 [n, L]: the representation of the observations of factor rows,
    ``ENCODE_CHUNK`` rows per call (one call per small batch is all overhead)."""
    factors = np.asarray(factors)
    return np.concatenate([np.asarray(represent(data.observations(factors[s:s + ENCODE_CHUNK])),
                                      np.float64)
                           for s in range(0, len(factors), ENCODE_CHUNK)])


def histogram_discretize(codes, num_bins=20):
    """Each code dimension cut into ``num_bins`` equal-width bins over its own range
    (disentanglement_lib's ``_histogram_discretize``: ``np.digitize`` on the bin edges
    of ``np.histogram`` without the last edge, so values are 1 … num_bins)."""
    codes = np.asarray(codes, np.float64)
    out = np.zeros(codes.shape, np.int64)
    for i in range(codes.shape[1]):
        edges = np.histogram(codes[:, i], num_bins)[1][:-1]
        out[:, i] = np.digitize(codes[:, i], edges)
    return out


def mutual_information(a, b):
    """I(a; b) in nats of two discrete sequences (module docstring)."""
    a = np.unique(np.asarray(a), return_inverse=True)[1].ravel()
    b = np.unique(np.asarray(b), return_inverse=True)[1].ravel()
    joint = np.zeros((a.max() + 1, b.max() + 1))
    np.add.at(joint, (a, b), 1.0)
    joint /= joint.sum()
    outer = joint.sum(1, keepdims=True) * joint.sum(0, keepdims=True)
    nz = joint > 0
    return float(np.sum(joint[nz] * np.log(joint[nz] / outer[nz])))


def entropy(a):
    """H(a) = I(a; a) in nats."""
    return mutual_information(a, a)


def mutual_information_matrix(discrete_codes, factors):
    """[L, K]: I(code_i; factor_j)."""
    return np.array([[mutual_information(discrete_codes[:, i], factors[:, j])
                      for j in range(factors.shape[1])]
                     for i in range(discrete_codes.shape[1])])


def top_two_gap(matrix):
    """Per column: the largest entry minus the second largest (0 for one row)."""
    ordered = np.sort(np.asarray(matrix, np.float64), axis=0)[::-1]
    if ordered.shape[0] < 2:
        return ordered[0]
    return ordered[0] - ordered[1]


def sklearn_version():
    import sklearn
    return sklearn.__version__
