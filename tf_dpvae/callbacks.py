"""Keras callbacks of the trainer: checkpoints, NaN guard, stop-at-step, TensorBoard.

They only use ``on_train_batch_end(step, logs)`` and ``on_epoch_end``, so the same
objects serve ``model.fit`` and the custom distributed loop in :mod:`training`.
"""

import concurrent.futures
import math
import os

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from tf_dpvae import plots


def global_step(model):
    """Number of optimizer updates applied so far (checkpointed with the optimizer)."""
    return int(model.optimizer.iterations.numpy())


def _finite(logs):
    loss = (logs or {}).get("loss")
    return loss is None or math.isfinite(float(loss))


def weights_finite(model):
    """True when every variable of the model holds only finite values."""
    return all(np.isfinite(np.asarray(v.numpy())).all() for v in model.weights)


class TrainingDivergedError(RuntimeError):
    """Raised after training stopped on a NaN/Inf loss."""


class NaNGuard(keras.callbacks.Callback):
    """Stops training at the first non-finite loss and remembers where."""

    def __init__(self):
        super().__init__()
        self.bad_step = None
        self.bad_logs = None

    def on_train_batch_end(self, batch, logs=None):
        if self.bad_step is None and not _finite(logs):
            self.bad_step = global_step(self.model)
            self.bad_logs = {k: float(v) for k, v in (logs or {}).items()}
            self.model.stop_training = True


class StopAtStep(keras.callbacks.Callback):
    """Ends training when the optimizer has taken ``train_steps`` updates."""

    def __init__(self, train_steps):
        super().__init__()
        self.train_steps = train_steps

    def on_train_batch_end(self, batch, logs=None):
        if global_step(self.model) >= self.train_steps:
            self.model.stop_training = True


class PeriodicCheckpoint(keras.callbacks.Callback):
    """Saves through a ``tf.train.CheckpointManager`` every ``every`` steps.

    Never saves a step whose loss or weights are not finite (an update can turn the
    weights to NaN while the loss it was computed from was still finite), so the last
    checkpoint on disk is always a good one.
    """

    def __init__(self, manager, every):
        super().__init__()
        self.manager = manager
        self.every = every

    def on_train_batch_end(self, batch, logs=None):
        step = global_step(self.model)
        if step % self.every == 0 and _finite(logs) and not self.model.stop_training:
            if not weights_finite(self.model):
                self.model.stop_training = True
                logging.error("weights are not finite at step %d; not saving", step)
                return
            self.manager.save(checkpoint_number=step)
            logging.info("saved checkpoint at step %d", step)


def window_means(previous, current):
    """Means over the batches between two readings of running epoch means.

    ``previous`` and ``current`` are (batch index within the epoch, {name: running
    mean}) after batches j and k of the same epoch (``previous=None``: the epoch's
    start). The trackers weight batches equally here (same batch size), so the mean
    of batches j+1..k is ``((k + 1)·m_k − (j + 1)·m_j) / (k − j)``.
    """
    k, now = current
    j, before = previous if previous is not None else (-1, {})
    return {name: ((k + 1) * float(value) - (j + 1) * float(before.get(name, 0.0))) / (k - j)
            for name, value in now.items()}


def read_scalars(log_dir, tag):
    """{step: value} of one scalar that :class:`Summaries` wrote, over every event
    file in ``log_dir`` (e.g. ``<model_dir>/validation``, tag ``"loss"``); a later
    file's value wins at a step written twice (a resumed run)."""
    values = {}
    for path in sorted(tf.io.gfile.glob(os.path.join(log_dir, "events.out.tfevents.*"))):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.tag == tag:
                    values[int(event.step)] = float(tf.make_ndarray(value.tensor))
    return dict(sorted(values.items()))


