"""The FactorVAE score (Kim & Mnih 2018), disentanglement_lib's protocol:

1. the global variance s_d² of each code dimension over ``num_variance_estimate`` =
   10,000 random observations (ddof = 1); dimensions with s_d < ``prune_threshold``
   are inactive (disentanglement_lib's threshold is 0: every dimension is active);
2. a vote: pick a factor k uniformly, draw ``batch_size`` = 64 observations that share
   a random value of factor k (the other factors random), and vote (k, d*) with
   d* = argmin over active d of Var_batch(z_d) / s_d² (ddof = 1);
3. ``num_train`` = 10,000 votes train the majority-vote classifier: each dimension
   predicts the factor it was voted for most; ``num_eval`` = 5,000 new votes test it.

The score is the classifier's accuracy on the eval votes (the train accuracy, and the
accuracy on each factor's votes, are reported too). With no active dimension the score
is 0.
"""

import numpy as np

from tf_dpvae.metrics.disentanglement import base


def compute(data, represent, seed, num_train=10_000, num_eval=5_000,
            num_variance_estimate=10_000, batch_size=64, prune_threshold=0.0):
    rng = np.random.default_rng(seed)
    codes, _ = base.sample_codes(data, represent, num_variance_estimate, rng, batch_size)
    variances = np.var(codes, axis=0, ddof=1)
    active = np.sqrt(variances) >= prune_threshold
    protocol = {"num_train": num_train, "num_eval": num_eval,
                "num_variance_estimate": num_variance_estimate,
                "batch_size": batch_size, "prune_threshold": prune_threshold,
                "representation": "encoder means", "seed": seed}
    if not active.any():
        return {"factor_vae_score": 0.0, "factor_vae_train_accuracy": 0.0,
                "num_active_dims": 0, "protocol": protocol}
    train_votes = votes(data, represent, rng, num_train, batch_size, variances, active)
    classifier = np.argmax(train_votes, axis=0)            # factor of each dimension
    eval_votes = votes(data, represent, rng, num_eval, batch_size, variances, active)
    return {"factor_vae_score": accuracy(eval_votes, classifier),
            "factor_vae_train_accuracy": accuracy(train_votes, classifier),
            "factor_vae_accuracy_per_factor": accuracy_per_factor(eval_votes, classifier),
            "num_active_dims": int(active.sum()), "votes": train_votes.tolist(),
            "protocol": protocol}


def draw_vote(data, rng, batch_size):
    """The factor k of one vote and the ``batch_size`` factor rows sharing a random
    value of k (module docstring, step 2), drawn as disentanglement_lib does."""
    k = int(rng.integers(len(data.factor_sizes)))
    factors = np.array(data.sample_factors(batch_size, rng))
    factors[:, k] = factors[0, k]
    return k, factors


def votes(data, represent, rng, num, batch_size, variances, active):
    """[K, L] counts of ``num`` votes (k, d*), d* = argmin over active d of
    Var_batch(z_d) / s_d². All votes are drawn first, then encoded in large chunks:
    the same draws and counts as one encoder call per vote, without its overhead."""
    drawn = [draw_vote(data, rng, batch_size) for _ in range(num)]
    codes = base.encode(data, represent, np.concatenate([f for _, f in drawn]))
    codes = codes.reshape(num, batch_size, -1)
    ratio = np.var(codes, axis=1, ddof=1)[:, active] / variances[active]
    dims = np.flatnonzero(active)[np.argmin(ratio, axis=1)]
    counts = np.zeros((len(data.factor_sizes), len(variances)), np.int64)
    np.add.at(counts, (np.array([k for k, _ in drawn]), dims), 1)
    return counts


def accuracy_per_factor(counts, classifier):
    """For each factor: the share of its votes cast on a dimension that predicts it
    (None for a factor without votes)."""
    out = []
    for k in range(counts.shape[0]):
        total = counts[k].sum()
        out.append(float(counts[k, classifier == k].sum() / total) if total else None)
    return out


def accuracy(counts, classifier):
    """The share of votes whose dimension's majority factor is the voted factor."""
    return float(counts[classifier, np.arange(counts.shape[1])].sum() / counts.sum())
