"""Export a trained dpVAE as a SavedModel that TF Serving can serve.

    python -m export.saved_model --model_dir=runs/moons/beta_h_decoupled \
        --export_base=exports/beta_h_decoupled

writes ``exports/beta_h_decoupled/<version>/`` (TF Serving's versioned layout; the next
free version unless ``--version`` is given) holding a SavedModel with the signatures of
:mod:`export.module` (``serving_default`` = ``sample``, ``sample_from_z0``, ``decode``,
``encode``, ``log_prior``, ``to_generation``, ``to_representation``), and
``exports/beta_h_decoupled/models.config``, a TF Serving model config pointing at it.

Only what serving needs is saved: the encoder, decoder, prior and likelihood
variables, not the optimizers or the FactorVAE discriminator. The version is written
into a hidden temporary directory next to it and renamed into place only when complete
(and checked), so TF Serving, which polls the base directory, never sees half a
version. ``--check`` (on by default) reloads the SavedModel in a fresh process
(``python -m export.check_saved_model``), runs every signature and compares it with the
in-memory model; the export fails, leaving no version behind, if anything differs.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import json  # noqa: E402
import re  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from absl import app, flags, logging  # noqa: E402

from tf_dpvae import checkpoint_files, precision  # noqa: E402
from tf_dpvae.config import CONFIG_FILENAME, ModelConfig  # noqa: E402

MODELS_CONFIG = "models.config"
_MODELS_CONFIG_HEADER = "# Written by `python -m export.saved_model`."
_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

# Inputs of the reference run (also what the fresh-process check feeds).
CHECK_NUM_SAMPLES = 6
CHECK_SEED = 1234
CHECK_BATCH = 5
# A staging directory untouched this long belongs to an export that was killed.
STALE_STAGING_S = 6 * 3600
_STAGING = re.compile(r"^\.export-\d+-(?:(\d+)-)?")


class ExportError(ValueError):
    """A user error (bad flag, missing model, existing version) or a failed check."""


def _say(message):
    print(f"export: {message}", flush=True)


# ---------------------------------------------------------------------- paths
def find_checkpoint(model_dir):
    """The newest checkpoint prefix in ``model_dir`` (its ``ckpt-N.index`` files).

    Read without TensorFlow so that a bad ``--model_dir`` is reported at once; the
    restore falls back past unreadable checkpoints
    (:func:`tf_dpvae.checkpoints.restore_newest_valid`).
    """
    present = checkpoint_files.on_disk(model_dir)
    if not present:
        raise ExportError(
            f"--model_dir={model_dir}: no checkpoint there (has training saved one yet? "
            "`python -m trainers.fit` writes ckpt-N at --checkpoint_every and at the end)")
    return present[0]


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_staging(export_base, max_age_s=STALE_STAGING_S):
    """Remove the ``.export-<version>-<pid>-*`` staging directories of exports that
    were killed (their process is gone; without a pid in the name: older than
    ``max_age_s``); returns their paths."""
    removed = []
    if not os.path.isdir(export_base):
        return removed
    now = time.time()
    for name in os.listdir(export_base):
        path = os.path.join(export_base, name)
        match = _STAGING.match(name)
        if not match or not os.path.isdir(path):
            continue
        pid = match.group(1)
        stale = (not _alive(int(pid)) if pid
                 else now - os.path.getmtime(path) > max_age_s)
        if stale:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def existing_versions(export_base):
    """Sorted version numbers already under ``export_base``."""
    if not os.path.isdir(export_base):
        return []
    return sorted(int(name) for name in os.listdir(export_base)
                  if name.isdigit() and os.path.isdir(os.path.join(export_base, name)))


def next_version(export_base):
    """One more than the largest existing version, 1 for an empty base."""
    versions = existing_versions(export_base)
    return versions[-1] + 1 if versions else 1


def validate(model_dir, export_base, version=None, overwrite=False, model_name=None):
    """Everything checkable before TensorFlow loads; returns (config, version, name).

    Raises ExportError naming the flag at fault.
    """
    if not model_dir:
        raise ExportError("--model_dir: required (the training directory of the model)")
    if not export_base:
        raise ExportError("--export_base: required (where the versioned SavedModels go)")
    if not os.path.isdir(model_dir):
        raise ExportError(f"--model_dir={model_dir}: no such directory")
    if not os.path.exists(os.path.join(model_dir, CONFIG_FILENAME)):
        raise ExportError(
            f"--model_dir={model_dir}: no {CONFIG_FILENAME} there, so no trained model; "
            "train one with `python -m trainers.fit --model_dir=...` first")
    try:
        config = ModelConfig.load(model_dir)
    except (ValueError, TypeError) as error:
        raise ExportError(f"--model_dir={model_dir}: unreadable {CONFIG_FILENAME} "
                          f"({error})") from error
    find_checkpoint(model_dir)
    if os.path.exists(export_base) and not os.path.isdir(export_base):
        raise ExportError(f"--export_base={export_base}: exists and is not a directory")
    if version is None:
        version = next_version(export_base)
    elif version < 0:
        raise ExportError(f"--version={version}: TF Serving versions are integers >= 0")
    target = os.path.join(export_base, str(version))
    if os.path.exists(target) and not overwrite:
        raise ExportError(
            f"--version={version}: {target} already exists; pass --overwrite to replace "
            "it, or leave --version out to write the next free version "
            f"({next_version(export_base)})")
    name = model_name or os.path.basename(os.path.normpath(os.path.abspath(model_dir)))
    if not _MODEL_NAME.match(name):
        raise ExportError(f"--model_name={name!r}: use letters, digits, '_', '-' and '.' "
                          "(it becomes part of the serving URL)")
    return config, version, name


# ---------------------------------------------------------------------- reference
def reference_inputs(config, base_dim=None):
    """Fixed inputs for every signature (numpy), the same in every process (``base_dim``:
    the width of z0 when the prior's base space is not L wide)."""
    import numpy as np
    rng = np.random.default_rng(0)
    latent = config.latent_dim
    base = base_dim or latent
    shape = (CHECK_BATCH,) + tuple(config.input_shape)
    if config.is_points:
        x = rng.normal(size=shape).astype(np.float32)
    else:
        x = rng.uniform(size=shape).astype(np.float32)
    z = (1.5 * rng.normal(size=(CHECK_BATCH, latent))).astype(np.float32)
    z0 = rng.normal(size=(CHECK_BATCH, base)).astype(np.float32)
    sample = {"num_samples": np.int32(CHECK_NUM_SAMPLES), "seed": np.int64(CHECK_SEED)}
    return {
        "serving_default": sample, "sample": dict(sample),
        "sample_from_z0": {"z0": z0}, "decode": {"z": z}, "encode": {"x": x},
        "log_prior": {"z": z}, "to_generation": {"z": z}, "to_representation": {"z0": z0},
    }


def keras_outputs(model, inputs):
    """What the in-memory Keras model computes for ``inputs``, through its own API."""
    import tensorflow as tf

    from export.module import log_det_of

    def arrays(values):
        return {k: v.numpy() for k, v in values.items()}

    prior = model.prior
    n, seed = int(inputs["sample"]["num_samples"]), int(inputs["sample"]["seed"])
    x, z = model.generate(n, seed=seed, return_latents=True)
    if hasattr(prior, "draw"):      # a post-hoc prior: its own (z, z0)
        z_drawn, z0 = prior.draw(n, seed=seed)
        tf.debugging.assert_near(z_drawn, z)
    else:   # DpVAE.generate draws z0 = stateless_normal([n, L], seed=[seed, 0]).
        z0 = tf.random.stateless_normal([n, model.config.latent_dim], seed=[seed, 0])
    sample = arrays({"x": x, "z": z, "z0": z0})

    z0 = tf.constant(inputs["sample_from_z0"]["z0"])
    z_of_z0 = prior.to_representation(z0)
    z = tf.constant(inputs["decode"]["z"])
    mean, log_var = model.encode(tf.constant(inputs["encode"]["x"]))
    log_det = log_det_of(prior, z)
    return {
        "serving_default": sample, "sample": dict(sample),
        "sample_from_z0": arrays({"x": model.decode_mean(z_of_z0), "z": z_of_z0,
                                  "z0": z0}),
        "decode": arrays({"x": model.decode_mean(z)}),
        "encode": arrays({"mean": mean, "log_var": log_var,
                          "z0": prior.to_generation(mean)}),
        "log_prior": arrays({"log_prob": prior.log_prob(z), "log_det": log_det}),
        "to_generation": arrays({"z0": prior.to_generation(z)}),
        "to_representation": arrays({"z": prior.to_representation(
            tf.constant(inputs["to_representation"]["z0"]))}),
    }


def graph_outputs(signatures, inputs):
    """The in-memory signatures' outputs (the very graphs that are saved)."""
    return {name: {k: v.numpy() for k, v in fn(**inputs[name]).items()}
            for name, fn in signatures.items()}


def write_reference(path, inputs, keras, graph):
    """One .npz: ``<signature>/<input|keras|graph>/<tensor>``."""
    import numpy as np
    arrays = {}
    for kind, values in (("input", inputs), ("keras", keras), ("graph", graph)):
        for signature, tensors in values.items():
            for key, value in tensors.items():
                arrays[f"{signature}/{kind}/{key}"] = np.asarray(value)
    np.savez(path, **arrays)


# ---------------------------------------------------------------------- writing
def models_config_text(name, export_base):
    base = os.path.abspath(export_base)
    return f"""{_MODELS_CONFIG_HEADER}
# TF Serving model config: tensorflow_model_server --model_config_file=THIS_FILE
# (with docker, mount {base} at the same path: -v {base}:{base}).
# TF Serving loads the newest numeric version under base_path and picks up new ones
# as they appear; add  model_version_policy {{ all {{}} }}  to serve every version.
model_config_list {{
  config {{
    name: "{name}"
    base_path: "{base}"
    model_platform: "tensorflow"
  }}
}}
"""


def write_models_config(export_base, name):
    """``export_base/models.config``; a hand-edited one (without our header) is kept."""
    path = os.path.join(export_base, MODELS_CONFIG)
    if os.path.exists(path):
        with open(path) as f:
            if not f.readline().startswith(_MODELS_CONFIG_HEADER):
                _say(f"kept {path} (edited by hand; not ours to overwrite)")
                return path
    with open(path + ".tmp", "w") as f:
        f.write(models_config_text(name, export_base))
    os.replace(path + ".tmp", path)
    return path


def run_check(saved_model_dir, reference_path, atol=1e-5):
    """``python -m export.check_saved_model`` in a fresh process; ExportError on failure.
    ``atol``: the largest difference from the eager Keras model
    (:func:`tf_dpvae.precision.export_tolerance` of the model's precision)."""
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [repo, env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-m", "export.check_saved_model",
         f"--saved_model_dir={os.path.abspath(saved_model_dir)}",
         f"--reference={os.path.abspath(reference_path)}", f"--atol={atol}"],
        cwd=repo, env=env, capture_output=True, text=True)
    report = [line for line in result.stdout.splitlines() if line.startswith("check:")]
    for line in report:
        print(f"  {line}", flush=True)
    if result.returncode != 0:
        details = "\n".join(report) or (result.stdout + result.stderr)[-3000:]
        raise ExportError(f"--check: the reloaded SavedModel does not reproduce the model "
                          f"(exit code {result.returncode}); nothing was exported.\n"
                          f"{details}")


