"""Disentanglement metrics (tf_dpvae/metrics/disentanglement/) against independent
answers: a code that is the factors scores ≈ 1, a rotation of it scores low, a code
that ignores a factor scores 0 for that factor, MIG by brute-force enumeration on a
tiny discrete example, mutual information against scikit-learn, DCI's D and C
against closed forms and scipy's entropy."""

import collections
import itertools
import math

import numpy as np
import pytest

from tf_dpvae.metrics.disentanglement import base, dci, factor_vae, mig, sap

SIZES = (4, 5, 6, 3)


class Grid:
    """Four independent uniform factors; the observation is the factor row itself."""

    factor_names = ("a", "b", "c", "d")
    factor_sizes = SIZES

    def sample_factors(self, num, rng):
        return np.stack([rng.integers(s, size=num) for s in SIZES], axis=1)

    def observations(self, factors):
        return np.asarray(factors, np.float64)


def scaled(f):
    return 2.0 * f / (np.array(SIZES) - 1.0) - 1.0


def perfect(x):
    """Each code dimension is one factor (plus a little noise)."""
    return scaled(x) + 1e-3 * np.random.default_rng(int(x.sum()) % 1000).normal(
        size=x.shape)


# A Hadamard rotation (every entry ±1/2): each code dimension mixes all four factors
# equally, so fixing any factor lowers every dimension's variance alike.
ROTATION = 0.5 * np.array([[1.0, 1.0, 1.0, 1.0], [1.0, -1.0, 1.0, -1.0],
                           [1.0, 1.0, -1.0, -1.0], [1.0, -1.0, -1.0, 1.0]])


def rotated(x):
    return perfect(x) @ ROTATION


def ignores_c(x):
    """Codes a, b and d, and a dimension of pure noise in place of c."""
    noise = np.random.default_rng(int(x.sum()) % 997).normal(size=len(x))
    z = scaled(x)
    return np.stack([z[:, 0], z[:, 1], noise, z[:, 3]], axis=1)


def test_mutual_information_is_scikit_learns():
    from sklearn.metrics import mutual_info_score
    rng = np.random.default_rng(0)
    a = rng.integers(5, size=3000)
    b = (a + rng.integers(3, size=3000)) % 7
    assert base.mutual_information(a, b) == pytest.approx(mutual_info_score(a, b),
                                                          abs=1e-12)
    assert base.entropy(a) == pytest.approx(mutual_info_score(a, a), abs=1e-12)


def _brute_force_mi(x, y):
    n = len(x)
    joint, px, py = collections.Counter(zip(x, y)), collections.Counter(x), \
        collections.Counter(y)
    return sum(c / n * math.log((c / n) / (px[i] / n * py[j] / n))
               for (i, j), c in joint.items())


def test_mig_matches_brute_force_enumeration_on_a_tiny_discrete_example():
    # Every combination of two factors (sizes 2 and 3) once: codes already discrete
    # (two values per dimension, so 20-bin discretisation keeps them apart).
    factors = np.array(list(itertools.product(range(2), range(3))))
    codes = np.stack([factors[:, 0], (factors[:, 1] > 0), factors[:, 1] == 2], 1)
    codes = codes.astype(np.float64)
    discrete = base.histogram_discretize(codes, 20)
    mi = [[_brute_force_mi(list(discrete[:, i]), list(factors[:, j])) for j in range(2)]
          for i in range(3)]
    entropies = [_brute_force_mi(list(factors[:, j]), list(factors[:, j]))
                 for j in range(2)]
    expected = np.mean([(sorted(col)[-1] - sorted(col)[-2]) / h
                        for col, h in zip(np.array(mi).T, entropies)])
    result = mig.score(codes, factors)
    assert result["mig"] == pytest.approx(expected, abs=1e-12)
    np.testing.assert_allclose(result["mutual_information"], mi, atol=1e-12)
    # factor 0 (two values) is coded exactly by dimension 0 and by nothing else
    assert result["mig_per_factor"][0] == pytest.approx(1.0)


