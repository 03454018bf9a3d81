"""tf_dpvae.convergence.knee against closed forms."""

import math

import numpy as np
import pytest

from tf_dpvae import convergence


def test_exponential_decay_knee_is_the_closed_form():
    """L(s) = c + a e^{−s/T}: the best loss within W of s is L(s + W), and the rule
    fires at the first s with a e^{−s/T} (1 − e^{−W/T}) ≤ τ (c + a e^{−s/T}):
    e^{−s/T} ≤ τ c / (a (1 − e^{−W/T}) − τ a)."""
    c, a, T, W, tau = 100.0, 50.0, 8000.0, 10_000, 0.0025
    steps = np.arange(0, 200_001, 500)
    losses = c + a * np.exp(-steps / T)
    exact = -T * math.log(tau * c / (a * (1 - math.exp(-W / T)) - tau * a))
    expected = int(steps[np.searchsorted(steps, exact)])   # first observed s ≥ exact
    assert convergence.knee(steps, losses, W, tau) == expected
    # A brute-force reading of the definition agrees.
    brute = next(int(s) for s, loss in zip(steps, losses)
                 if s + W <= steps[-1]
                 and losses[(steps > s) & (steps <= s + W)].min() >= loss - tau * abs(loss))
    assert brute == expected


def test_no_knee_before_a_whole_window_is_observed():
    steps = np.arange(0, 9_001, 500)
    assert convergence.knee(steps, np.full(len(steps), 5.0), 10_000, 0.01) is None
    steps = np.arange(0, 10_001, 500)
    assert convergence.knee(steps, np.full(len(steps), 5.0), 10_000, 0.01) == 0


def test_a_still_falling_curve_has_no_knee_and_a_late_dip_postpones_it():
    steps = np.arange(0, 50_001, 1000)
    assert convergence.knee(steps, 100.0 - steps / 1000.0, 10_000, 0.001) is None
    flat = np.full(len(steps), 100.0)
    flat[steps == 15_000] = 90.0                           # one dip of 10 %
    # Every step before 15,000 sees the dip within its window of 20,000.
    assert convergence.knee(steps, flat, 20_000, 0.01) == 15_000
    assert convergence.knee(steps[:25], flat[:25], 20_000, 0.01) is None


def test_non_finite_losses_never_qualify():
    steps = np.arange(0, 30_001, 1000)
    losses = np.full(len(steps), 3.0)
    losses[5] = np.nan
    assert convergence.knee(steps, losses, 10_000, 0.01) == 5_000 + 1000


def test_bad_input():
    with pytest.raises(ValueError):
        convergence.knee([0, 1], [1.0], 1, 0.1)
    with pytest.raises(ValueError):
        convergence.knee([0, 0], [1.0, 1.0], 1, 0.1)
    with pytest.raises(ValueError):
        convergence.knee([0, 1], [1.0, 1.0], 0, 0.1)


def test_round_up():
    assert convergence.round_up(40_500, 5000) == 45_000
    assert convergence.round_up(45_000, 5000) == 45_000
