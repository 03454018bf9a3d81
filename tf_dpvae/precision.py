"""Compute precision of a model: float32, or mixed bfloat16 (bfloat16 compute, float32
variables).

Under ``mixed_bfloat16`` the encoder's and decoder's hidden layers (and FactorVAE's
discriminator's) compute in bfloat16, which CPUs with AVX512_BF16 (and GPUs, TPUs) run
faster; their output layers, the prior (flow, log-det), the KL, the likelihood, every
loss term and every metric stay float32: :func:`output_dtype` is the dtype of those
output layers, and the objective only sees float32 tensors. No loss scaling is needed
(bfloat16 has float32's exponent range).
"""

import contextlib

import keras

PRECISIONS = ("float32", "mixed_bfloat16")
# Largest difference an exported SavedModel may show against the eager Keras model
# (export/check_saved_model.py). Under bfloat16, eager and graph kernels round
# differently (the graph fuses bias and activation into the convolutions): on an MNIST
# β-dpVAE-H trained 15,000 steps, eager and graph decoder means differ by up to 2.1e-2
# (mean 1.2e-3) on a CPU with native AVX512_BF16 (AMD EPYC), while each is within
# 1.7e-2 of the same weights run in float32 — the difference is bfloat16's own error
# (3.4e-4 on an earlier machine). The sampling signatures must still match the
# in-memory graph exactly, which is what catches a wrong export.
_EXPORT_ATOL = {"float32": 1e-5, "mixed_bfloat16": 5e-2}


def check(name):
    if name not in PRECISIONS:
        raise ValueError(f"--precision={name!r}: expected one of {PRECISIONS}")
    return name


@contextlib.contextmanager
def policy(name):
    """Layers created inside compute in ``name``'s dtype (Keras's global dtype policy,
    restored on exit). ``float32`` leaves the current policy alone (float64 tests)."""
    check(name)
    if name == "float32":
        yield
        return
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def export_tolerance(name):
    """Max |SavedModel − eager Keras model| an export check allows at precision ``name``."""
    return _EXPORT_ATOL[check(name)]


def output_dtype():
    """The dtype of a network's output layer under the current policy: its variable
    dtype (float32 under a mixed policy, floatx otherwise)."""
    return keras.mixed_precision.global_policy().variable_dtype
