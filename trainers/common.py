"""Flags shared by the command-line entry points, and their conversion to configs."""

import dataclasses
import os
import sys

from absl import flags

from tf_dpvae import data as data_lib
from tf_dpvae import likelihoods, networks, objectives, priors
from tf_dpvae.config import DATASET_DEFAULTS, ModelConfig
from tf_dpvae.training import STRATEGIES, TrainConfig

FLAGS = flags.FLAGS
_DEFAULTS = ModelConfig()
AUGMENTABLE = ("mnist", "fashion_mnist")
PROGRESS = {"bar": 1, "epoch": 2, "none": 0}  # Keras `verbose` values


def define_model_flags(flag_values=FLAGS):
    """Flags for every ModelConfig field; dataset-dependent ones default to None."""
    flags.DEFINE_enum("dataset", "moons", list(DATASET_DEFAULTS), "Training data.",
                      flag_values=flag_values)
    flags.DEFINE_string("data_dir", None, "Directory of the data (tfds data_dir, or IDX "
                        "files for fashion_mnist).", flag_values=flag_values)
    flags.DEFINE_enum("data_source", "auto", ["auto", "tfds", "offline", "idx"],
                      "Where to read the data from; auto never downloads.",
                      flag_values=flag_values)
    flags.DEFINE_enum("regularizer", _DEFAULTS.regularizer, list(objectives.REGULARIZERS),
                      "Which regularized objective to train.", flag_values=flag_values)
    flags.DEFINE_enum("prior", _DEFAULTS.prior, ["normal", "decoupled"],
                      "Standard normal prior, or the decoupled (RealNVP) prior.",
                      flag_values=flag_values)
    flags.DEFINE_integer("latent_dim", None, "Latent size L (default: per dataset).",
                         lower_bound=1, flag_values=flag_values)
    flags.DEFINE_enum("architecture", None, list(networks.ARCHITECTURES),
                      "Encoder/decoder (default: per dataset).", flag_values=flag_values)
    flags.DEFINE_enum("likelihood", None, list(likelihoods.LIKELIHOODS),
                      "Decoder likelihood (default: per dataset).", flag_values=flag_values)
    flags.DEFINE_float("gaussian_scale", None, "Gaussian likelihood scale (initial value "
                       "if learned).", lower_bound=1e-6, flag_values=flag_values)
    flags.DEFINE_boolean("learn_gaussian_scale", None, "Learn the Gaussian scale.",
                         flag_values=flag_values)
    flags.DEFINE_float("mse_weight", _DEFAULTS.mse_weight, "likelihood mse: the official "
                       "code's reconstruction mse_weight · Σ (x̂ − x)² (a Gaussian with "
                       "σ² = 1 / (2 · mse_weight)).", lower_bound=1e-9,
                       flag_values=flag_values)
    flags.DEFINE_boolean("augment", _DEFAULTS.augment, "Augment training images as the "
                         "official code's MNIST configs do (random brightness/contrast, "
                         "rotation ±5°, translation 10 %, scale 0.9–1.1).",
                         flag_values=flag_values)
    flags.DEFINE_integer("flow_blocks", _DEFAULTS.flow_blocks, "Coupling blocks K.",
                         lower_bound=1, flag_values=flag_values)
    flags.DEFINE_integer("flow_hidden_units", _DEFAULTS.flow_hidden_units,
                         "Width of the s and t networks.", lower_bound=1, flag_values=flag_values)
    flags.DEFINE_integer("flow_hidden_layers", _DEFAULTS.flow_hidden_layers,
                         "Hidden layers of the s and t networks.", lower_bound=1,
                         flag_values=flag_values)
    flags.DEFINE_string("flow_masks", _DEFAULTS.flow_masks,
                        f"Coupling masks: one of {priors.MASK_KINDS} or 0/1 strings "
                        "separated by commas, e.g. 10,01.", flag_values=flag_values)
    flags.DEFINE_boolean("flow_bound_shift", _DEFAULTS.flow_bound_shift,
                         "Bound the coupling shift t with tanh (the official code does).",
                         flag_values=flag_values)
    flags.DEFINE_boolean("analytic_kl", _DEFAULTS.analytic_kl,
                         "Closed-form KL under the standard normal prior.",
                         flag_values=flag_values)
    flags.DEFINE_integer("kl_samples", _DEFAULTS.kl_samples,
                         "Monte Carlo samples of the KL (decoupled prior).", lower_bound=1,
                         flag_values=flag_values)
    weights = "(default: Table 2 converted to the per-example loss at the dataset's paper " \
        "batch size, tf_dpvae/objectives.py)"
    flags.DEFINE_float("beta", None, f"beta_h: KL weight β {weights}.", lower_bound=0,
                       flag_values=flag_values)
    flags.DEFINE_float("capacity_gamma", None, f"beta_b: γ {weights}.",
                       lower_bound=0, flag_values=flag_values)
    flags.DEFINE_float("capacity_max", None, "beta_b: C_max in nats per example (Table 2's "
                       "25 for the batch-summed KL, i.e. 25 / B).", lower_bound=0,
                       flag_values=flag_values)
    flags.DEFINE_integer("capacity_stop_steps", _DEFAULTS.capacity_stop_steps,
                         "beta_b: steps until C reaches C_max.", lower_bound=1,
                         flag_values=flag_values)
    flags.DEFINE_float("tc_alpha", None, f"beta_tc: MI weight α {weights}.",
                       flag_values=flag_values)
    flags.DEFINE_float("tc_beta", None, f"beta_tc: TC weight β {weights}.",
                       flag_values=flag_values)
    flags.DEFINE_float("tc_gamma", None, f"beta_tc: dimension-wise KL weight γ {weights}.",
                       flag_values=flag_values)
    flags.DEFINE_float("factor_gamma", None, f"factor: TC weight γ {weights}.",
                       flag_values=flag_values)
    flags.DEFINE_float("info_alpha", None, f"info: α {weights}.", flag_values=flag_values)
    flags.DEFINE_float("info_lambda", None, f"info: λ {weights}.", flag_values=flag_values)
    flags.DEFINE_float("mmd_bandwidth_sq", None, "info: RBF bandwidth h² (default L).",
                       lower_bound=1e-9, flag_values=flag_values)
    flags.DEFINE_float("learning_rate", _DEFAULTS.learning_rate, "Adam learning rate.",
                       lower_bound=0, flag_values=flag_values)
    flags.DEFINE_float("discriminator_learning_rate", _DEFAULTS.discriminator_learning_rate,
                       "factor: the discriminator's Adam learning rate.", lower_bound=0,
                       flag_values=flag_values)
    flags.DEFINE_integer("batch_size", None, "Batch size (default: per dataset).",
                         lower_bound=2, flag_values=flag_values)
    flags.DEFINE_integer("seed", 0, "Seed of data order, initialisation and noise.",
                         flag_values=flag_values)


