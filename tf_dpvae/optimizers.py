"""Adam with TensorFlow's fused update kernel.

Keras 3's ``Adam.update_step`` emits ≈ 30 graph ops per variable (casts, the bias
corrections, three assigns), which dominates a small model's step: the decoupled
prior alone has 72 variables. :class:`Adam` is ``keras.optimizers.Adam`` with the same
variables (so checkpoints are interchangeable) and the same update,

    m ← m + (1 − β₁)(g − m),   v ← v + (1 − β₂)(g² − v),
    θ ← θ − α_t · m / (√v + ε),   α_t = α · √(1 − β₂ᵗ) / (1 − β₁ᵗ),

computed by one ``ResourceApplyAdam`` kernel per variable, with the step's scalars
(β₁ᵗ, β₂ᵗ) computed once per step instead of once per variable. Anything the kernel
does not cover (AMSGrad, sparse gradients, a gradient of another dtype) falls back to
Keras's own ``update_step``.
"""

import keras
import tensorflow as tf


class Adam(keras.optimizers.Adam):
    """``keras.optimizers.Adam`` whose dense updates run TF's fused Adam kernel."""

    _step_scalars = None

    def _backend_update_step(self, grads, trainable_variables, learning_rate):
        step = tf.cast(self.iterations + 1, tf.float32)
        self._step_scalars = (tf.pow(tf.cast(self.beta_1, tf.float32), step),
                              tf.pow(tf.cast(self.beta_2, tf.float32), step))
        try:
            super()._backend_update_step(grads, trainable_variables, learning_rate)
        finally:
            self._step_scalars = None

    def update_step(self, gradient, variable, learning_rate):
        handle = getattr(variable, "handle", None)
        if (self.amsgrad or self._step_scalars is None or handle is None
                or isinstance(gradient, tf.IndexedSlices)
                or variable.dtype != tf.float32 or gradient.dtype != tf.float32):
            return super().update_step(gradient, variable, learning_rate)
        index = self._get_variable_index(variable)
        m, v = self._momentums[index].value, self._velocities[index].value
        beta_1_power, beta_2_power = self._step_scalars
        tf.raw_ops.ResourceApplyAdam(
            var=handle, m=m.handle, v=v.handle, beta1_power=beta_1_power,
            beta2_power=beta_2_power, lr=tf.cast(learning_rate, tf.float32),
            beta1=tf.cast(self.beta_1, tf.float32), beta2=tf.cast(self.beta_2, tf.float32),
            epsilon=tf.cast(self.epsilon, tf.float32), grad=gradient, use_locking=False)
