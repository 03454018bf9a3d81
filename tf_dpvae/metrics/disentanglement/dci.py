"""DCI: disentanglement, completeness and informativeness (Eastwood & Williams 2018),
disentanglement_lib's protocol:

* one scikit-learn ``GradientBoostingClassifier()`` (its defaults) per factor,
  predicting the factor from all code dimensions, trained on ``num_train`` = 10,000
  and tested on ``num_test`` = 5,000 other random observations (encoder means);
* R_ij = |feature importance| of code i for factor j (an [L, K] matrix);
* disentanglement D = Σ_i ρ_i (1 − H_K(P_i·)), P_ij = R_ij / Σ_k R_ik, the entropy in
  base K, ρ_i = Σ_j R_ij / Σ_ij R_ij;
* completeness C = Σ_j ρ̃_j (1 − H_L(P̃_·j)), P̃_ij = R_ij / Σ_l R_lj, base L,
  ρ̃_j = Σ_i R_ij / Σ_ij R_ij;
* informativeness: the classifiers' mean accuracy on the test (and train) codes —
  an accuracy, higher is better, as disentanglement_lib reports it (the DCI paper
  states the error). 1e-11 is added to R before the entropies, as there.
"""

import numpy as np

from tf_dpvae.metrics.disentanglement import base


def compute(data, represent, seed, num_train=10_000, num_test=5_000, batch_size=64):
    rng = np.random.default_rng(seed)
    train = base.sample_codes(data, represent, num_train, rng, batch_size)
    test = base.sample_codes(data, represent, num_test, rng, batch_size)
    return score(*train, *test, seed=seed) | {"protocol": {
        "num_train": num_train, "num_test": num_test, "representation": "encoder means",
        "classifier": "sklearn.ensemble.GradientBoostingClassifier() per factor "
                      "(defaults; random_state = seed)", "seed": seed,
        "scikit_learn": base.sklearn_version()}}


def score(codes, factors, test_codes, test_factors, seed=0):
    """{"dci_disentanglement", "dci_completeness", "dci_informativeness_test",
    "dci_informativeness_train", "importance_matrix" [L, K]} of given codes."""
    from sklearn import ensemble
    num_codes, num_factors = codes.shape[1], factors.shape[1]
    importance = np.zeros((num_codes, num_factors))
    train_accuracy, test_accuracy = [], []
    for j in range(num_factors):
        model = ensemble.GradientBoostingClassifier(random_state=seed)
        model.fit(codes, factors[:, j])
        importance[:, j] = np.abs(model.feature_importances_)
        train_accuracy.append(np.mean(model.predict(codes) == factors[:, j]))
        test_accuracy.append(np.mean(model.predict(test_codes) == test_factors[:, j]))
    return {"dci_disentanglement": disentanglement(importance),
            "dci_completeness": completeness(importance),
            "dci_informativeness_test": float(np.mean(test_accuracy)),
            "dci_informativeness_train": float(np.mean(train_accuracy)),
            "dci_informativeness_per_factor": [float(a) for a in test_accuracy],
            "importance_matrix": importance.tolist()}


def _entropy_rows(matrix, base_size):
    """Entropy (base ``base_size``) of each row of ``matrix`` normalised to sum 1."""
    p = matrix / matrix.sum(axis=1, keepdims=True)
    return -np.sum(p * np.log(p), axis=1) / np.log(base_size)


def disentanglement(importance):
    """D = Σ_i ρ_i (1 − H_K(P_i·)) (module docstring)."""
    importance = np.asarray(importance, np.float64)
    per_code = 1.0 - _entropy_rows(importance + 1e-11, importance.shape[1])
    weights = importance if importance.sum() > 0 else np.ones_like(importance)
    return float(np.sum(per_code * weights.sum(axis=1) / weights.sum()))


def completeness(importance):
    """C = Σ_j ρ̃_j (1 − H_L(P̃_·j)) (module docstring)."""
    importance = np.asarray(importance, np.float64)
    per_factor = 1.0 - _entropy_rows(importance.T + 1e-11, importance.shape[0])
    weights = importance if importance.sum() > 0 else np.ones_like(importance)
    return float(np.sum(per_factor * weights.sum(axis=0) / weights.sum()))