def test_mig_perfect_rotated_and_ignored():
    good = mig.compute(Grid(), perfect, seed=0, num_train=4000)
    bad = mig.compute(Grid(), rotated, seed=0, num_train=4000)
    partial = mig.compute(Grid(), ignores_c, seed=0, num_train=4000)
    assert good["mig"] > 0.95
    assert bad["mig"] < 0.3
    assert partial["mig_per_factor"][2] < 0.01
    assert min(np.delete(partial["mig_per_factor"], 2)) > 0.95
    assert good["protocol"]["num_bins"] == 20


def test_dci_closed_forms():
    assert dci.disentanglement(np.eye(3)) == pytest.approx(1.0, abs=1e-6)
    assert dci.completeness(np.eye(3)) == pytest.approx(1.0, abs=1e-6)
    assert dci.disentanglement(np.ones((3, 3))) == pytest.approx(0.0, abs=1e-6)
    assert dci.completeness(np.ones((3, 3))) == pytest.approx(0.0, abs=1e-6)
    # One code for two factors: completeness 1 (each factor in one code), the code
    # splits its importance between 2 of 2 factors: disentanglement 0.
    assert dci.disentanglement(np.array([[1.0, 1.0], [0.0, 0.0]])) == pytest.approx(
        0.0, abs=1e-6)
    assert dci.completeness(np.array([[1.0, 1.0], [0.0, 0.0]])) == pytest.approx(
        1.0, abs=1e-6)


def test_dci_matches_scipys_entropy_on_an_arbitrary_matrix():
    from scipy import stats
    r = np.random.default_rng(3).uniform(size=(4, 3))
    per_code = 1 - stats.entropy(r.T + 1e-11, base=3)
    per_factor = 1 - stats.entropy(r + 1e-11, base=4)
    assert dci.disentanglement(r) == pytest.approx(
        np.sum(per_code * r.sum(1) / r.sum()), abs=1e-9)
    assert dci.completeness(r) == pytest.approx(
        np.sum(per_factor * r.sum(0) / r.sum()), abs=1e-9)


def test_dci_perfect_rotated_and_ignored():
    sizes = dict(num_train=1500, num_test=800)
    good = dci.compute(Grid(), perfect, seed=0, **sizes)
    bad = dci.compute(Grid(), rotated, seed=0, **sizes)
    partial = dci.compute(Grid(), ignores_c, seed=0, **sizes)
    assert good["dci_disentanglement"] > 0.9 and good["dci_completeness"] > 0.9
    assert good["dci_informativeness_test"] > 0.99
    assert bad["dci_disentanglement"] < 0.5 and bad["dci_completeness"] < 0.5
    # factor c is unpredictable: the test accuracy is (3 + 1/6) / 4 at best
    assert partial["dci_informativeness_test"] < (3 + 1 / 6) / 4 + 0.03
    assert partial["dci_informativeness_per_factor"][2] < 1 / 6 + 0.05


def test_factor_vae_score_perfect_rotated_and_ignored():
    sizes = dict(num_train=300, num_eval=200, num_variance_estimate=2000)
    good = factor_vae.compute(Grid(), perfect, seed=0, **sizes)
    bad = factor_vae.compute(Grid(), rotated, seed=0, **sizes)
    partial = factor_vae.compute(Grid(), ignores_c, seed=0, **sizes)
    assert good["factor_vae_score"] == pytest.approx(1.0)
    assert bad["factor_vae_score"] < 0.5
    # A vote for c finds every dimension varying: it lands on any of the four at
    # random; only the noise dimension (whose majority is c) counts it right, so c's
    # accuracy is chance (1/4) and the score (3 + 1/4) / 4 = 13/16.
    per_factor = partial["factor_vae_accuracy_per_factor"]
    assert per_factor[:2] + per_factor[3:] == [1.0, 1.0, 1.0]
    assert per_factor[2] < 0.4
    assert partial["factor_vae_score"] < 13 / 16 + 0.05
    assert good["num_active_dims"] == 4


