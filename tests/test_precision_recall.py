"""Improved precision / recall and density / coverage (tf_dpvae/metrics/precision_recall)
against brute-force loops, a hand-computed 1-D example and known failure modes."""

import numpy as np
import pytest

from tf_dpvae.metrics import precision_recall as pr


def brute(real, fake, k_pr, k_dc):
    """The four definitions, one pair of points at a time."""
    def radius(points, i, k):
        d = sorted(np.linalg.norm(points[i] - points[j])
                   for j in range(len(points)) if j != i)
        return d[k - 1]

    def inside(x, c, r):
        return np.linalg.norm(x - c) <= r

    r_pr = [radius(real, i, k_pr) for i in range(len(real))]
    f_pr = [radius(fake, j, k_pr) for j in range(len(fake))]
    r_dc = [radius(real, i, k_dc) for i in range(len(real))]
    precision = np.mean([any(inside(g, real[i], r_pr[i]) for i in range(len(real)))
                         for g in fake])
    recall = np.mean([any(inside(r, fake[j], f_pr[j]) for j in range(len(fake)))
                      for r in real])
    density = sum(inside(g, real[i], r_dc[i]) for g in fake
                  for i in range(len(real))) / (k_dc * len(fake))
    coverage = np.mean([any(inside(g, real[i], r_dc[i]) for g in fake)
                        for i in range(len(real))])
    return {"precision": precision, "recall": recall, "density": density,
            "coverage": coverage}


def test_matches_brute_force_loops_with_small_blocks():
    rng = np.random.default_rng(0)
    real = rng.normal(size=(60, 3))
    fake = rng.normal(0.4, 1.3, size=(45, 3))
    got = pr.scores(real, fake, block=7)
    want = brute(real, fake, pr.PRECISION_RECALL_K, pr.DENSITY_COVERAGE_K)
    for key in want:
        assert got[key] == pytest.approx(want[key], abs=1e-12), key


def test_a_hand_computed_one_dimensional_example():
    # Real 0, 1, 2, 3: every 1-NN radius is 1. Fake 0.5 (inside the balls of 0 and 1)
    # and 5 (in none); the fakes' 1-NN radius is 4.5, reaching every real point.
    real = np.array([[0.0], [1.0], [2.0], [3.0]])
    fake = np.array([[0.5], [5.0]])
    assert pr.scores(real, fake, k_pr=1, k_dc=1) == {
        "precision": 0.5, "recall": 1.0, "density": 1.0, "coverage": 0.5}


def test_mode_dropping_lowers_recall_and_coverage_not_precision():
    rng = np.random.default_rng(1)
    modes = np.array([[-6.0, 0.0], [6.0, 0.0]])
    real = modes[rng.integers(2, size=2000)] + rng.normal(size=(2000, 2))
    one_mode = modes[0] + rng.normal(size=(2000, 2))
    both = modes[rng.integers(2, size=2000)] + rng.normal(size=(2000, 2))
    dropped, full = pr.scores(real, one_mode), pr.scores(real, both)
    assert dropped["precision"] > 0.95 and full["precision"] > 0.95
    assert dropped["recall"] == pytest.approx(0.5, abs=0.05)
    assert dropped["coverage"] == pytest.approx(0.5, abs=0.05)
    assert full["recall"] > 0.95 and full["coverage"] > 0.9
    assert full["density"] == pytest.approx(1.0, abs=0.1)


def test_samples_off_the_data_have_no_precision_or_density():
    rng = np.random.default_rng(2)
    real = rng.normal(size=(500, 4))
    off = rng.normal(size=(500, 4)) + 10.0
    result = pr.scores(real, off)
    assert result["precision"] == 0.0 and result["density"] == 0.0
    assert result["coverage"] == 0.0 and result["recall"] == 0.0


def test_bad_input():
    with pytest.raises(ValueError, match="feature sizes differ"):
        pr.scores(np.zeros((10, 2)), np.zeros((10, 3)))
    with pytest.raises(ValueError, match="nearest neighbours"):
        pr.kth_neighbour_radii(np.zeros((3, 2)), 3)


def test_equal_sizes_subsamples_the_larger_set_only():
    real, fake = np.arange(10.0)[:, None], np.arange(100.0, 130.0)[:, None]
    r, f = pr.equal_sizes(real, fake, seed=0)
    assert r is real and len(f) == 10 and set(f.ravel()) <= set(fake.ravel())
    assert len(set(f.ravel())) == 10                      # without replacement
    r2, f2 = pr.equal_sizes(fake, real, seed=0)
    assert f2 is real and len(r2) == 10
    np.testing.assert_array_equal(pr.equal_sizes(real, fake, seed=0)[1], f)
