"""Flags shared by the command-line entry points, and their conversion to configs."""

import dataclasses
import re
import sys

from absl import flags

from tf_dpvae import data as data_lib
from tf_dpvae import (datasets, likelihoods, networks, objectives, precision, priors,
                      settings)
from tf_dpvae.config import ModelConfig, dataset_defaults
from tf_dpvae.training import STRATEGIES, TrainConfig
from trainers import data_flags

FLAGS = flags.FLAGS
_DEFAULTS = ModelConfig()
PROGRESS = {"bar": 1, "epoch": 2, "none": 0}  # Keras `verbose` values


def define_model_flags(flag_values=FLAGS):
    """Flags for every ModelConfig field; dataset-dependent ones default to None."""
    data_flags.define(flag_values)
    flags.DEFINE_enum("regularizer", _DEFAULTS.regularizer, list(objectives.REGULARIZERS),
                      "Which regularized objective to train.", flag_values=flag_values)
    flags.DEFINE_enum("prior", _DEFAULTS.prior, list(priors.PRIORS),
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
    flags.DEFINE_boolean("analytic_kl", _DEFAULTS.analytic_kl,
                         "Closed-form KL under the standard normal prior.",
                         flag_values=flag_values)
    flags.DEFINE_integer("kl_samples", _DEFAULTS.kl_samples,
                         "Monte Carlo samples of the KL (decoupled prior).", lower_bound=1,
                         flag_values=flag_values)
    define_settings_flags(flag_values)
    flags.DEFINE_float("learning_rate", _DEFAULTS.learning_rate, "Adam learning rate.",
                       lower_bound=0, flag_values=flag_values)
    flags.DEFINE_integer("batch_size", None, "Batch size (default: per dataset).",
                         lower_bound=2, flag_values=flag_values)
    flags.DEFINE_integer("seed", 0, "Seed of data order, initialisation and noise.",
                         flag_values=flag_values)
    flags.DEFINE_enum("precision", None, list(precision.PRECISIONS),
                      "Compute precision of the networks; mixed_bfloat16 keeps the "
                      "prior, the likelihood, the losses and the metrics in float32 "
                      "(default: per dataset).", flag_values=flag_values)


def define_settings_flags(flag_values=FLAGS):
    """One flag per setting every registered regularizer (tf_dpvae/objectives/),
    prior (tf_dpvae/priors.py) and dataset (tf_dpvae/datasets.py) declares.

    Settings with a paper value default to None: the dataset's paper batch size decides
    their converted value (``DATASET_DEFAULTS``).
    """
    converted = ("(default: Table 2 converted to the per-example loss at the dataset's "
                 "paper batch size, tf_dpvae/objectives/)")
    for variant, spec in (objectives.all_settings() + priors.all_settings()
                          + datasets.all_settings()):
        default = None if spec.per_dataset else getattr(_DEFAULTS, spec.config_name)
        define_setting_flag(variant, spec, default, flag_values,
                            extra_help=f" {converted}" if spec.per_dataset else "")


def define_setting_flag(variant, spec, default, flag_values=FLAGS, extra_help=""):
    """The flag of one declared setting (tf_dpvae/settings.py), its type, bounds and
    choices from the declaration, its help prefixed by the variant."""
    kind = settings.flag_kind(spec)
    define = {"integer": flags.DEFINE_integer, "float": flags.DEFINE_float,
              "string": flags.DEFINE_string, "boolean": flags.DEFINE_boolean,
              "enum": lambda name, default, help_text, **kw: flags.DEFINE_enum(
                  name, default, list(spec.choices), help_text, **kw)}
    bounds = {"lower_bound": spec.lower_bound} if kind in ("integer", "float") else {}
    define[kind](spec.config_name, default, f"{variant}: {spec.help}{extra_help}.",
                 flag_values=flag_values, **bounds)


def define_train_flags(flag_values=FLAGS, model_dir_required=True):
    flags.DEFINE_string("model_dir", None, "Where checkpoints, config.json, TensorBoard "
                        "events and samples go; reuse it to resume.",
                        required=model_dir_required, flag_values=flag_values)
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
    flags.DEFINE_integer("steps_per_execution", 0, "Training steps per call into the "
                         "graph; callbacks (checkpoints, summaries, NaN checks) run between "
                         "calls, so it must divide their periods, --steps_per_epoch and "
                         "--train_steps (0: the largest such divisor up to 100).",
                         lower_bound=0, flag_values=flag_values)
    flags.DEFINE_boolean("jit_compile", False, "Compile the training and validation "
                         "steps with XLA. Faster for small models with the decoupled prior "
                         "(two moons), slower for the standard prior and the conv models "
                         "on CPU (BUILD.md). XLA draws other noise than TF's kernels from "
                         "the same seed, so a run is reproducible with the same setting.",
                         flag_values=flag_values)
    flags.DEFINE_enum("progress", "bar", list(PROGRESS), "Console progress: a live bar, "
                      "one line per epoch (for logs), or none.", flag_values=flag_values)


def model_config_from_flags(flag_values=FLAGS):
    """ModelConfig from the flags, dataset defaults filling the unset ones."""
    fv = flag_values
    values = {f.name: getattr(fv, f.name) for f in dataclasses.fields(ModelConfig)
              if f.name in fv and f.name not in ("input_shape", "num_train")}
    for key, default in dataset_defaults(fv.dataset).items():
        if values.get(key) is None:
            values[key] = default
    config = ModelConfig(**values)
    validate_model_config(config)
    return config


def validate_model_config(config):
    """Errors that can be found before any data is read, each naming its flag."""
    priors.get(config.prior).validate(config)
    if config.augment and not datasets.get(config.dataset).augmentable:
        augmentable = [n for n, s in datasets.REGISTRY.items() if s.augmentable]
        raise ValueError(f"--augment: the official augmentation is for 28×28 grey images "
                         f"({', '.join(augmentable)}), not --dataset={config.dataset}")
    objectives.get(config.regularizer).validate(config)


def train_config_from_flags(flag_values=FLAGS):
    FLAGS = flag_values  # noqa: N806 (the module-level name, or a private FlagValues)
    data_flags.check_data_dir(FLAGS)
    return TrainConfig(
        model_dir=FLAGS.model_dir, train_steps=FLAGS.train_steps,
        checkpoint_every=FLAGS.checkpoint_every, summary_every=FLAGS.summary_every,
        sample_every=FLAGS.sample_every, steps_per_epoch=FLAGS.steps_per_epoch,
        validation_steps=FLAGS.validation_steps, strategy=FLAGS.strategy,
        data_dir=FLAGS.data_dir, data_source=FLAGS.data_source,
        max_checkpoints=FLAGS.max_checkpoints, verbose=PROGRESS[FLAGS.progress],
        steps_per_execution=FLAGS.steps_per_execution, jit_compile=FLAGS.jit_compile)


def configs_from_args(args):
    """(ModelConfig, TrainConfig) exactly as ``trainers.fit`` builds them from ``args``
    (command-line arguments, flagfiles included)."""
    values = flags.FlagValues()
    define_model_flags(values)
    define_train_flags(values)
    values(["tf_dpvae"] + list(args))
    return model_config_from_flags(values), train_config_from_flags(values)


# TensorFlow's errors for what the file system refused (a read-only or full disk, a
# missing or unreadable file): the machine's fault, not the program's.
_TF_FILE_ERRORS = ("PermissionDeniedError", "ResourceExhaustedError", "NotFoundError",
                   "FailedPreconditionError", "DataLossError", "AlreadyExistsError")
_OS_MESSAGES = ("No space left", "Read-only file system", "Permission denied",
                "Not a directory", "Is a directory", "Disk quota exceeded")


def os_error_line(error):
    """One line for an error of the file system (``OSError`` or TF's file errors,
    naming the path), or None for any other error."""
    if isinstance(error, OSError):
        where = f"{error.filename}: " if error.filename else ""
        return f"{where}{error.strerror or error}"
    text = (getattr(error, "message", None) or "").strip()
    name = type(error).__name__
    if text and (name in _TF_FILE_ERRORS
                 or (name == "UnknownError" and any(m in text for m in _OS_MESSAGES))):
        # Graph errors start with "{{function_node <name>}} ": not the user's business.
        return re.sub(r"^\{\{function_node [^}]*\}\}\s*", "", text.splitlines()[0])[:500]
    return None


def exit_on_user_error(fn, *args, prog="tf_dpvae"):
    """Run ``fn``; a bad flag, missing data or file, or a file system that refuses a
    write ends the program with one line on stderr (exit code 2), no traceback."""
    try:
        return fn(*args)
    except (ValueError, FileNotFoundError, data_lib.DatasetUnavailableError) as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        sys.exit(2)
    except Exception as error:  # noqa: BLE001 (re-raised unless the disk's fault)
        line = os_error_line(error)
        if line is None:
            raise
        print(f"{prog}: error: {line}", file=sys.stderr)
        sys.exit(2)
