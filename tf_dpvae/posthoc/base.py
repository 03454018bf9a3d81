"""What every post-hoc prior shares: the codes it is fitted to, its fitting loop, and
how it is stored beside the model.

A post-hoc prior is fitted **after** training, to the aggregate posterior
q(z) = (1/N) Σ_n q(z|x_n) of a trained model, and then replaces the model's prior at
evaluation and export. It is a Keras layer with the interface of
:mod:`tf_dpvae.priors` (``log_prob``, ``sample``, ``to_generation``,
``to_representation``, ``forward_and_log_det``, ``analytic_kl``, ``is_decoupled``)
plus ``draw(n, seed) -> (z, z0)``: a seeded sample and its point in the prior's own
base space (what the metrics and figures call z0).

**The codes** (:func:`codes`): draws z ~ q(z|x_n) = N(μ_n, diag σ_n²) of the training
examples — exact samples of q(z), not the encoder means (which would fit a narrower
density than the aggregate posterior the decoder was trained on). A seeded random
``validation_fraction`` of the *examples* is held out (their codes never train the
prior): the GMM picks its number of components by their log-likelihood, the flow and
the two-stage VAE stop early on it. Each example gives ``draws_per_example`` codes
(default: enough for 20,000 codes in all, at most 10 per example: 10 on two moons'
1,800 training points, 1 on Fashion-MNIST's 55,000).

**Fitting by a loss** (:func:`fit_by_loss`, the flow and the two-stage VAE): Adam in
Keras ``fit`` on shuffled, repeated batches of the train codes, for at most
``max_steps`` steps; every ``validation_every`` steps the mean loss of all held-out
codes is computed, the learning rate halves when it has not improved for
``patience // 2`` checks (down to 1/32 of the start), training stops when it has not
improved for ``patience`` checks, and the best weights are kept.
"""

import dataclasses
import json
import os
import time

import keras
import numpy as np
import tensorflow as tf

from tf_dpvae.metrics import aggregate as aggregate_lib

PRIOR_FILE = "prior.json"
MIN_CODES = 20_000     # draws_per_example = 0: at least this many codes ...
MAX_DRAWS = 10         # ... with at most this many draws per example
WEIGHTS_FILE = "weights.npz"


def _option(default, help_text):
    return dataclasses.field(default=default, metadata={"help": help_text})


@dataclasses.dataclass
class FitOptions:
    """How a post-hoc prior is fitted (the options every kind shares)."""

    seed: int = _option(0, "Seed of the codes' draws, their split and the fit.")
    validation_fraction: float = _option(0.1, "Fraction of the codes held out (choosing "
                                         "K, early stopping).")
    max_codes: int | None = _option(None, "Cap on the training examples encoded "
                                    "(default: all).")
    draws_per_example: int = _option(0, "Codes z ~ q(z|x) drawn per training example (0: "
                                     f"enough for {20_000:,} codes, at most 10).")
    max_steps: int = _option(20_000, "Most optimizer steps (flow, two-stage).")
    validation_every: int = _option(250, "Steps between checks of the held-out loss.")
    patience: int = _option(20, "Checks without improvement before stopping (the "
                            "learning rate halves after half as many).")
    batch_size: int = _option(128, "Codes per optimizer step.")
    learning_rate: float = _option(1e-3, "Adam's initial learning rate.")
    verbose: int = _option(0, "Keras fit's verbosity (0, 1, 2).")

    def __post_init__(self):
        if int(self.draws_per_example) < 0:
            raise ValueError("--draws_per_example: expected >= 0 (0: automatic), got "
                             f"{self.draws_per_example}")
        for name in ("max_steps", "validation_every", "patience", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"--{name}: expected a positive integer, got "
                                 f"{getattr(self, name)}")
        if not 0.0 < float(self.validation_fraction) < 1.0:
            raise ValueError("--validation_fraction: expected a number in (0, 1), got "
                             f"{self.validation_fraction}")
        if not float(self.learning_rate) > 0.0:
            raise ValueError(f"--learning_rate: expected > 0, got {self.learning_rate}")


