"""Quality and diversity of samples apart: improved precision and recall
(Kynkäänniemi et al. 2019) and density and coverage (Naeem et al. 2020), on the same
features as FID.

With real features r_1 … r_N, generated features g_1 … g_M, B(x, ρ) the closed ball
of radius ρ around x, and NN_k(x, S) the distance from x to its k-th nearest
neighbour in S (x itself not counted when x ∈ S):

    precision = (1/M) Σ_j 1[∃ i : g_j ∈ B(r_i, NN_k(r_i, R))]     (k = 3)
    recall    = (1/N) Σ_i 1[∃ j : r_i ∈ B(g_j, NN_k(g_j, G))]     (k = 3)
    density   = (1/(k M)) Σ_j Σ_i 1[g_j ∈ B(r_i, NN_k(r_i, R))]   (k = 5)
    coverage  = (1/N) Σ_i 1[∃ j : g_j ∈ B(r_i, NN_k(r_i, R))]     (k = 5)

Precision: how many samples look real (quality); recall: how much of the real data
the samples reach (diversity); density counts how many real neighbourhoods each
sample falls in (≈ 1 for samples distributed like the data, robust to real outliers);
coverage: the share of real neighbourhoods that hold a sample. The k are the papers'.
The estimates depend on the set sizes (a larger set has smaller k-NN balls), so the
evaluation compares sets of equal size, as the papers do: the larger of the two is
subsampled (without replacement, seeded) to the size of the smaller, and both sizes
are stated in the results.

Distances are Euclidean, computed block by block (``block`` rows at a time) so that
memory stays O(block · max(N, M)).
"""

import numpy as np

from tf_dpvae.metrics import MetricUnavailableError
from tf_dpvae.metrics import fid as fid_lib

PRECISION_RECALL_K = 3
DENSITY_COVERAGE_K = 5


def _squared_distances(a, b):
    """[len(a), len(b)] squared Euclidean distances (clipped at 0 against round-off)."""
    d = (np.sum(a * a, axis=1)[:, None] + np.sum(b * b, axis=1)[None, :]
         - 2.0 * a @ b.T)
    return np.maximum(d, 0.0)


def kth_neighbour_radii(features, k, block=1024):
    """[N]: NN_k(x_i, X), the distance from each row to its k-th nearest other row."""
    x = fid_lib.as_features(features)
    if len(x) <= k:
        raise ValueError(f"k = {k} nearest neighbours need more than {k} rows; got "
                         f"{len(x)}")
    radii = np.empty(len(x))
    for start in range(0, len(x), block):
        d = _squared_distances(x[start:start + block], x)
        # The row itself is at distance 0: the k-th neighbour is the (k+1)-th smallest.
        radii[start:start + block] = np.sqrt(np.partition(d, k, axis=1)[:, k])
    return radii


def _inside_counts(points, centres, radii, block=1024):
    """[len(points)]: how many balls B(centre_i, radius_i) hold each point, and
    [len(centres)]: whether each ball holds at least one point."""
    counts = np.zeros(len(points), np.int64)
    hit = np.zeros(len(centres), bool)
    squared = radii ** 2
    for start in range(0, len(points), block):
        inside = _squared_distances(points[start:start + block], centres) <= squared[None]
        counts[start:start + block] = inside.sum(axis=1)
        hit |= inside.any(axis=0)
    return counts, hit


def scores(real, generated, k_pr=PRECISION_RECALL_K, k_dc=DENSITY_COVERAGE_K,
           block=1024):
    """{"precision", "recall", "density", "coverage"} of generated against real
    features (module docstring)."""
    real = fid_lib.as_features(real, "real features")
    generated = fid_lib.as_features(generated, "generated features")
    if real.shape[1] != generated.shape[1]:
        raise ValueError(f"feature sizes differ: {real.shape[1]} vs {generated.shape[1]}")
    real_pr = kth_neighbour_radii(real, k_pr, block)
    fake_pr = kth_neighbour_radii(generated, k_pr, block)
    real_dc = real_pr if k_dc == k_pr else kth_neighbour_radii(real, k_dc, block)
    in_real, _ = _inside_counts(generated, real, real_pr, block)
    in_fake, _ = _inside_counts(real, generated, fake_pr, block)
    density_counts, covered = _inside_counts(generated, real, real_dc, block)
    return {"precision": float(np.mean(in_real > 0)),
            "recall": float(np.mean(in_fake > 0)),
            "density": float(density_counts.sum() / (k_dc * len(generated))),
            "coverage": float(np.mean(covered))}


# ---------------------------------------------------------------------- evaluation
KEYS = ("precision", "recall", "density", "coverage")
LP_KEYS = tuple(f"{k}_lp" for k in KEYS)


def equal_sizes(real, generated, seed):
    """(real, generated) with the larger subsampled to the smaller's size (without
    replacement, from ``seed``)."""
    n = min(len(real), len(generated))
    rng = np.random.default_rng(seed)

    def cut(x):
        return x if len(x) == n else x[np.sort(rng.choice(len(x), n, replace=False))]
    return cut(real), cut(generated)


def compute(context):
    """The four scores of the random samples and of the LP samples, on FID's
    features, against the real test features (equal set sizes)."""
    size = min(len(context.real), context.options.num_samples)
    protocol = {"precision_recall_k": PRECISION_RECALL_K,
                "density_coverage_k": DENSITY_COVERAGE_K,
                "features": context.extractor.name, "distance": "Euclidean",
                "set_size": size, "num_real": len(context.real),
                "num_generated": context.options.num_samples,
                "subsampling": "the larger set to the smaller's size, without "
                               "replacement (seed: the evaluation's)"}
    context.results["manifold_protocol"] = protocol
    context.say(f"precision / recall / density / coverage ({protocol['features']})")
    for keys, features, reason in (
            (KEYS, lambda: context.generated_features, None),
            (LP_KEYS, lambda: context.low_posterior_features, lambda: context.lp_error)):
        try:
            found = features()
            if found is None:
                context.unavailable(reason(), *keys)
                continue
            values = scores(*equal_sizes(context.real_features, found,
                                         context.options.seed))
            context.results.update({key: values[plain] for key, plain in zip(keys, KEYS)})
        except MetricUnavailableError as error:
            context.unavailable(str(error), *keys)


def _register():
    from tf_dpvae.metrics.registry import MetricSpec, register
    register(MetricSpec(
        "precision_recall", compute, needs_features=True,
        scores=(("precision", "Precision"), ("recall", "Recall"), ("density", "Density"),
                ("coverage", "Coverage"), ("precision_lp", "Precision (LP)"),
                ("recall_lp", "Recall (LP)"), ("density_lp", "Density (LP)"),
                ("coverage_lp", "Coverage (LP)")),
        help="improved precision / recall (k = 3) and density / coverage (k = 5) of "
             "random and LP samples on FID's features"))


_register()