class Summaries(keras.callbacks.Callback):
    """TensorBoard: every loss term (its mean over the steps since the last write) and
    the learning rate every ``scalar_every`` steps, a grid of generated samples (images)
    or a scatter plot (points) every ``sample_every`` steps, the validation means at
    each epoch end.

    The model reports running means over the epoch (metric trackers); the scalars
    written here are recovered from them as means over each window
    (:func:`window_means`); logs that are not trackers (schedules such as β-VAE-B's
    capacity) are written as they are.
    """

    def __init__(self, log_dir, scalar_every, sample_every, data_points=None,
                 num_samples=64):
        super().__init__()
        self.train_writer = tf.summary.create_file_writer(f"{log_dir}/train")
        self.validation_writer = tf.summary.create_file_writer(f"{log_dir}/validation")
        self.scalar_every = scalar_every
        self.sample_every = sample_every
        self.data_points = data_points
        self.num_samples = num_samples
        self._previous = None  # (batch index in the epoch, running means) at the last write
        self._renderer = None  # one background thread renders the sample PNGs
        self._pending = []

    def on_epoch_begin(self, epoch, logs=None):
        self._previous = None

    def on_train_batch_end(self, batch, logs=None):
        step = global_step(self.model)
        if step % self.scalar_every == 0 and logs:
            if self._previous is not None and batch <= self._previous[0]:
                self._previous = None  # a new epoch began without on_epoch_begin
            tracked = {m.name for m in self.model.metrics}
            current = (batch, {k: float(v) for k, v in logs.items() if k in tracked})
            values = {k: float(v) for k, v in logs.items() if k not in tracked}
            values.update(window_means(self._previous, current))
            self._previous = current
            with self.train_writer.as_default(step=step):
                for name, value in values.items():
                    tf.summary.scalar(name, value)
                tf.summary.scalar("learning_rate",
                                  float(keras.ops.convert_to_numpy(
                                      self.model.optimizer.learning_rate)))
        if step % self.sample_every == 0:
            self.write_samples(step)

    def on_epoch_end(self, epoch, logs=None):
        step = global_step(self.model)
        values = {k[4:]: v for k, v in (logs or {}).items() if k.startswith("val_")}
        if values:
            with self.validation_writer.as_default(step=step):
                for name, value in values.items():
                    tf.summary.scalar(name, float(value))

    def write_samples(self, step):
        """Generate the samples now (they belong to this step's weights); render and
        write the PNG on a background thread, off the training loop's path."""
        samples = generate_samples(self.model, self.num_samples, seed=0)
        if self._renderer is None:
            self._renderer = concurrent.futures.ThreadPoolExecutor(
                1, thread_name_prefix="tf_dpvae_samples")
        self._pending = [f for f in self._pending if not f.done()] + [
            self._renderer.submit(self._write_png, samples, step)]

    def _write_png(self, samples, step):
        png = render_samples(samples, self.data_points, title=f"samples at step {step}")
        with self.train_writer.as_default(step=step):
            tf.summary.image("samples", tf.image.decode_png(png)[None])
        self.train_writer.flush()

    def on_train_end(self, logs=None):
        for future in self._pending:
            future.result()          # re-raises a rendering error here
        self._pending = []
        if self._renderer is not None:
            self._renderer.shutdown()
            self._renderer = None


def generate_samples(model, num_samples=64, seed=0):
    """What :func:`render_samples` draws: {"x"} images, or for 2-D data {"x", "log_p"}
    of 2 000 points (their z's prior log-density), as numpy arrays."""
    if model.config.is_points:
        x, z = model.generate(2000, seed=seed, return_latents=True)
        return {"x": x.numpy(), "log_p": model.prior.log_prob(z).numpy()}
    return {"x": model.generate(num_samples, seed=seed).numpy()}


def render_samples(samples, data_points=None, title=None):
    """PNG bytes: a grid of images, or a scatter coloured by log p(z) (data in grey)."""
    if "log_p" in samples:
        fig = plots.samples_figure(samples["x"], data=data_points, color=samples["log_p"],
                                   color_label="log p(z)", title=title)
    else:
        fig = plots.samples_figure(samples["x"], title=title)
    return plots.figure_png(fig)


def samples_png(model, data_points=None, num_samples=64, seed=0, title=None):
    """PNG bytes of generated samples: a grid of images, or for 2-D data a scatter of
    2 000 points coloured by the prior log-density of their z (with the data in grey)."""
    return render_samples(generate_samples(model, num_samples, seed), data_points, title)