def export(model_dir, export_base, version=None, overwrite=False, check=True,
           model_name=None, max_samples=None, posthoc_prior=None):
    """Export the model in ``model_dir`` to ``export_base/<version>``; returns that path.
    With ``posthoc_prior`` (a kind fitted by ``trainers.fit_prior``) the model is served
    with that prior in place of its own.

    Raises ExportError for user errors and failed checks; on any failure no version
    directory is left behind (an existing one replaced with ``overwrite`` survives).
    """
    config, version, name = validate(model_dir, export_base, version, overwrite,
                                     model_name)
    started = time.time()
    _say(f"restoring {config.regularizer} / {config.prior} prior model "
         f"({config.dataset}, L={config.latent_dim}) from {model_dir}")
    import tensorflow as tf
    from export.module import DEFAULT_MAX_SAMPLES, ServingModule
    from tf_dpvae.training import restore_model
    try:
        model = restore_model(model_dir)
    except (ValueError, FileNotFoundError, AssertionError, tf.errors.OpError) as error:
        raise ExportError(f"--model_dir={model_dir}: could not restore the model "
                          f"({error})") from error
    if posthoc_prior:
        from tf_dpvae import posthoc
        try:
            posthoc.attach(model, posthoc.load_for_model(model, model_dir, posthoc_prior))
        except (ValueError, FileNotFoundError) as error:
            raise ExportError(str(error)) from None
        _say(f"serving the post-hoc prior {posthoc_prior!r} "
             f"({posthoc.directory(model_dir, posthoc_prior)})")
    module = ServingModule(model, max_samples or DEFAULT_MAX_SAMPLES)
    _say("tracing signatures")
    signatures = module.signatures()

    try:
        os.makedirs(export_base, exist_ok=True)
        for path in remove_stale_staging(export_base):
            _say(f"removed {path} (left by an export that was killed)")
        staging = tempfile.mkdtemp(prefix=f".export-{version}-{os.getpid()}-",
                                   dir=export_base)
    except OSError as error:
        raise ExportError(f"--export_base={export_base}: cannot write there "
                          f"({error.strerror or error})") from None
    target = os.path.join(export_base, str(version))
    # The staging directory is not numeric: TF Serving ignores it while it is written.
    try:
        saved = os.path.join(staging, "saved_model")
        _say(f"writing SavedModel version {version}")
        module.archive().write_out(saved, verbose=False)
        extra = os.path.join(saved, "assets.extra")
        os.makedirs(extra, exist_ok=True)
        shutil.copy(os.path.join(model_dir, CONFIG_FILENAME), extra)
        with open(os.path.join(extra, "export.json"), "w") as f:
            json.dump({"model_dir": os.path.abspath(model_dir),
                       "checkpoint": os.path.abspath(model.restored_from),
                       "step": int(model.optimizer.iterations.numpy()),
                       "signatures": sorted(signatures),
                       "max_samples": module.max_samples,
                       "posthoc_prior": posthoc_prior,
                       "prior_is_bijection": bool(getattr(model.prior, "is_bijection",
                                                          True)),
                       "tensorflow": tf.__version__}, f, indent=2)
        if check:
            _say("checking: reloading in a fresh process, running every signature")
            inputs = reference_inputs(config, getattr(model.prior, "base_dim", None))
            reference = os.path.join(staging, "reference.npz")
            write_reference(reference, inputs, keras_outputs(model, inputs),
                            graph_outputs(signatures, inputs))
            run_check(saved, reference, precision.export_tolerance(config.precision))
        _publish(saved, target, staging, overwrite)
    except (OSError, tf.errors.OpError) as error:
        text = (getattr(error, "message", None) or str(error)).strip().splitlines()
        raise ExportError(f"--export_base={export_base}: writing the SavedModel failed "
                          f"({type(error).__name__}: {text[0] if text else ''}); "
                          "nothing was exported") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    config_path = write_models_config(export_base, name)
    _say(f"wrote {target} (signatures: {', '.join(sorted(signatures))}) "
         f"in {time.time() - started:.0f}s")
    _say(f"TF Serving model config: {config_path} (model name {name!r})")
    return target


