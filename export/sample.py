"""Sample a PNG from an exported dpVAE, without training and without the training code.

    python -m export.sample --saved_model=pretrained/moons_beta_h_decoupled --out=x.png

``--saved_model`` is a SavedModel directory written by ``export.saved_model`` (or
``export.ship``), or its versioned base directory (the highest version is used). The
``sample`` signature draws z0 ~ N(0, I) from ``--seed``, maps it to z = g⁻¹(z0) and
decodes E[x|z]: images are drawn as a grid, 2-D points as a scatter plot.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import json  # noqa: E402
import sys  # noqa: E402

from absl import app, flags  # noqa: E402

FLAGS = flags.FLAGS


class SampleError(ValueError):
    """A user error: the message names the flag or file."""


def resolve(path):
    """The SavedModel directory of ``path``: itself when it holds saved_model.pb, else
    its highest numbered version."""
    if os.path.exists(os.path.join(path, "saved_model.pb")):
        return path
    versions = sorted(int(v) for v in (os.listdir(path) if os.path.isdir(path) else [])
                      if v.isdigit()
                      and os.path.exists(os.path.join(path, v, "saved_model.pb")))
    if not versions:
        raise SampleError(f"--saved_model={path}: expected a SavedModel directory "
                          "(with saved_model.pb) or a base directory of numbered versions")
    return os.path.join(path, str(versions[-1]))


def describe(saved_model_dir):
    """The exported model's config.json (assets.extra), or {}."""
    path = os.path.join(saved_model_dir, "assets.extra", "config.json")
    if not os.path.exists(path):
        return {}
    with open(path) as f:
        return json.load(f)


def sample(saved_model_dir, num_samples, seed):
    """{"x", "z", "z0"} as numpy from the ``sample`` signature."""
    import tensorflow as tf
    try:
        loaded = tf.saved_model.load(saved_model_dir)
    except (OSError, ValueError, tf.errors.OpError) as error:
        raise SampleError(f"--saved_model={saved_model_dir}: could not load the "
                          f"SavedModel ({type(error).__name__})") from None
    if "sample" not in loaded.signatures:
        raise SampleError(f"--saved_model={saved_model_dir}: no 'sample' signature "
                          f"(it has {sorted(loaded.signatures)})")
    out = loaded.signatures["sample"](num_samples=tf.constant(num_samples, tf.int32),
                                      seed=tf.constant(seed, tf.int64))
    return {k: v.numpy() for k, v in out.items()}


def write_png(samples, config, path, seed):
    from tf_dpvae import plots
    title = (f"{config.get('regularizer', '?')} / {config.get('prior', '?')} prior on "
             f"{config.get('dataset', '?')}: {len(samples['x'])} samples, seed {seed}")
    fig = plots.samples_figure(samples["x"], title=title)
    if os.path.dirname(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
    return plots.save_png(plots.figure_png(fig), path)


def run(saved_model, out, num_samples, seed):
    if num_samples < 1:
        raise SampleError(f"--num_samples={num_samples}: expected at least 1")
    if seed < 0:
        raise SampleError(f"--seed={seed}: expected a seed >= 0")
    directory = resolve(saved_model)
    samples = sample(directory, num_samples, seed)
    path = write_png(samples, describe(directory), out, seed)
    print(f"export.sample: {num_samples} samples of {directory} (seed {seed}) -> {path}",
          flush=True)
    return path


def define_flags():
    flags.DEFINE_string("saved_model", None, "SavedModel directory, or a base directory "
                        "of numbered versions (e.g. pretrained/<name>).", required=True)
    flags.DEFINE_string("out", "samples.png", "PNG to write.")
    flags.DEFINE_integer("num_samples", 64, "How many samples.")
    flags.DEFINE_integer("seed", 0, "Seed of z0 ~ N(0, I) (the same seed gives the "
                         "same samples).")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    try:
        run(FLAGS.saved_model, FLAGS.out, FLAGS.num_samples, FLAGS.seed)
    except (SampleError, OSError) as error:
        print(f"export.sample: error: {error}", file=sys.stderr, flush=True)
        sys.exit(2)


if __name__ == "__main__":
    define_flags()
    app.run(main)
