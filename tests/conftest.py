"""Shared pytest setup: quiet TensorFlow logs and a float64 Keras fixture."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def float64():
    """Build layers inside this fixture to get float64 variables; restores float32.

    Keras 3 caches its global dtype policy when the first layer is built, so setting
    floatx alone is not enough: set (and restore) the policy too.
    """
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")
    yield
    keras.config.set_floatx("float32")
    keras.config.set_dtype_policy("float32")