def _publish(saved, target, staging, overwrite):
    """Move the finished SavedModel to ``target`` (replacing an existing version)."""
    old = None
    if os.path.exists(target):
        if not overwrite:   # another export took this version meanwhile
            raise ExportError(f"{target} appeared while exporting; nothing was "
                              "written (rerun, or pass --overwrite)")
        old = os.path.join(staging, "replaced")
        os.rename(target, old)
    try:
        os.rename(saved, target)
    except OSError:
        if old is not None:
            os.rename(old, target)
        raise


# ---------------------------------------------------------------------- command line
FLAGS = flags.FLAGS


def define_flags():
    flags.DEFINE_string("model_dir", None, "Training directory of the model to export "
                        "(config.json + checkpoints, as written by trainers.fit).")
    flags.DEFINE_string("export_base", None, "Base directory of the versioned export "
                        "(TF Serving's --model_base_path); the SavedModel goes to "
                        "EXPORT_BASE/<version>/.")
    flags.DEFINE_integer("version", None, "Version number to write (default: the next "
                         "free one).")
    flags.DEFINE_boolean("overwrite", False, "Replace an existing version directory.")
    flags.DEFINE_boolean("check", True, "Reload the export in a fresh process, run every "
                         "signature and compare with the in-memory model.")
    flags.DEFINE_string("model_name", None, "Model name in models.config and the serving "
                        "URL (default: the basename of --model_dir).")
    flags.DEFINE_integer("max_samples", 10_000, "Largest num_samples the sample "
                         "signature accepts per request.", lower_bound=1)
    flags.DEFINE_string("posthoc_prior", None, "Serve the post-hoc prior of this kind "
                        "(gmm, flow or two_stage; fitted by trainers.fit_prior) in place "
                        "of the model's own.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # TF's INFO chatter while saving
    try:
        export(FLAGS.model_dir, FLAGS.export_base, FLAGS.version, FLAGS.overwrite,
               FLAGS.check, FLAGS.model_name, FLAGS.max_samples, FLAGS.posthoc_prior)
    except ExportError as error:
        print(f"export.saved_model: error: {error}", file=sys.stderr, flush=True)
        sys.exit(2)


if __name__ == "__main__":
    define_flags()
    app.run(main)
