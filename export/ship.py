"""Ship a trained model in the repository as a pretrained SavedModel users can sample.

    python -m export.ship --model_dir=runs/.../beta_h_decoupled/seed0 \
        --name=fashion_mnist_beta_h_decoupled --note="best of 3 seeds by FID"

exports the model (``export.saved_model``, checked in a fresh process) to
``--root/<name>/1/`` and writes beside it:

* ``reference.npz``: the ``sample`` signature's output for :data:`REFERENCE_SEED`,
  :data:`REFERENCE_SAMPLES` samples — what :func:`verify` (and tests/test_pretrained.py)
  compares a reload with;
* ``model.json``: what it is (dataset, regularizer, prior, steps, the training
  command's configuration), its evaluation numbers when ``<model_dir>/eval/
  metrics.json`` exists, the note, and the one-line command that samples it.

Users then sample without training: ``python -m export.sample
--saved_model=pretrained/<name> --out=samples.png``.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import json  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402

from absl import app, flags  # noqa: E402

REFERENCE_SEED = 0
REFERENCE_SAMPLES = 8
SIGNATURES = ("decode", "encode", "log_prior", "sample", "sample_from_z0",
              "serving_default", "to_generation", "to_representation")
VERSION = 1
# The evaluation numbers a model card carries, when the model was evaluated.
CARD_METRICS = ("fid", "fid_lp", "skl", "nll_nats", "precision", "recall",
                "precision_lp", "recall_lp", "step", "feature_extractor", "num_samples")

FLAGS = flags.FLAGS


class ShipError(ValueError):
    """A user error or a failed verification: the message names the flag or file."""


def _reference(saved_model_dir):
    from export import sample
    return sample.sample(saved_model_dir, REFERENCE_SAMPLES, REFERENCE_SEED)


def ship(model_dir, name, root="pretrained", overwrite=False, note=""):
    """Export ``model_dir`` to ``root/name/1`` with reference.npz and model.json;
    returns ``root/name``."""
    import numpy as np

    from export import saved_model
    target = os.path.join(root, name)
    if os.path.exists(target):
        if not overwrite:
            raise ShipError(f"--name={name}: {target} exists (pass --overwrite to "
                            "replace it)")
        shutil.rmtree(target)
    try:
        path = saved_model.export(model_dir, target, version=VERSION, model_name=name)
    except saved_model.ExportError as error:
        raise ShipError(str(error)) from None
    os.remove(os.path.join(target, saved_model.MODELS_CONFIG))  # machine paths
    reference = _reference(path)
    np.savez(os.path.join(target, "reference.npz"), **reference)
    with open(os.path.join(model_dir, "config.json")) as f:
        config = json.load(f)
    metrics = {}
    metrics_path = os.path.join(model_dir, "eval", "metrics.json")
    if os.path.exists(metrics_path):
        with open(metrics_path) as f:
            found = json.load(f)
        metrics = {k: found[k] for k in CARD_METRICS if k in found}
    with open(os.path.join(path, "assets.extra", "export.json")) as f:
        exported = json.load(f)
    card = {"name": name, "version": VERSION, "dataset": config.get("dataset"),
            "regularizer": config.get("regularizer"), "prior": config.get("prior"),
            "latent_dim": config.get("latent_dim"), "seed": config.get("seed"),
            "precision": config.get("precision", "float32"),
            "step": exported.get("step"), "tensorflow": exported.get("tensorflow"),
            "signatures": exported.get("signatures"), "note": note, "metrics": metrics,
            "reference": {"seed": REFERENCE_SEED, "num_samples": REFERENCE_SAMPLES},
            "sample_command": f"python -m export.sample --saved_model={target} "
                              "--out=samples.png"}
    with open(os.path.join(target, "model.json"), "w") as f:
        json.dump(card, f, indent=2, sort_keys=True)
    verify(target)
    size = sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(target)
               for f in files)
    print(f"export.ship: {target} ({size / 1e6:.1f} MB): sample it with "
          f"{card['sample_command']}", flush=True)
    return target


def verify(directory, atol=None):
    """Load ``directory/1``, check its signatures and that the fixed-seed sample equals
    reference.npz to within ``atol`` (by default the export tolerance of the model's
    precision: a bfloat16 model's rounding depends on the CPU's bfloat16 support);
    raise ShipError saying what differs. Returns the model card."""
    import numpy as np

    from tf_dpvae import precision
    with open(os.path.join(directory, "model.json")) as f:
        card = json.load(f)
    if atol is None:
        atol = precision.export_tolerance(card.get("precision", "float32"))
    path = os.path.join(directory, str(card["version"]))
    import tensorflow as tf
    loaded = tf.saved_model.load(path)
    if sorted(loaded.signatures) != sorted(SIGNATURES):
        raise ShipError(f"{path}: signatures {sorted(loaded.signatures)}, expected "
                        f"{sorted(SIGNATURES)}")
    got = _reference(path)
    want = dict(np.load(os.path.join(directory, "reference.npz")))
    if set(got) != set(want):
        raise ShipError(f"{directory}/reference.npz holds {sorted(want)}; the sample "
                        f"signature returns {sorted(got)}")
    for key in want:
        if got[key].shape != want[key].shape or not np.allclose(got[key], want[key],
                                                                atol=atol):
            raise ShipError(f"{directory}: the seed-{REFERENCE_SEED} sample's {key!r} "
                            f"differs from reference.npz by more than {atol:g}")
    return card


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    try:
        ship(FLAGS.model_dir, FLAGS.name, FLAGS.root, FLAGS.overwrite, FLAGS.note)
    except (ShipError, OSError) as error:
        print(f"export.ship: error: {error}", file=sys.stderr, flush=True)
        sys.exit(2)


if __name__ == "__main__":
    flags.DEFINE_string("model_dir", None, "Training directory of the model.",
                        required=True)
    flags.DEFINE_string("name", None, "Name of the shipped model (a folder under --root).",
                        required=True)
    flags.DEFINE_string("root", "pretrained", "Where shipped models live.")
    flags.DEFINE_boolean("overwrite", False, "Replace a shipped model of that name.")
    flags.DEFINE_string("note", "", "Why this model (e.g. 'best of 3 seeds by FID').")
    app.run(main)