def define_train_flags(flag_values=FLAGS):
    flags.DEFINE_string("model_dir", None, "Where checkpoints, config.json, TensorBoard "
                        "events and samples go; reuse it to resume.", required=True,
                        flag_values=flag_values)
    flags.DEFINE_integer("train_steps", 10_000, "Total optimizer steps.", lower_bound=1,
                         flag_values=flag_values)
    flags.DEFINE_integer("checkpoint_every", 1000, "Steps between checkpoints.",
                         lower_bound=1, flag_values=flag_values)
    flags.DEFINE_integer("summary_every", 100, "Steps between TensorBoard scalars.",
                         lower_bound=1, flag_values=flag_values)
    flags.DEFINE_integer("sample_every", 1000, "Steps between TensorBoard sample images.",
                         lower_bound=1, flag_values=flag_values)
    flags.DEFINE_integer("steps_per_epoch", 500, "Steps per progress bar / validation.",
                         lower_bound=1, flag_values=flag_values)
    flags.DEFINE_integer("validation_steps", 0, "Validation batches per epoch (0: the "
                         "whole validation split; the reported values are means).",
                         lower_bound=0, flag_values=flag_values)
    flags.DEFINE_enum("strategy", "default", list(STRATEGIES),
                      "tf.distribute strategy; multi_worker reads TF_CONFIG.",
                      flag_values=flag_values)
    flags.DEFINE_integer("logical_cpus", 0, "Split the CPU into this many logical devices "
                         "(to try --strategy=mirrored without GPUs).", lower_bound=0,
                         flag_values=flag_values)
    flags.DEFINE_integer("max_checkpoints", 3, "Checkpoints kept.", lower_bound=1,
                         flag_values=flag_values)
    flags.DEFINE_enum("progress", "bar", list(PROGRESS), "Console progress: a live bar, "
                      "one line per epoch (for logs), or none.", flag_values=flag_values)


def model_config_from_flags(flag_values=FLAGS):
    """ModelConfig from the flags, dataset defaults filling the unset ones."""
    fv = flag_values
    values = {f.name: getattr(fv, f.name) for f in dataclasses.fields(ModelConfig)
              if f.name in fv and f.name not in ("input_shape", "num_train")}
    for key, default in DATASET_DEFAULTS[fv.dataset].items():
        if values.get(key) is None:
            values[key] = default
    config = ModelConfig(**values)
    validate_model_config(config)
    return config


def validate_model_config(config):
    """Errors that can be found before any data is read, each naming its flag."""
    if config.prior == "decoupled":
        priors.coupling_masks(config.latent_dim, config.flow_blocks, config.flow_masks)
    if config.augment and config.dataset not in AUGMENTABLE:
        raise ValueError(f"--augment: the official augmentation is for 28×28 grey images "
                         f"({', '.join(AUGMENTABLE)}), not --dataset={config.dataset}")
    if config.regularizer == "factor" and config.batch_size < 4:
        raise ValueError(f"--batch_size={config.batch_size}: FactorVAE splits the batch in "
                         "two halves; use at least 4")


def train_config_from_flags(flag_values=FLAGS):
    FLAGS = flag_values  # noqa: N806 (the module-level name, or a private FlagValues)
    if FLAGS.data_dir is not None and not os.path.isdir(FLAGS.data_dir):
        raise ValueError(f"--data_dir={FLAGS.data_dir}: no such directory")
    return TrainConfig(
        model_dir=FLAGS.model_dir, train_steps=FLAGS.train_steps,
        checkpoint_every=FLAGS.checkpoint_every, summary_every=FLAGS.summary_every,
        sample_every=FLAGS.sample_every, steps_per_epoch=FLAGS.steps_per_epoch,
        validation_steps=FLAGS.validation_steps, strategy=FLAGS.strategy,
        data_dir=FLAGS.data_dir, data_source=FLAGS.data_source,
        max_checkpoints=FLAGS.max_checkpoints, verbose=PROGRESS[FLAGS.progress])


def exit_on_user_error(fn, *args, prog="tf_dpvae"):
    """Run ``fn``; a bad flag, missing data or file ends the program with one line."""
    try:
        return fn(*args)
    except (ValueError, FileNotFoundError, data_lib.DatasetUnavailableError) as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        sys.exit(2)
