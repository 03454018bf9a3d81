"""When has a loss curve flattened? The rule that sets the study's ``long`` budget.

Given a curve L(s) observed at steps s_0 < s_1 < …, a window W and a relative
tolerance τ, the knee is the first observed step s such that training W more steps
improves the loss by less than τ of its size:

    knee = min { s : s + W ≤ s_last  and  min_{s < s' ≤ s + W} L(s') ≥ L(s) − τ |L(s)| }

It is None while no step qualifies (in particular before s_0 + W has been observed).
Noise can only make the rule fire later, never earlier than a flat stretch of length W
allows: a dip of more than τ|L(s)| anywhere in the window postpones it.
"""

import math

import numpy as np


def knee(steps, losses, window, tolerance):
    """The first step s after which the next ``window`` steps improve the loss by less
    than ``tolerance`` · |L(s)| (module docstring); None if none is observed yet."""
    steps = np.asarray(steps, np.int64)
    losses = np.asarray(losses, np.float64)
    if steps.shape != losses.shape or steps.ndim != 1:
        raise ValueError(f"steps {steps.shape} and losses {losses.shape}: expected two "
                         "1-D arrays of one length")
    if window <= 0 or tolerance < 0:
        raise ValueError(f"window {window} must be > 0 and tolerance {tolerance} ≥ 0")
    if len(steps) and np.any(np.diff(steps) <= 0):
        raise ValueError("steps must increase")
    finite = np.isfinite(losses)
    for i, (step, loss) in enumerate(zip(steps, losses)):
        if step + window > steps[-1]:
            return None
        if not finite[i]:
            continue
        ahead = (steps > step) & (steps <= step + window)
        if not np.all(finite[ahead]):
            continue
        if losses[ahead].min() >= loss - tolerance * abs(loss):
            return int(step)
    return None


def round_up(steps, multiple):
    """``steps`` rounded up to a multiple of ``multiple``."""
    return int(math.ceil(steps / multiple) * multiple)
