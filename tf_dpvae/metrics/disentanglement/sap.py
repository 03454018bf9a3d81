"""Separated attribute predictability (Kumar et al. 2018), disentanglement_lib's
protocol for discrete factors:

    S_ij = test accuracy of a linear classifier predicting factor j from code
           dimension i alone,   SAP = (1/K) Σ_j [S_(1)j − S_(2)j],

the classifier scikit-learn's ``LinearSVC(C=0.01, class_weight="balanced")``,
trained on ``num_train`` = 10,000 and tested on ``num_test`` = 5,000 other random
observations (encoder means). A code dimension that is constant gets accuracy 0 (as
disentanglement_lib, which skips it).
"""

import numpy as np

from tf_dpvae.metrics.disentanglement import base


def compute(data, represent, seed, num_train=10_000, num_test=5_000, batch_size=64):
    rng = np.random.default_rng(seed)
    train = base.sample_codes(data, represent, num_train, rng, batch_size)
    test = base.sample_codes(data, represent, num_test, rng, batch_size)
    return score(*train, *test) | {"protocol": {
        "num_train": num_train, "num_test": num_test, "representation": "encoder means",
        "classifier": "sklearn.svm.LinearSVC(C=0.01, class_weight='balanced') on one "
                      "code dimension", "seed": seed,
        "scikit_learn": base.sklearn_version()}}


def score(codes, factors, test_codes, test_factors):
    """{"sap", "sap_per_factor", "score_matrix" [L, K]} of given codes."""
    import warnings

    from sklearn import svm
    from sklearn.exceptions import ConvergenceWarning
    num_codes, num_factors = codes.shape[1], factors.shape[1]
    matrix = np.zeros((num_codes, num_factors))
    for i in range(num_codes):
        if np.var(codes[:, i]) == 0:
            continue
        for j in range(num_factors):
            classifier = svm.LinearSVC(C=0.01, class_weight="balanced")
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ConvergenceWarning)
                classifier.fit(codes[:, i:i + 1], factors[:, j])
            matrix[i, j] = np.mean(classifier.predict(test_codes[:, i:i + 1])
                                   == test_factors[:, j])
    per_factor = base.top_two_gap(matrix)
    return {"sap": float(np.mean(per_factor)), "sap_per_factor": per_factor.tolist(),
            "score_matrix": matrix.tolist()}