def test_factor_vae_votes_match_one_encoder_call_per_vote():
    """The batched votes are the protocol's votes: the same draws, one vote at a time
    (a reference loop written here), give the same counts."""
    def represent(x):  # row-wise, so chunking cannot change a code
        return np.tanh(scaled(x) @ ROTATION[:, :3]) + 0.05 * np.cos(7 * scaled(x)[:, :3])

    variances = np.array([0.5, 0.2, 0.3])
    active = np.array([True, False, True])
    expected = np.zeros((len(SIZES), 3), np.int64)
    rng = np.random.default_rng(5)
    for _ in range(150):
        k = int(rng.integers(len(SIZES)))
        factors = Grid().sample_factors(32, rng)
        factors[:, k] = factors[0, k]
        ratio = np.var(represent(factors), axis=0, ddof=1)[active] / variances[active]
        expected[k, np.flatnonzero(active)[np.argmin(ratio)]] += 1
    got = factor_vae.votes(Grid(), represent, np.random.default_rng(5), 150, 32,
                           variances, active)
    np.testing.assert_array_equal(got, expected)
    assert got[:, 1].sum() == 0


def test_sample_codes_do_not_depend_on_the_encoding_chunk(monkeypatch):
    codes, factors = base.sample_codes(Grid(), scaled, 1000, np.random.default_rng(2), 64)
    monkeypatch.setattr(base, "ENCODE_CHUNK", 7)
    codes7, factors7 = base.sample_codes(Grid(), scaled, 1000, np.random.default_rng(2), 64)
    np.testing.assert_array_equal(factors, factors7)
    np.testing.assert_array_equal(codes, codes7)
    np.testing.assert_allclose(codes, scaled(factors))


def test_factor_vae_score_without_active_dimensions_is_zero():
    result = factor_vae.compute(Grid(), lambda x: np.zeros((len(x), 2)), seed=0,
                                num_train=5, num_eval=5, num_variance_estimate=100,
                                prune_threshold=1e-3)
    assert result["factor_vae_score"] == 0.0 and result["num_active_dims"] == 0


def test_sap_perfect_rotated_and_ignored():
    sizes = dict(num_train=1500, num_test=800)
    good = sap.compute(Grid(), perfect, seed=0, **sizes)
    bad = sap.compute(Grid(), rotated, seed=0, **sizes)
    partial = sap.compute(Grid(), ignores_c, seed=0, **sizes)
    assert good["sap"] > 0.3 > bad["sap"]
    assert partial["sap_per_factor"][2] < 0.05
    assert good["protocol"]["scikit_learn"]


def test_encoding_each_distinct_observation_once_changes_no_score():
    from tf_dpvae.metrics import factors

    calls = []

    def represent(x):  # row-wise and deterministic, as encoder means are
        calls.append(len(x))
        return np.tanh(scaled(x) @ ROTATION) + 0.3 * scaled(x) ** 2

    sizes = dict(num_train=600, num_test=300)
    direct = {"mig": mig.compute(Grid(), represent, 4, num_train=600),
              "dci": dci.compute(Grid(), represent, 4, **sizes),
              "sap": sap.compute(Grid(), represent, 4, **sizes),
              "fvae": factor_vae.compute(Grid(), represent, 4, num_train=300, num_eval=200,
                                         num_variance_estimate=600)}
    direct_rows = sum(calls)
    calls.clear()
    once = factors.EncodedOnce(Grid(), represent, chunk=50)
    cached = {"mig": mig.compute(once, once.represent, 4, num_train=600),
              "dci": dci.compute(once, once.represent, 4, **sizes),
              "sap": sap.compute(once, once.represent, 4, **sizes),
              "fvae": factor_vae.compute(once, once.represent, 4, num_train=300,
                                         num_eval=200, num_variance_estimate=600)}
    assert cached == direct
    assert sum(calls) == once.encoded <= int(np.prod(SIZES)) < direct_rows / 50