def codes(model, data, options, batch_size=500):
    """(train codes, validation codes, about them): draws z ~ q(z|x_n) of the training
    examples.

    ``data`` is the model's training split (array or unbatched tf.data.Dataset). The
    *examples* are split (so no held-out code shares its x with a train code), then
    :func:`draws_per_example` codes are drawn per example; all seeded by
    ``options.seed``.
    """
    means, log_vars = aggregate_lib.encode_dataset(model, data, batch_size=batch_size,
                                                   max_examples=options.max_codes)
    train, held = split_indices(len(means), options)
    draws = draws_per_example(len(means), options)
    about = {"codes": (f"{draws} draw(s) z ~ q(z|x) per training example (not the "
                       "means); the examples split into train / held out"),
             "num_examples": int(len(means)), "draws_per_example": draws,
             "num_train_examples": int(len(train)),
             "num_validation_examples": int(len(held))}
    return (draw_codes(means[train], log_vars[train], options.seed, draws),
            draw_codes(means[held], log_vars[held], options.seed + 1, draws), about)


def draws_per_example(num_examples, options):
    """``options.draws_per_example``, or (0) enough for ``MIN_CODES`` codes, at most
    ``MAX_DRAWS`` per example."""
    if options.draws_per_example:
        return int(options.draws_per_example)
    return int(min(MAX_DRAWS, max(1, -(-MIN_CODES // max(1, num_examples)))))


def draw_codes(means, log_vars, seed, draws=1):
    """z = μ_n + σ_n ε, ε ~ N(0, I), ``draws`` per row (numpy, seeded): exact samples
    of q(z) = (1/N) Σ_n N(μ_n, diag σ_n²)."""
    rng = np.random.default_rng([int(seed), 7])
    means = np.repeat(np.asarray(means, np.float64), int(draws), axis=0)
    log_vars = np.repeat(np.asarray(log_vars, np.float64), int(draws), axis=0)
    return (means + np.exp(0.5 * log_vars) * rng.standard_normal(means.shape)).astype(
        np.float32)


def split_indices(count, options):
    """A seeded random split of ``range(count)`` into (train, held out); at least one
    of each."""
    if count < 2:
        raise ValueError(f"need at least 2 examples to fit a prior, got {count}")
    order = np.random.default_rng([int(options.seed), 11]).permutation(count)
    held = min(count - 1, max(1, int(round(options.validation_fraction * count))))
    return np.sort(order[held:]), np.sort(order[:held])


def split_codes(z, options):
    """Codes split by :func:`split_indices` into (train, validation)."""
    z = np.asarray(z, np.float32)
    train, held = split_indices(len(z), options)
    return z[train], z[held]


class PosthocPrior(keras.layers.Layer):
    """What the mixture and the two-stage VAE share (the post-hoc flow is a
    :class:`~tf_dpvae.priors.DecoupledPrior`): float32, no closed-form KL, samples from
    their own :meth:`draw` (``samples_through_base`` False), constructor arguments in
    ``arguments()`` (stored in prior.json, and the Keras config)."""

    is_decoupled = False            # no learned bijection g trained with the VAE
    is_bijection = True             # to_representation(to_generation(z)) = z
    samples_through_base = False    # samples come from draw(), not g⁻¹(N(0, I))
    exact_log_prob = True

    def __init__(self, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)

    def arguments(self):
        raise NotImplementedError

    def get_config(self):
        return {**super().get_config(), **self.arguments()}

    def sample(self, num_samples, seed=None):
        return self.draw(num_samples, seed)[0]

    def analytic_kl(self, mean, log_var):
        return None

    def call(self, z):
        return self.log_prob(z)


class _DensityModel(keras.Model):
    """A Keras model whose output is a per-example loss (−log p, or a negative ELBO),
    so that ``fit`` with early stopping trains any density by maximum likelihood."""

    def __init__(self, loss_fn, layers, **kwargs):
        super().__init__(**kwargs)
        self._loss_fn = loss_fn
        self.parts = layers

    def call(self, z, training=False):
        return self._loss_fn(z, training)


def _mean_output(y_true, y_pred):
    del y_true
    return tf.reduce_mean(y_pred)


def fit_by_loss(loss_fn, layers, train, validation, options):
    """Minimise the mean ``loss_fn(z, training)`` over the train codes (module
    docstring: Adam, checks of the held-out loss every ``validation_every`` steps,
    learning rate halved on plateaus, early stopping, best weights kept). Returns
    {steps, checks, best validation loss, the validation losses}."""
    keras.utils.set_random_seed(int(options.seed))
    net = _DensityModel(loss_fn, layers, name="density_model")
    net.compile(optimizer=keras.optimizers.Adam(options.learning_rate), loss=_mean_output)
    net(tf.constant(train[:2]))
    patience = int(options.patience)
    callbacks = [
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=patience,
                                      restore_best_weights=True),
        keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5,
                                          patience=max(1, patience // 2),
                                          min_lr=float(options.learning_rate) / 32)]
    batches = (tf.data.Dataset.from_tensor_slices(
        (train, np.zeros(len(train), np.float32)))
        .shuffle(len(train), seed=int(options.seed), reshuffle_each_iteration=True)
        .repeat().batch(int(options.batch_size), drop_remainder=len(train) >= int(
            options.batch_size)).prefetch(2))
    checks = max(1, -(-int(options.max_steps) // int(options.validation_every)))
    history = net.fit(batches, steps_per_epoch=int(options.validation_every),
                      epochs=checks,
                      validation_data=(validation, np.zeros(len(validation), np.float32)),
                      validation_batch_size=4096, callbacks=callbacks, shuffle=False,
                      verbose=options.verbose)
    val = [float(v) for v in history.history["val_loss"]]
    return {"steps": len(val) * int(options.validation_every), "checks": len(val),
            "best_validation_loss": min(val), "validation_loss": val}


def mean_log_prob(prior, z, batch_size=4096):
    """Mean log p(z) over the rows of z (float64)."""
    return float(np.mean(aggregate_lib.prior_log_prob(prior, np.asarray(z, np.float32),
                                                      batch_size=batch_size)))


def save(prior, directory, info):
    """Write ``prior.json`` (kind, constructor arguments, ``info``) and its weights."""
    os.makedirs(directory, exist_ok=True)
    record = {"kind": prior.kind, "arguments": prior.arguments(), **info}
    np.savez(os.path.join(directory, WEIGHTS_FILE + ".tmp.npz"),
             *[np.asarray(w) for w in prior.get_weights()])
    os.replace(os.path.join(directory, WEIGHTS_FILE + ".tmp.npz"),
               os.path.join(directory, WEIGHTS_FILE))
    with open(os.path.join(directory, PRIOR_FILE + ".tmp"), "w") as f:
        json.dump(record, f, indent=2, sort_keys=True, allow_nan=False)
    os.replace(os.path.join(directory, PRIOR_FILE + ".tmp"),
               os.path.join(directory, PRIOR_FILE))
    return directory


def read_record(directory):
    """The prior.json of a fitted prior (FileNotFoundError / ValueError naming it)."""
    path = os.path.join(directory, PRIOR_FILE)
    try:
        with open(path) as f:
            record = json.load(f)
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error.msg}); refit the prior with "
                         "trainers.fit_prior") from None
    if not isinstance(record, dict) or "kind" not in record:
        raise ValueError(f"{path}: expected a JSON object with 'kind'")
    return record


def load_weights(prior, directory):
    path = os.path.join(directory, WEIGHTS_FILE)
    try:
        with np.load(path) as stored:
            weights = [stored[f"arr_{i}"] for i in range(len(stored.files))]
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(f"{path}: unreadable weights ({error}); refit the prior with "
                         "trainers.fit_prior") from None
    expected = prior.get_weights()
    if len(weights) != len(expected) or any(
            a.shape != b.shape for a, b in zip(weights, expected)):
        raise ValueError(f"{path}: the weights do not match the prior in "
                         f"{PRIOR_FILE}; refit it with trainers.fit_prior")
    prior.set_weights(weights)
    return prior


class Timer:
    """Seconds since creation (the fitting time reported beside each prior)."""

    def __init__(self):
        self.start = time.perf_counter()

    @property
    def seconds(self):
        return round(time.perf_counter() - self.start, 2)
