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


def output_dtype():
    """The dtype of a network's output layer under the current policy: its variable
    dtype (float32 under a mixed policy, floatx otherwise)."""
    return keras.mixed_precision.global_policy().variable_dtype
